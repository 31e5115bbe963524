"""Config loading shared by the gateway and ingest configs.

TOML file -> ``FARMTEL_...`` environment overrides -> pydantic validation. Every problem is
reported with its key path and what is allowed, all at once, so an installer fixes a file
in one pass.

Environment overrides: ``FARMTEL_MQTT__PORT=1884`` sets ``[mqtt] port``; ``__`` separates
levels, a number picks a list element (``FARMTEL_SENSORS__0__PORT=/dev/ttyUSB1``). Values
are read as TOML values when they parse as one (``1884``, ``true``, ``[1, 2]``), else as
strings.
"""

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from contract.ids import IDENT_PATTERN, IDENT_RULE

ENV_PREFIX = "FARMTEL_"

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConfigError(Exception):
    """A config could not be loaded. ``problems`` holds ``(key, message)`` pairs."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]):
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {len(self.problems)} problem(s)"]
        lines += [f"  {key}: {msg}" for key, msg in self.problems]
        super().__init__("\n".join(lines))

    def naming_env(self, origins: Mapping[str, str]) -> "ConfigError":
        """This error with each problem at a key set by the environment (``origins``: key ->
        variable, from :func:`apply_env`) saying so, so that nobody searches the file for
        a value that came from ``/etc/farmtel/agent.env``."""
        problems = []
        for key, msg in self.problems:
            name = next(
                (origins[k] for k in _key_and_parents(key) if k in origins),
                None,
            )
            problems.append((key, f"{msg} (set by environment variable {name})" if name else msg))
        return ConfigError(self.source, problems)


def _key_and_parents(key: str) -> list[str]:
    """``a.b[0].c`` and the keys holding it: ``a.b[0]``, ``a.b``, ``a``."""
    keys = [key]
    while True:
        cut = max(key.rfind("."), key.rfind("["))
        if cut <= 0:
            return keys
        key = key[:cut]
        keys.append(key)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), [("file", "does not exist")]) from None
    except PermissionError:
        raise ConfigError(str(path), [("file", "cannot be read (permission denied)")]) from None
    except IsADirectoryError:
        raise ConfigError(str(path), [("file", "is a directory, not a TOML file")]) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), [("toml", f"not valid TOML: {err}")]) from None


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_env(
    raw: dict[str, Any],
    sections: Sequence[str],
    environ: Mapping[str, str] | None = None,
    origins: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Apply ``FARMTEL_A__B=value`` overrides to ``raw`` (in place) and return it.

    Only variables whose first level is one of ``sections`` apply, so one environment can
    serve both the agent and the ingest on a machine; inside a section an unknown key is
    still an error. ``origins``, if given, gets each key set (as problems name it, e.g.
    ``sensors[0].port``) and the variable that set it (:meth:`ConfigError.naming_env`).
    """
    env = os.environ if environ is None else environ
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if len(path) < 2 or not all(path) or path[0] not in sections:
            continue
        if origins is not None:
            origins[format_loc([int(k) if k.isdigit() else k for k in path])] = name
        node: Any = raw
        for i, key in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise ConfigError(
                        f"environment {name}", [(key, "is not an index of the list in the config")]
                    )
                if last:
                    node[int(key)] = _parse_env_value(env[name])
                else:
                    node = node[int(key)]
            elif isinstance(node, dict):
                if last:
                    node[key] = _parse_env_value(env[name])
                else:
                    node = node.setdefault(key, {})
            else:
                raise ConfigError(f"environment {name}", [(key, "is not a table in the config")])
    return raw


