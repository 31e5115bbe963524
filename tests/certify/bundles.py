"""Helpers for the certification tests: a small signed history in InfluxDB, its bundle, and
tools to change a bundle in memory (with or without resealing it)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certify.bag import MANIFEST, TAG_FILES, TAGMANIFEST, FolderBundle, MemoryBundle
from certify.orgkey import PUBLIC_KEY_FILE, SEAL_FILE, public_pem, seal_message
from contract import signing
from tests.certify.synth import DAY_NS, START_NS, GatewayPlan

PLANTATION = "cert-p1"


def plans() -> list[GatewayPlan]:
    """Two gateways: one with two lost readings (declared gaps) and a calibration change."""
    return [
        GatewayPlan("gw-01", sensors=3, interval_s=60, lost_seq=(10, 50), cal_switch_at=40),
        GatewayPlan("gw-02", sensors=2, interval_s=30),
    ]


READINGS_PER_GATEWAY = 90
BATCH_SIZE = 25
PERIOD = (START_NS, START_NS + DAY_NS)


@dataclass
class Built:
    root: Path
    org_key: Ed25519PrivateKey
    pub_path: Path

    def memory(self) -> MemoryBundle:
        return MemoryBundle.load(FolderBundle(self.root))


def reseal(files: dict[str, bytes], key: Ed25519PrivateKey) -> dict[str, bytes]:
    """Rebuild the manifests, Payload-Oxum and seal after an edit, as a dishonest exporter
    holding ``key`` would."""
    out = dict(files)
    data = sorted(n for n in out if n.startswith("data/"))
    manifest = "".join(f"{hashlib.sha256(out[n]).hexdigest()}  {n}\n" for n in data).encode()
    oxum = f"{sum(len(out[n]) for n in data)}.{len(data)}"
    out["bag-info.txt"] = re.sub(
        rb"Payload-Oxum: .*\n", f"Payload-Oxum: {oxum}\n".encode(), out["bag-info.txt"]
    )
    out[MANIFEST] = manifest
    out[PUBLIC_KEY_FILE] = public_pem(key.public_key())
    tag = "".join(
        f"{hashlib.sha256(out[n]).hexdigest()}  {n}\n" for n in TAG_FILES if n in out
    ).encode()
    out[TAGMANIFEST] = tag
    out[SEAL_FILE] = (signing.sign(key, seal_message(manifest, tag)) + "\n").encode()
    return out
