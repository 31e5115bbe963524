"""MQTT topic names.

``farmtel/v1/{plantation}/{gateway}/{telemetry|receipt|status}``. The plantation in a topic
is the only plantation ingest believes; payloads do not carry one.
"""

from typing import Literal, NamedTuple

from contract.ids import check_ident

TOPIC_ROOT = "farmtel/v1"
INGEST_SHARE_GROUP = "farmtel-ingest"

Channel = Literal["telemetry", "receipt", "status", "alerts"]
_CHANNELS = ("telemetry", "receipt", "status", "alerts")


class TopicParts(NamedTuple):
    plantation: str
    gateway: str
    channel: str


def _topic(plantation: str, gateway: str, channel: Channel) -> str:
    check_ident(plantation, "plantation id")
    check_ident(gateway, "gateway id")
    return f"{TOPIC_ROOT}/{plantation}/{gateway}/{channel}"


def telemetry_topic(plantation: str, gateway: str) -> str:
    return _topic(plantation, gateway, "telemetry")


def receipt_topic(plantation: str, gateway: str) -> str:
    return _topic(plantation, gateway, "receipt")


def status_topic(plantation: str, gateway: str) -> str:
    return _topic(plantation, gateway, "status")


def alerts_topic(plantation: str, gateway: str) -> str:
    return _topic(plantation, gateway, "alerts")


def telemetry_subscription(group: str = INGEST_SHARE_GROUP) -> str:
    """The shared subscription through which N ingest processes split all telemetry."""
    return f"$share/{group}/{TOPIC_ROOT}/+/+/telemetry"


SEQ_SHARE_ROOT = "farmtel/ingest/v1"
"""Where the ingests of a share group tell each other which seq they stored (ingest only)."""


def seq_share_prefix(group: str) -> str:
    """What every seq bookkeeping topic of ``group`` starts with."""
    return f"{SEQ_SHARE_ROOT}/{group}/seq/"


def seq_share_topic(group: str, plantation: str, gateway: str) -> str:
    """The retained seq bookkeeping of one gateway, as the ingests of ``group`` know it."""
    return f"{seq_share_prefix(group)}{plantation}/{gateway}"


def seq_share_subscription(group: str = INGEST_SHARE_GROUP) -> str:
    return f"{seq_share_prefix(group)}+/+"


def parse_seq_share_topic(group: str, topic: str) -> tuple[str, str]:
    """(plantation, gateway) of a :func:`seq_share_topic` of ``group``; raise ``ValueError``
    naming what is wrong."""
    prefix = seq_share_prefix(group)
    if not topic.startswith(prefix):
        raise ValueError(f"topic {topic!r} does not start with {prefix!r}")
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 2:
        raise ValueError(f"topic {topic!r} is not {prefix}<plantation>/<gateway>")
    return (
        check_ident(parts[0], "plantation id in topic"),
        check_ident(parts[1], "gateway id in topic"),
    )


def parse_topic(topic: str) -> TopicParts:
    """Split a farmtel topic; raise ``ValueError`` naming what is wrong."""
    prefix = TOPIC_ROOT + "/"
    if not topic.startswith(prefix):
        raise ValueError(f"topic {topic!r} does not start with {prefix!r}")
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 3 or parts[2] not in _CHANNELS:
        raise ValueError(
            f"topic {topic!r} is not {prefix}<plantation>/<gateway>/<{'|'.join(_CHANNELS)}>"
        )
    plantation = check_ident(parts[0], "plantation id in topic")
    gateway = check_ident(parts[1], "gateway id in topic")
    return TopicParts(plantation, gateway, parts[2])
