"""One way to make an MQTT client, for agent and ingest alike.

MQTT v5 always (v3.1.1 acks publishes the ACL denied as if they had succeeded), the
VERSION2 callback API, credentials and TLS from :class:`~contract.settings.MqttSettings`,
a persistent session when asked for, and automatic reconnects with backoff.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contract.settings import ConfigError, MqttSettings, read_secret

log = logging.getLogger(__name__)


class BrokerUnreachable(ConnectionError):
    """The broker could not be reached or refused us; the message says which."""


class TakeoverWatch:
    """Notices a connection the broker keeps closing soon after it opens.

    Mosquitto closes the older of two connections with one client id without a DISCONNECT
    packet (paho reports "Unspecified error"), so two processes with one client id, or
    with one broker user under ``use_username_as_clientid``, knock each other off every
    second or so. :meth:`lost` is True, once per :attr:`WINDOW_S`, when :attr:`TIMES`
    connections in that window each lasted under :attr:`SHORT_S`: the caller then says
    what is likely going on.
    """

    SHORT_S = 10.0
    WINDOW_S = 120.0
    TIMES = 3

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._since: float | None = None
        self._short: list[float] = []
        self._said = float("-inf")

    def connected(self) -> None:
        self._since = self._clock()

    def lost(self) -> bool:
        now = self._clock()
        if self._since is not None and now - self._since < self.SHORT_S:
            self._short.append(now)
        self._since = None
        self._short = [t for t in self._short if now - t < self.WINDOW_S]
        if len(self._short) >= self.TIMES and now - self._said >= self.WINDOW_S:
            self._said = now
            return True
        return False

    def recent(self) -> bool:
        """:meth:`lost` said so within the last :attr:`WINDOW_S`."""
        return self._clock() - self._said < self.WINDOW_S

    def hint(self, client_id: str, who: str) -> str:
        """The message for :meth:`lost`; ``who`` names the other likely users of the id."""
        return (
            f"the broker closed the connection {len(self._short)} times in "
            f"{self.WINDOW_S:.0f} s, each time within {self.SHORT_S:.0f} s of connecting: "
            f"another client probably uses client id {client_id!r} ({who}), or the same "
            "broker user while the broker sets use_username_as_clientid; give each its own "
            "(docs/security.md)"
        )


def make_client(
    settings: MqttSettings,
    client_id: str,
    *,
    manual_ack: bool = False,
) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.username:
        password = None
        if settings.password_file:
            password = read_secret(settings.password_file, "mqtt.password_file").get_secret_value()
        client.username_pw_set(settings.username, password)
    if settings.tls:
        # Imported here: OpenSSL costs a gateway without TLS ~4 MiB of RSS (agent/__main__.py).
        import ssl

        try:
            client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.cert_file) if settings.cert_file else None,
                keyfile=str(settings.key_file) if settings.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (OSError, ssl.SSLError) as err:
            raise ConfigError("mqtt", [("mqtt.ca_file", f"cannot load TLS files: {err}")]) from None
        client.tls_insecure_set(False)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def connect_properties(session_expiry_s: int = 0, receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


def connect_async(
    client: mqtt.Client,
    settings: MqttSettings,
    *,
    clean_start: bool,
    properties: Properties | None = None,
) -> None:
    """Start connecting in the background; paho keeps retrying while the broker is down."""
    client.connect_async(
        settings.host,
        settings.port,
        keepalive=settings.keepalive,
        clean_start=clean_start,
        properties=properties,
    )


def reason_text(reason_code: Any) -> str:
    return str(getattr(reason_code, "getName", lambda: reason_code)())
