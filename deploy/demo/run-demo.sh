#!/usr/bin/env bash
# The `make demo` loop on one machine: simulated boiler -> edge agent -> local Mosquitto -> tail.
#
# Everything lives in $DEMO_DIR (default run/demo): a Mosquitto rendered from the production
# deploy/mosquitto/mosquitto.conf (same auth, ACL and limits; only a plain loopback listener,
# paths and logging differ), the device key, a cloud command key, edge.toml, the agent's outbox
# and every log. In the foreground, `boilertwin edge tail` prints each message the gateway
# sends, verified against the device's public key, as the cloud will. Ctrl-C stops it all.
#
# Environment: DEMO_DIR, DEMO_BROKER_PORT (18883), DEMO_CONTROL_PORT (8020), BOILERTWIN and
# PYTHON (the venv's), MOSQUITTO, and DEMO_SECONDS to stop by itself after that many seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DIR="${DEMO_DIR:-run/demo}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
BROKER_PORT="${DEMO_BROKER_PORT:-18883}"
CONTROL_PORT="${DEMO_CONTROL_PORT:-8020}"
BOILERTWIN="${BOILERTWIN:-$ROOT/.venv/bin/boilertwin}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
MOSQUITTO="${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}"
DEVICE=boiler-demo-1
CLOUD_KID=cloud-demo-1

die() { echo "demo: $*" >&2; exit 1; }
[ -x "$BOILERTWIN" ] || die "$BOILERTWIN not found: run 'make demo' (it creates .venv)"
[ -x "$MOSQUITTO" ] || die "mosquitto not found: sudo apt-get install -y mosquitto"

# -- stop everything we started, whatever way we leave ------------------------------------------
pids=()
stop() {  # stop <pid>: SIGTERM, up to 5 s to finish, then SIGKILL
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    trap - EXIT INT TERM
    local i
    # Newest first: the agent says offline while the broker is still there to hear it.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done
    echo "demo: stopped (logs in $DIR)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # wait_for <what> <pid> <seconds> <test command...>
    local what="$1" pid="$2" deadline=$((SECONDS + $3))
    shift 3
    until "$@"; do
        kill -0 "$pid" 2>/dev/null || die "$what exited early; see its log in $DIR"
        [ "$SECONDS" -lt "$deadline" ] || die "$what did not come up; see its log in $DIR"
        sleep 0.1
    done
}

