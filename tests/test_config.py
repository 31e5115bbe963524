"""Config files: every problem named with its key, env overrides, and `farmtel config check`."""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import load_gateway_config, parse_gateway_config
from contract.settings import ConfigError, make_state_dir, read_secret
from ingest.config import load_ingest_config, parse_ingest_config
from tests.support.procs import REPO, run_cli

GOOD_GATEWAY = """
[gateway]
plantation = "hlj-001"
id = "gw-01"
state_dir = "/tmp/farmtel-test"

[mqtt]
host = "broker.local"

[[sensors]]
id = "soil-1"
field = "north"
driver = "text_line"
port = "/dev/ttyUSB0"
columns = ["moisture_pct", "temp_c"]
"""


def _write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_examples_are_valid() -> None:
    gw = load_gateway_config(REPO / "examples" / "gateway.toml", environ={})
    assert gw.gateway.plantation == "hlj-001"
    assert gw.sensors[0].driver == "text_line"
    ing = load_ingest_config(REPO / "examples" / "ingest.toml", environ={})
    assert ing.influxdb.api == "v1"


def test_misspelt_key_is_named_with_the_allowed_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_GATEWAY.replace('host = "broker.local"', 'hots = "x"'))
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, environ={})
    ((key, msg),) = info.value.problems
    assert key == "mqtt.hots"
    assert "unknown key" in msg and "host" in msg and "port" in msg


def test_misspelt_sensor_key_is_named_with_its_index(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_GATEWAY.replace("columns =", "colums ="))
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, environ={})
    assert any(k == "sensors[0].colums" and "unknown key" in m for k, m in info.value.problems)


def test_bad_identifier_names_the_pattern(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_GATEWAY.replace('id = "gw-01"', 'id = "GW 01"'))
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, environ={})
    ((key, msg),) = info.value.problems
    assert key == "gateway.id"
    assert msg == (
        "'GW 01' is not a valid id: lower-case letters, digits, '_' and '-', at most 63 "
        "characters, starting with a letter or digit (^[a-z0-9][a-z0-9_-]{0,62}$)"
    )


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = (
        GOOD_GATEWAY.replace('id = "gw-01"', 'id = "GW"').replace(
            'driver = "text_line"', 'driver = "nope"'
        )
        + "\n[outbox]\nbatch_size = 0\n"
    )
    with pytest.raises(ConfigError) as info:
        load_gateway_config(_write(tmp_path, text), environ={})
    keys = {k for k, _ in info.value.problems}
    assert {"gateway.id", "outbox.batch_size"} <= keys
    assert any(k.startswith("sensors[0]") and "text_line" in m for k, m in info.value.problems)


def test_duplicate_sensor_ids_are_refused(tmp_path: Path) -> None:
    text = GOOD_GATEWAY + GOOD_GATEWAY[GOOD_GATEWAY.index("[[sensors]]") :]
    with pytest.raises(ConfigError, match="already used by sensors"):
        load_gateway_config(_write(tmp_path, text), environ={})


def test_not_toml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_gateway_config(_write(tmp_path, "[gateway]\nid = \n"), environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_gateway_config(tmp_path / "nope.toml", environ={})


def test_environment_overrides_and_is_validated(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_GATEWAY)
    env = {
        "FARMTEL_MQTT__PORT": "1884",
        "FARMTEL_SENSORS__0__PORT": "/dev/ttyUSB7",
        "FARMTEL_INFLUXDB__URL": "http://elsewhere:8086",  # an ingest key: ignored by the agent
    }
    cfg = load_gateway_config(path, environ=env)
    assert cfg.mqtt.port == 1884
    assert cfg.sensors[0].port == "/dev/ttyUSB7"
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, environ={"FARMTEL_MQTT__PORT": "99999"})
    assert info.value.problems[0][0] == "mqtt.port"
    with pytest.raises(ConfigError, match="unknown key"):
        load_gateway_config(path, environ={"FARMTEL_MQTT__HOTS": "x"})


def test_ingest_config_errors_and_env() -> None:
    cfg = parse_ingest_config({}, "env", environ={"FARMTEL_INFLUXDB__URL": "http://db:8086"})
    assert cfg.influxdb.url == "http://db:8086"
    with pytest.raises(ConfigError) as info:
        parse_ingest_config({"influxdb": {"api": "v3"}}, "x.toml", environ={})
    assert info.value.problems[0][0] == "influxdb.api"


def test_no_sensors_is_an_error() -> None:
    raw = {"gateway": {"plantation": "p", "id": "g"}}
    with pytest.raises(ConfigError, match="no \\[\\[sensors\\]\\]"):
        parse_gateway_config(raw, "x", environ={})


