#!/usr/bin/env bash
# The whole pipeline on local defaults, for about 30 seconds:
#   three simulated sensors on pseudo-terminals -> farmtel agent -> Mosquitto -> farmtel ingest
#   -> InfluxDB -> farmtel query latest / history.
# Installs what is missing (scripts/setup.sh), starts a private Mosquitto and InfluxDB on free
# loopback ports, and stops everything it started on exit, Ctrl-C included.
# FARMTEL_DEMO_SECONDS changes how long it collects (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

./scripts/setup.sh

PY="$REPO/.venv/bin/python"
FARMTEL="$REPO/.venv/bin/farmtel"
SECONDS_TO_RUN=${FARMTEL_DEMO_SECONDS:-30}
STATE="$REPO/.state/demo"
PLANTATION=demo-farm
rm -rf "$STATE"
mkdir -p "$STATE"

pids=()
cleanup() {
    trap - EXIT INT TERM
    echo "==> stopping the demo"
    # Newest first: the agent and ingest stop before the sensors they read.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
        wait "${pids[$i]}" 2>/dev/null || true
    done
    "$PY" -m devstack stop --state "$STATE/stack" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> starting a private Mosquitto and InfluxDB (state in $STATE/stack)"
eval "$("$PY" -m devstack start --state "$STATE/stack")"

echo "==> starting three simulated sensors on pseudo-terminals (SDI-12, text lines, NMEA 0183)"
"$PY" -m sensors.sdi12.simulator --link "$STATE/tty-soil-north" --address 0 --profile teros12 \
    --seed 1 >"$STATE/sim-soil-north.log" 2>&1 &
pids+=($!)
"$PY" -m sensors.text_line.simulator --link "$STATE/tty-soil-south" --format kv \
    --columns moisture_pct,temp_c,ph --rate 1 --seed 2 >"$STATE/sim-soil-south.log" 2>&1 &
pids+=($!)
"$PY" -m sensors.nmea_weather.simulator --link "$STATE/tty-weather" --rate 0.5 --seed 3 \
    >"$STATE/sim-weather.log" 2>&1 &
pids+=($!)

cat >"$STATE/gateway.toml" <<TOML
[gateway]
plantation = "$PLANTATION"
id = "gw-01"
state_dir = "$STATE/agent"

[status]
interval = 5

[[sensors]]
id = "soil-north"
field = "north-paddy"
driver = "sdi12"
kind = "soil"
port = "$STATE/tty-soil-north"
# A METER TEROS 12 at SDI-12 address 0, measured every 5 s.
address = "0"
profile = "teros12"
interval = 5

[[sensors]]
id = "soil-south"
field = "south-beans"
driver = "text_line"
kind = "soil"
port = "$STATE/tty-soil-south"
format = "kv"

[[sensors]]
id = "weather"
field = "north-paddy"
driver = "nmea_weather"
kind = "weather"
port = "$STATE/tty-weather"
TOML

cat >"$STATE/ingest.toml" <<TOML
[ingest]
state_dir = "$STATE/ingest"

[influxdb]
api = "v1"
database = "farmtel_demo"
TOML

for f in gateway ingest; do "$FARMTEL" config check "$STATE/$f.toml"; done

echo "==> starting the ingest and the agent (logs in $STATE/*.log)"
"$FARMTEL" ingest run --config "$STATE/ingest.toml" >"$STATE/ingest.log" 2>&1 &
pids+=($!)
"$FARMTEL" agent run --config "$STATE/gateway.toml" >"$STATE/agent.log" 2>&1 &
pids+=($!)

echo "==> collecting for ${SECONDS_TO_RUN}s"
for ((i = 5; i <= SECONDS_TO_RUN; i += 5)); do
    sleep 5
    echo "    ${i}s"
done

echo
echo "==> farmtel query latest --plantation $PLANTATION"
"$FARMTEL" query latest --plantation "$PLANTATION" --database farmtel_demo
echo
echo "==> farmtel query history --plantation $PLANTATION --sensor soil-north --since 5m --every 10s"
"$FARMTEL" query history --plantation "$PLANTATION" --sensor soil-north --since 5m --every 10s \
    --database farmtel_demo

shown=$("$FARMTEL" query latest --plantation "$PLANTATION" --database farmtel_demo --format json \
    | grep -c '"sensor"' || true)
if [ "$shown" -ne 3 ]; then
    echo "demo: expected the latest values of 3 sensors, got $shown; see $STATE/*.log" >&2
    exit 1
fi
echo
echo "==> demo done: 3 sensors -> agent -> Mosquitto -> ingest -> InfluxDB -> query"
