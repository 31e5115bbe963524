"""Private Mosquitto and InfluxDB servers for farmtel's demo and tests (not for production).

``Stack(state_dir).start()`` runs both on free 127.0.0.1 ports with config from the repo;
``python -m devstack start|stop|status|env --state DIR`` does the same from a shell.
"""

from devstack.stack import (
    SERVER_NAMES,
    ServerName,
    ServerNotInstalled,
    Stack,
    StackError,
    StackInfo,
    free_port,
    influx_ping,
    mqtt_connack,
)

__all__ = [
    "SERVER_NAMES",
    "ServerName",
    "ServerNotInstalled",
    "Stack",
    "StackError",
    "StackInfo",
    "free_port",
    "influx_ping",
    "mqtt_connack",
]
