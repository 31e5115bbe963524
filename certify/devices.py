"""The device registry as it goes into a bundle, and the gateways' keys read back from it.

The registry is :meth:`ingest.registry.Registry.export` (format ``farmtel-registry-v1``):
read from the registry file (SQLite, ``[ingest] registry_path``), or from a JSON file that
``farmtel devices export`` printed. The part verify relies on::

    {"plantation": "hlj-001",
     "gateways": [{"gateway": "gw-01",
                   "keys": [{"key_id": "<16 hex>", "public_key": "<base64 of 32 bytes>",
                             "valid_from_ns": ..., "valid_until_ns": ...}], ...}],
     "history": [{"at_ns": ..., "event": "install", ...}]}

Other fields are kept as they are. ``key_id`` must be contract.signing.key_id of the key.
The bundle's ``registry.json`` is that object plus ``calibrations`` (see certify.report).
"""

import base64
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contract import signing


class RegistryError(ValueError):
    """The registry is unusable; the message names the file or entry and what is wrong."""


def load_registry_file(path: Path, plantation: str) -> dict[str, Any]:
    """Read ``--registry``: the registry's SQLite file, or the JSON of ``farmtel devices
    export``; check its shape for ``plantation``. :class:`RegistryError` says what is wrong.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise RegistryError(f"--registry {path}: cannot read it ({err.strerror})") from None
    if raw.startswith(b"SQLite format 3\0"):
        from ingest.registry import Registry
        from ingest.registry import RegistryError as StoreError

        try:
            with Registry(path, create=False) as reg:
                data: Any = reg.export(plantation)
        except StoreError as err:
            raise RegistryError(f"--registry {path}: {err}") from None
        if not data.get("gateways"):
            raise RegistryError(
                f"--registry {path} has no gateway of plantation {plantation!r}; register "
                "them with `farmtel devices add`"
            )
        return dict(data)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise RegistryError(f"--registry {path}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise RegistryError(f"--registry {path}: a JSON object is expected")
    if data.get("plantation", plantation) != plantation:
        raise RegistryError(
            f"--registry {path} is for plantation {data.get('plantation')!r}, not {plantation!r}"
        )
    problems: list[str] = []
    gateway_keys(data, problems)
    if problems:
        raise RegistryError(f"--registry {path}: {problems[0]}")
    return data


def gateway_keys(registry: Any, problems: list[str]) -> dict[str, dict[str, Ed25519PublicKey]]:
    """``gateway -> {key id -> public key}``; each malformed entry adds to ``problems``."""
    out: dict[str, dict[str, Ed25519PublicKey]] = {}
    gateways = registry.get("gateways") if isinstance(registry, dict) else None
    if not isinstance(gateways, list):
        problems.append("registry has no 'gateways' list")
        return out
    for n, gw in enumerate(gateways):
        name = gw.get("gateway", gw.get("id")) if isinstance(gw, dict) else None
        if not isinstance(name, str):
            problems.append(f"registry gateway #{n} has no string 'gateway'")
            continue
        keys = out.setdefault(name, {})
        for k in gw.get("keys") or []:
            if not isinstance(k, dict):
                problems.append(f"registry gateway {name}: a key entry is not an object")
                continue
            try:
                raw = base64.b64decode(str(k.get("public_key", "")), validate=True)
                key = Ed25519PublicKey.from_public_bytes(raw)
            except ValueError:
                problems.append(
                    f"registry gateway {name}: public_key {str(k.get('public_key'))[:60]!r} "
                    "is not base64 of a 32-byte Ed25519 key"
                )
                continue
            kid = signing.key_id(key)
            if k.get("key_id", kid) != kid:
                problems.append(
                    f"registry gateway {name}: key_id {k.get('key_id')!r} is not the id "
                    f"{kid} of its public key"
                )
                continue
            keys[kid] = key
    return out


def public_key_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(signing.public_key_bytes(key)).decode("ascii")
