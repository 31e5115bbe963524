"""Cost of batch signatures: the agent's sign and the ingest's registry check, per batch.

Run: ``.venv/bin/python bench/signatures.py``. Prints the figures and writes them to
``bench/results/signatures.json``.

- sign: ``BatchSigner.sign`` on a batch of 500 readings (canonical message + Ed25519).
- check: ``Gatekeeper.check`` on the same batch against a registry file (registry lookup
  with the change check, canonical message, Ed25519 verify), as the ingest does per batch.
Both are given as batches/s and readings/s on one core.
"""

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.signer import BatchSigner  # noqa: E402
from contract.signing import load_private_key  # noqa: E402
from contract.wire import Batch, ClockQuality, Reading  # noqa: E402
from ingest.devices import BrokerAddress, add_gateway  # noqa: E402
from ingest.gatekeeper import Gatekeeper  # noqa: E402
from ingest.registry import Registry  # noqa: E402

READINGS = 500
ROUNDS = 300


def _batch() -> Batch:
    now = time.time_ns()
    return Batch(
        gateway="gw-1",
        boot="b",
        batch="bench",
        sent=now,
        readings=[
            Reading(
                sensor=f"soil-{i % 20}",
                field="north",
                kind="soil",
                ts=now - i * 1_000_000,
                clock=ClockQuality.SYNCED,
                seq=i,
                values={"moisture_pct": 20.0 + i / 7, "temp_c": 11.5, "ec_us_cm": 1200.0 + i},
            )
            for i in range(READINGS)
        ],
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.sqlite"
        with Registry(path) as reg:
            add_gateway(reg, "p1", "gw-1", Path(tmp) / "bundle", broker=BrokerAddress())
        signer = BatchSigner("p1", load_private_key(Path(tmp) / "bundle" / "signing.key"))
        batch = _batch()
        started = time.perf_counter()
        for _ in range(ROUNDS):
            signed = signer.sign(batch)
        sign_s = (time.perf_counter() - started) / ROUNDS
        gate = Gatekeeper(Registry(path, create=False))
        started = time.perf_counter()
        for _ in range(ROUNDS):
            gate.check("p1", signed)
        check_s = (time.perf_counter() - started) / ROUNDS
        gate.close()
    result = {
        "machine": platform.platform(),
        "readings_per_batch": READINGS,
        "sign_ms_per_batch": round(sign_s * 1000, 3),
        "sign_readings_per_s": round(READINGS / sign_s),
        "check_ms_per_batch": round(check_s * 1000, 3),
        "check_readings_per_s": round(READINGS / check_s),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "signatures.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