def _allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str] | None:
    """The field names allowed at ``loc`` (the parent of an unknown key)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def problems_of(
    err: ValidationError, model: type[BaseModel], prefix: Sequence[str | int] = ()
) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            msg = "unknown key" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
        elif e["type"] == "missing":
            msg = "is required but missing"
        elif (
            e["type"] == "string_pattern_mismatch"
            and (e.get("ctx") or {}).get("pattern") == IDENT_PATTERN
        ):
            msg = f"{e['input']!r} is not a valid id: {IDENT_RULE} ({IDENT_PATTERN})"
        else:
            msg = e["msg"]
            if e["type"] not in ("value_error", "assertion_error"):
                msg += f" (got {e['input']!r})" if not isinstance(e["input"], dict) else ""
            msg = msg.removeprefix("Value error, ")
        problems.append((format_loc([*prefix, *loc]), msg))
    return problems


def validate(model: type[M], raw: Any, source: str, prefix: Sequence[str | int] = ()) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(source, problems_of(err, model, prefix)) from None


def read_secret(path: Path, what: str) -> SecretStr:
    """Read a secret from a file that only its owner can read (mode 0600 or stricter)."""
    try:
        st = path.stat()
    except OSError as err:
        raise ConfigError(
            str(path), [(what, f"secret file cannot be read: {err.strerror}")]
        ) from None
    if st.st_mode & 0o077:
        raise ConfigError(
            str(path),
            [(what, f"secret file has mode {st.st_mode & 0o777:o}; run: chmod 600 {path}")],
        )
    try:
        return SecretStr(path.read_text(encoding="utf-8").strip())
    except PermissionError:
        raise ConfigError(
            str(path),
            [
                (
                    what,
                    f"secret file cannot be read by this process (uid {os.geteuid()}; the file "
                    f"is owned by uid {st.st_uid}, mode {st.st_mode & 0o777:o}): make the user "
                    "the service runs as its owner, or with systemd's DynamicUser=yes pass it "
                    "with LoadCredential= (docs/security.md)",
                )
            ],
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
        raise ConfigError(str(path), [(what, f"secret file cannot be read: {reason}")]) from None


def make_state_dir(path: Path, key: str) -> None:
    """Create the state folder ``path`` (config key ``key``) if needed and check this process
    may write in it; raise ConfigError saying what to do if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            str(path), [(key, f"state folder cannot be created: {err.strerror}")]
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        st = path.stat()
        raise ConfigError(
            str(path),
            [
                (
                    key,
                    f"state folder is not writable by this process (uid {os.geteuid()}; it "
                    f"is owned by uid {st.st_uid}, mode {st.st_mode & 0o777:o}): chown it "
                    "to the user the service runs as, or let systemd's StateDirectory= "
                    "create it",
                )
            ],
        )


LogLevel = Annotated[str, Field(pattern=r"^(debug|info|warning|error)$")]


class LogSettings(Strict):
    """Logging goes to stdout as key=value lines (or JSON), for journald and log shippers."""

    level: LogLevel = "info"
    """One of debug, info, warning, error."""
    format: Annotated[str, Field(pattern=r"^(kv|json)$")] = "kv"
    """``kv`` for key=value lines, ``json`` for one JSON object per line."""


class MqttSettings(Strict):
    """How to reach the MQTT broker (MQTT v5 only)."""

    host: str = "localhost"
    """Broker host name or address."""
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    """Broker TCP port (8883 is the usual TLS port)."""
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    """Seconds between pings; a dead broker is noticed within about 1.5 x keepalive."""
    client_id: str | None = None
    """MQTT client id; default farmtel-agent-<plantation>-<gateway> or farmtel-ingest-<hostname>."""
    username: str | None = None
    """Broker user name; none means anonymous (refused by the production broker config)."""
    password_file: Path | None = None
    """File (mode 0600) holding the broker password."""
    tls: bool = False
    """Connect with TLS, checking the broker certificate and host name."""
    ca_file: Path | None = None
    """CA certificate that signed the broker certificate (PEM); system CAs when unset."""
    cert_file: Path | None = None
    """Client certificate (PEM) when the broker asks for one."""
    key_file: Path | None = None
    """Client private key (PEM, mode 0600)."""
