"""The contract between farmtel's agent and ingest.

Everything both sides must agree on lives here and only here: identifiers, the batch
envelope, readings, gaps, receipts and topic names. Bump :data:`SCHEMA_VERSION` for any
change an older peer could misread.
"""

from contract.ids import IDENT_PATTERN, InvalidIdentifier, check_ident
from contract.topics import (
    INGEST_SHARE_GROUP,
    TOPIC_ROOT,
    TopicParts,
    alerts_topic,
    parse_topic,
    receipt_topic,
    status_topic,
    telemetry_subscription,
    telemetry_topic,
)
from contract.wire import (
    MAX_BATCH_BYTES,
    SCHEMA_VERSION,
    Batch,
    ClockQuality,
    Gap,
    PayloadError,
    Reading,
    Receipt,
    ReceiptStatus,
    decode_batch,
    decode_receipt,
    encode_batch,
    encode_receipt,
)

__all__ = [
    "IDENT_PATTERN",
    "INGEST_SHARE_GROUP",
    "MAX_BATCH_BYTES",
    "SCHEMA_VERSION",
    "TOPIC_ROOT",
    "Batch",
    "ClockQuality",
    "Gap",
    "InvalidIdentifier",
    "PayloadError",
    "Reading",
    "Receipt",
    "ReceiptStatus",
    "TopicParts",
    "alerts_topic",
    "check_ident",
    "decode_batch",
    "decode_receipt",
    "encode_batch",
    "encode_receipt",
    "parse_topic",
    "receipt_topic",
    "status_topic",
    "telemetry_subscription",
    "telemetry_topic",
]