new_secret() { "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(18))'; }

# -- broker -------------------------------------------------------------------------------------
accepts "$BROKER_PORT" && die "port $BROKER_PORT is taken: set DEMO_BROKER_PORT"
accepts "$CONTROL_PORT" && die "port $CONTROL_PORT is taken: set DEMO_CONTROL_PORT"
for user in "$DEVICE" cloud; do
    if [ ! -s "$DIR/$user.password" ]; then
        (umask 077 && new_secret >"$DIR/$user.password")
    fi
done
cp deploy/mosquitto/acl "$DIR/acl"
# The production config and password hashes, rendered for this folder by cloud/mosquitto.py
# (the code the test suite's brokers use too); only a plain loopback listener.
"$PYTHON" - "$DIR" "$BROKER_PORT" "$DEVICE" <<'EOF'
import sys
from pathlib import Path
from cloud.mosquitto import password_hash, render_config
directory, port, device = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
passwd = directory / "passwd"
passwd.touch(mode=0o600)
passwd.write_text("".join(
    f"{user}:{password_hash((directory / f'{user}.password').read_text().strip())}\n"
    for user in (device, "cloud")
))
source = Path("deploy/mosquitto/mosquitto.conf")
(directory / "mosquitto.conf").write_text(
    f"# Rendered by deploy/demo/run-demo.sh from {source}: plain loopback listener only.\n"
    + render_config(source.read_text(), directory=directory, host="127.0.0.1", port=port)
)
EOF
# Background parts run in their own sessions: Ctrl-C reaches this script (and the tail), and
# `cleanup` stops the rest in order instead of them all dying at once.
setsid "$MOSQUITTO" -c "$DIR/mosquitto.conf" >"$DIR/mosquitto.log" 2>&1 </dev/null &
broker_pid=$!
pids+=("$broker_pid")

# -- keys and the agent's configuration --------------------------------------------------------
if [ ! -f "$DIR/device.key" ]; then
    "$BOILERTWIN" edge keygen --out "$DIR/device.key" >/dev/null
fi
mkdir -p "$DIR/cloud-keys"
if [ ! -f "$DIR/cloud-keys/$CLOUD_KID.pem" ]; then
    # The cloud's command key: private half for whoever plays the cloud, public half pinned.
    "$PYTHON" - "$DIR/cloud.key" "$DIR/cloud-keys/$CLOUD_KID.pem" <<'EOF'
import os, pathlib, sys
from protocols.cose import generate_private_key, private_key_to_pem, public_key_to_pem
key = generate_private_key()
private = pathlib.Path(sys.argv[1])
private.write_bytes(private_key_to_pem(key))
os.chmod(private, 0o600)
pathlib.Path(sys.argv[2]).write_bytes(public_key_to_pem(key.public_key()))
EOF
fi
cat >"$DIR/edge.toml" <<EOF
# Written by deploy/demo/run-demo.sh; relative paths are from this folder.
[device]
id = "$DEVICE"
key_file = "device.key"
state_dir = "state"

[modbus]
transport = "rtu"
port = "$DIR/boiler0"
parity = "N"

[report]
poll_interval_s = 2.0
batch_interval_s = 10.0

[mqtt]
host = "127.0.0.1"
port = $BROKER_PORT
tls = false
password_file = "$DEVICE.password"
reconnect_max_s = 10.0

[commands]
cloud_keys_dir = "cloud-keys"

[clock]
trust = "system"

[health]
interval_s = 60.0
modem_port = "$DIR/modem0"
EOF
mkdir -p "$DIR/state"

# -- simulator ----------------------------------------------------------------------------------
wait_for mosquitto "$broker_pid" 10 accepts "$BROKER_PORT"
rm -f "$DIR/boiler0" "$DIR/modem0"
setsid "$BOILERTWIN" sim boiler --pty "$DIR/boiler0" --parity N --control "127.0.0.1:$CONTROL_PORT" \
    --modem-pty "$DIR/modem0" --time-scale 60 --seed 1 >"$DIR/sim.log" 2>&1 </dev/null &
sim_pid=$!
pids+=("$sim_pid")
wait_for simulator "$sim_pid" 20 accepts "$CONTROL_PORT"
wait_for simulator "$sim_pid" 5 test -e "$DIR/boiler0" -a -e "$DIR/modem0"

cat <<EOF
boilertwin demo: everything runs on this machine, files and logs in $DIR
  simulated boiler  Modbus RTU on $DIR/boiler0 (19200 8N1), LTE modem on $DIR/modem0,
                    time x60, control http://127.0.0.1:$CONTROL_PORT (log: sim.log)
  Mosquitto         mqtt://127.0.0.1:$BROKER_PORT, production auth + ACL (log: mosquitto.log)
  edge agent        $DEVICE: poll 2 s, batch 10 s, health 60 s (config: edge.toml, log: agent.log)
Inject a fault and watch the lockout event arrive (F28, no gas, bites at the next burner start,
which a short power cut forces; F29, flame loss, locks out at once):
  curl -X POST http://127.0.0.1:$CONTROL_PORT/fault -d '{"code":"F28"}'
  curl -X POST http://127.0.0.1:$CONTROL_PORT/power-cycle -d '{"off_s":1}'
Below: every message the gateway sends, verified with device.key.pub. Ctrl-C stops everything.

EOF

# -- the watch, then the agent (subscribed first, so its birth is seen) --------------------------
"$BOILERTWIN" edge tail --host 127.0.0.1 --port "$BROKER_PORT" --username cloud \
    --password-file "$DIR/cloud.password" --device "$DEVICE" \
    --public-key "$DIR/device.key.pub" </dev/null &
tail_pid=$!
pids+=("$tail_pid")
# The broker logs each SUBACK; the agent may start once the watch's one is out.
wait_for "edge tail" "$tail_pid" 10 grep -q "Sending SUBACK to tail-cloud-" "$DIR/mosquitto.log"

setsid "$BOILERTWIN" edge run --config "$DIR/edge.toml" >"$DIR/agent.log" 2>&1 </dev/null &
agent_pid=$!
pids+=("$agent_pid")

if [ -n "${DEMO_SECONDS:-}" ]; then
    sleep "$DEMO_SECONDS" &
    pids+=("$!")
fi
# Run until Ctrl-C, DEMO_SECONDS, or any part stopping on its own (then say which).
wait -n "${pids[@]}" || true
status=0
for name in broker sim agent tail; do
    pid_var="${name}_pid"
    if ! kill -0 "${!pid_var}" 2>/dev/null; then
        status=1
        case "$name" in
            broker) log="$DIR/mosquitto.log" ;;
            tail) log="" ;;
            *) log="$DIR/$name.log" ;;
        esac
        echo "demo: the $name stopped on its own${log:+; the end of $log:}" >&2
        if [ -n "$log" ]; then tail -n 5 "$log" >&2; fi
    fi
done
exit "$status"