def test_cli_config_check(tmp_path: Path) -> None:
    ok = run_cli(["config", "check", str(_write(tmp_path, GOOD_GATEWAY))])
    assert ok.returncode == 0, ok.stderr
    assert "ok (gateway hlj-001/gw-01, 1 sensor(s))" in ok.stdout
    bad = run_cli(["config", "check", str(_write(tmp_path, GOOD_GATEWAY.replace("host", "hots")))])
    assert bad.returncode == 2
    assert "mqtt.hots: unknown key" in bad.stderr
    ing = run_cli(["config", "check", str(REPO / "examples" / "ingest.toml")])
    assert ing.returncode == 0 and "ingest" in ing.stdout
    unknown = run_cli(["config", "check", str(_write(tmp_path, "[x]\na = 1\n", "x.toml"))])
    assert unknown.returncode == 2 and "--kind" in unknown.stderr


def test_problems_from_the_environment_name_their_variable(tmp_path: Path) -> None:
    """A bad value or unknown key set by FARMTEL_* says so: the file does not hold it."""
    path = _write(tmp_path, GOOD_GATEWAY)
    env = {
        "FARMTEL_MQTT__PORT": "abc",
        "FARMTEL_MQTT__PROT": "1",
        "FARMTEL_SENSORS__0__BAUD": "9600",
    }
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, environ=env)
    problems = dict(info.value.problems)
    assert problems["mqtt.port"].endswith("(set by environment variable FARMTEL_MQTT__PORT)")
    assert problems["mqtt.prot"].startswith("unknown key")
    assert problems["mqtt.prot"].endswith("(set by environment variable FARMTEL_MQTT__PROT)")
    assert problems["sensors[0].baud"].endswith(
        "(set by environment variable FARMTEL_SENSORS__0__BAUD)"
    )
    # A problem in the file itself is not blamed on the environment.
    bad_file = _write(tmp_path, GOOD_GATEWAY.replace("host", "hots"), "bad.toml")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(bad_file, environ={"FARMTEL_MQTT__PORT": "1884"})
    assert dict(info.value.problems)["mqtt.hots"] == (
        "unknown key; allowed keys here: ca_file, cert_file, client_id, host, keepalive, "
        "key_file, password_file, port, tls, username"
    )
    with pytest.raises(ConfigError) as info:
        parse_ingest_config({}, "x.toml", environ={"FARMTEL_INFLUXDB__URL": "nope"})
    assert dict(info.value.problems)["influxdb.url"].endswith(
        "(set by environment variable FARMTEL_INFLUXDB__URL)"
    )


def _as_nobody(call: Callable[[], object]) -> str:
    """Run ``call`` in a child process as uid/gid 65534 (the tests run as root, for whom
    every file is readable); return the ConfigError text it raised, or "no error"."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            call()
            text = "no error"
        except ConfigError as err:
            text = str(err)
        except BaseException as err:  # reported to the parent as text
            text = f"unexpected {type(err).__name__}: {err}"
        os.write(write_end, text.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder others may enter (pytest's tmp_path is 0700, root's)."""
    path = Path(tempfile.mkdtemp(prefix="farmtel-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_secret_the_service_user_cannot_read_is_a_config_error(open_dir: Path) -> None:
    """A root-owned 0600 password file under a DynamicUser=yes unit: a traceback before."""
    secret = open_dir / "farmtel-ingest.password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    text = _as_nobody(lambda: read_secret(secret, "mqtt.password_file"))
    assert "mqtt.password_file: secret file cannot be read by this process (uid 65534" in text
    assert "owned by uid 0, mode 600" in text and "LoadCredential=" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_state_dir_the_service_user_cannot_write_is_a_config_error(open_dir: Path) -> None:
    locked = open_dir / "state"
    locked.mkdir(mode=0o700)
    text = _as_nobody(lambda: make_state_dir(locked, "ingest.state_dir"))
    assert "ingest.state_dir: state folder is not writable by this process (uid 65534" in text
    missing = open_dir / "ro" / "x"
    (open_dir / "ro").mkdir(mode=0o755)
    text = _as_nobody(lambda: make_state_dir(missing, "gateway.state_dir"))
    assert "gateway.state_dir: state folder cannot be created: Permission denied" in text
    mine = open_dir / "mine"
    mine.mkdir()
    os.chown(mine, 65534, 65534)
    assert _as_nobody(lambda: make_state_dir(mine / "sub", "ingest.state_dir")) == "no error"
    assert (mine / "sub").is_dir()
