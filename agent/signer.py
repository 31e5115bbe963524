"""Signs each batch with the gateway's Ed25519 key (``[gateway] signing_key_file``).

The signature covers :func:`contract.signing.batch_message` (plantation, gateway, batch id,
readings and gaps; not the send time), so a resent batch carries the same signature and
the ingest and a certifier can check it against the device registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.config import GatewayConfig
from contract.settings import ConfigError, read_secret
from contract.wire import Batch, Gap, WireReading

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# contract.signing (and so the cryptography library, ~7 MiB of RSS) is imported only when a
# key is configured: an agent without one stays smaller on a 512 MB gateway.


class BatchSigner:
    """Adds ``sig`` to batches; with no key it returns them unchanged (dev mode)."""

    def __init__(self, plantation: str, key: Ed25519PrivateKey | None):
        self.plantation = plantation
        self.key = key
        self.key_id = None
        if key is not None:
            from contract.signing import key_id

            self.key_id = key_id(key.public_key())

    @classmethod
    def from_config(cls, config: GatewayConfig) -> BatchSigner:
        """Load the key; ConfigError naming ``gateway.signing_key_file`` when it is missing,
        readable by others (mode must be 0600) or not an Ed25519 PEM key."""
        path = config.gateway.signing_key_file
        if path is None:
            return cls(config.gateway.plantation, None)
        read_secret(path, "gateway.signing_key_file")  # existence and mode 0600
        from contract.signing import load_private_key

        try:
            key = load_private_key(path)
        except ValueError as err:
            raise ConfigError(str(path), [("gateway.signing_key_file", str(err))]) from None
        return cls(config.gateway.plantation, key)

    def sign(self, batch: Batch) -> Batch:
        if self.key is None:
            return batch
        from contract.signing import batch_message, sign

        sig = sign(self.key, batch_message(self.plantation, batch))
        return batch.model_copy(update={"sig": sig})

    def signature(
        self, gateway: str, batch_id: str, readings: Sequence[WireReading], gaps: Sequence[Gap]
    ) -> str | None:
        """The ``sig`` of the batch of these parts (readings in their wire form), the same
        :meth:`sign` puts in; None without a key."""
        if self.key is None:
            return None
        from contract.signing import sign, wire_batch_message

        return sign(
            self.key, wire_batch_message(self.plantation, gateway, batch_id, readings, gaps)
        )
