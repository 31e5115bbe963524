"""Who may write a plantation's data: every batch is checked against the device registry.

A batch is accepted only when

- its gateway is registered under the plantation named by the topic (the plantation is
  never taken from the payload: the batch schema has no such field),
- the gateway is not revoked, and
- its ``sig`` verifies over :func:`contract.signing.batch_message` built with the topic's
  plantation, using a key that may sign new batches now (the current key, or a rotated-out
  one still in its grace period). Because the plantation is part of the signed message, a
  batch replayed on another plantation's topic does not verify there.

When checks apply (``[ingest] require_signatures``):

- ``None`` (default): on when the registry file exists, off (dev mode, everything accepted
  unsigned, one warning at start) when it does not;
- ``true``: always on; the ingest refuses to start without a registry file;
- ``false``: off even when a registry exists (tests and migrations only).

Revocations and rotations made by ``farmtel devices`` in another process take effect on
the next batch: the cached records are dropped whenever the registry file changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from contract.settings import ConfigError
from contract.signing import (
    SignatureError,
    batch_message,
    parse_signature,
    verify,
    wire_batch_message,
)
from contract.wire import Batch, Gap, PlainReading, iso_utc
from ingest.registry import GatewayRecord, Registry, RegistryError

log = logging.getLogger(__name__)


class BatchRefused(ValueError):
    """A batch its gateway may not write; ``kind`` is a short label for counters."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Gatekeeper:
    """Checks batches against a registry; with ``registry=None`` it accepts everything."""

    def __init__(self, registry: Registry | None, clock: Callable[[], int] = time.time_ns):
        self.registry = registry
        self._clock = clock
        self._cache: dict[tuple[str, str], GatewayRecord | None] = {}
        self._version = -1
        self._lock = threading.Lock()
        self.refused: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self.registry is not None

    @classmethod
    def open(cls, path: Path, require: bool | None) -> Gatekeeper:
        """The gatekeeper for ``[ingest] registry_path`` and ``require_signatures``."""
        if require is False:
            log.warning("batch signatures are NOT checked (require_signatures = false)")
            return cls(None)
        if not path.exists():
            if require:
                raise ConfigError(
                    "ingest",
                    [
                        (
                            "ingest.require_signatures",
                            f"is true but the device registry {path} does not exist; register "
                            "gateways with `farmtel devices add --registry ...` or set "
                            "[ingest] registry_path",
                        )
                    ],
                )
            log.warning(
                "no device registry at %s: accepting unsigned batches from any gateway "
                "(dev mode); register gateways with `farmtel devices add`",
                path,
            )
            return cls(None)
        try:
            registry = Registry(path, create=False)
        except RegistryError as err:
            raise ConfigError("ingest", [("ingest.registry_path", str(err))]) from None
        log.info("device registry path=%s; batches must be signed by a registered gateway", path)
        return cls(registry)

    def _record(self, plantation: str, gateway: str) -> GatewayRecord | None:
        assert self.registry is not None
        with self._lock:
            version = self.registry.data_version()
            if version != self._version:
                self._cache.clear()
                self._version = version
            key = (plantation, gateway)
            if key not in self._cache:
                self._cache[key] = self.registry.gateway(plantation, gateway)
            return self._cache[key]

    def gateway(self, plantation: str, gateway: str) -> GatewayRecord | None:
        """The registry record (None when unregistered or when checks are off)."""
        return self._record(plantation, gateway) if self.registry is not None else None

    def not_before_ns(self, plantation: str, gateway: str, fallback: int | None) -> int | None:
        """The gateway's registration time (ns) as the earliest plausible reading time, for
        the clock quarantine; ``fallback`` when checks are off or it is not registered."""
        record = self.gateway(plantation, gateway)
        return record.registered_at_ns if record is not None else fallback

    def check(self, plantation: str, batch: Batch) -> None:
        """Return when ``batch`` may be stored under ``plantation``; else BatchRefused."""
        if self.registry is None:
            return
        self._checked(
            plantation, batch.gateway, batch.sig, lambda: batch_message(plantation, batch)
        )

    def check_wire(
        self,
        plantation: str,
        gateway: str,
        batch_id: str,
        sig: str | None,
        readings: Sequence[PlainReading],
        gaps: Sequence[Gap],
    ) -> None:
        """:meth:`check` for the batch of these parts (readings as the ingest's plain path
        parsed them): the same decision, without building the models."""
        if self.registry is None:
            return
        self._checked(
            plantation,
            gateway,
            sig,
            lambda: wire_batch_message(plantation, gateway, batch_id, readings, gaps),
        )

    def _checked(
        self, plantation: str, gateway: str, sig: str | None, message: Callable[[], bytes]
    ) -> None:
        try:
            self._check(plantation, gateway, sig, message)
        except BatchRefused as err:
            self.refused[err.kind] = self.refused.get(err.kind, 0) + 1
            raise

    def _check(
        self, plantation: str, gateway: str, sig: str | None, message: Callable[[], bytes]
    ) -> None:
        assert self.registry is not None
        record = self._record(plantation, gateway)
        if record is None:
            elsewhere = self.registry.plantations_of(gateway)
            hint = f" (a gateway of that id is registered under {', '.join(elsewhere)})"
            raise BatchRefused(
                "unknown_gateway",
                f"gateway {gateway!r} is not registered for plantation {plantation!r}"
                + (hint if elsewhere else ""),
            )
        now = self._clock()
        if record.revoked_at(now) and record.revoked_at_ns is not None:
            raise BatchRefused(
                "revoked_gateway",
                f"gateway {plantation}/{gateway} was revoked at {iso_utc(record.revoked_at_ns)}",
            )
        keys = record.active_keys(now)
        try:
            verify(keys, sig, message())
        except SignatureError as err:
            kid = _key_id_of(sig)
            if kid is not None and kid not in keys and kid in record.keys:
                raise BatchRefused(
                    "expired_key",
                    f"batch of {plantation}/{gateway} is signed with key {kid}, which "
                    "was rotated out and may no longer sign new batches; install the bundle "
                    "from `farmtel devices rotate` on the gateway",
                ) from None
            raise BatchRefused("bad_signature", f"batch of {plantation}/{gateway}: {err}") from None

    def close(self) -> None:
        if self.registry is not None:
            self.registry.close()


def _key_id_of(sig: str | None) -> str | None:
    """The key id a signature claims, or None when there is no readable one."""
    if not sig:
        return None
    try:
        return parse_signature(sig)[0]
    except SignatureError:
        return None
