#!/usr/bin/env bash
# `make demo`: the whole stack on one machine, with the embedded defaults.
#
#   3 simulated boilers (Modbus RTU on ptys, time x60)
#     -> 3 edge agents (own device key, own broker login, the cloud's command key pinned)
#     -> a local Mosquitto (production config and dynamic-security logins, loopback listener)
#     -> `boilertwin cloud serve` (SQLite; API + ingest + command dispatcher + sweeper)
#
# Devices, keys, broker logins, users and the engineers (deploy/demo/engineers.csv, imported as
# a contractor list) are provisioned with the same `boilertwin cloud ...` commands an operator
# uses; boiler 1 gets an owner and a tenant through the REST API. Every demo engineer gets a
# login: an invited engineer answers only by logging in, so `boilertwin demo --scenario repair`
# can play each invited engineer's answer and the round closes at the last one. When all is
# up, $DEMO_DIR/demo.json says where everything is and who may log in; that is what
# `boilertwin demo --scenario lockout|repair` reads. Each run starts from a clean slate in
# $DEMO_DIR. Ctrl-C (or DEMO_SECONDS) stops everything in order; the logs stay.
#
# Environment: DEMO_DIR (run/demo), BOILERTWIN and PYTHON (the venv's), MOSQUITTO,
# DEMO_SECONDS to stop by itself after that many seconds, DEMO_ENGINEERS (another contractor
# list, same CSV format), and fixed ports instead of free ones: DEMO_BROKER_PORT,
# DEMO_API_PORT, DEMO_CONTROL_PORT (boiler 1's; the others follow it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DIR="${DEMO_DIR:-run/demo}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
BOILERTWIN="${BOILERTWIN:-$ROOT/.venv/bin/boilertwin}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
MOSQUITTO="${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}"
BOILERS=3
CLOUD_KID=cloud-demo-1
USERS=(admin:admin support:support olivia:owner tom:tenant)  # id:role; engineers join below
ENGINEERS_CSV="${DEMO_ENGINEERS:-$ROOT/deploy/demo/engineers.csv}"

die() { echo "demo: $*" >&2; exit 1; }
[ -x "$BOILERTWIN" ] || die "$BOILERTWIN not found: run 'make demo' (it creates .venv)"
[ -x "$MOSQUITTO" ] || die "mosquitto not found: sudo apt-get install -y mosquitto"

# One demo per folder: the next one would wipe this one's files from under it.
exec 9>"$DIR/.lock"
flock -n 9 || die "a demo is already running in $DIR (stop it first, or set DEMO_DIR)"

# -- stop everything we started, whatever way we leave ------------------------------------------
pids=()
names=()
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
    # Newest first: agents say offline while the broker and the cloud are still there to hear it.
    [ -z "${provisioning:-}" ] || stop "$provisioning"
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done
    rm -f "$DIR/demo.json"
    echo "demo: stopped (logs in $DIR)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start <name> <log> <command...>: in its own session (Ctrl-C reaches this script only, and
# `cleanup` stops the parts in order instead of them all dying at once), without our lock.
start() {
    local name="$1" log="$2"
    shift 2
    setsid "$@" >"$log" 2>&1 </dev/null 9>&- &
    pids+=("$!")
    names+=("$name:$log")
}

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

secret() {  # secret <file>: a new random password, 0600
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(12))' >"$1")
}

# -- ports: free ones unless fixed ---------------------------------------------------------------
# Held open together, so they are distinct.
read -r -a free <<<"$("$PYTHON" -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
' $((2 + BOILERS)))"
BROKER_PORT="${DEMO_BROKER_PORT:-${free[0]}}"
API_PORT="${DEMO_API_PORT:-${free[1]}}"
control_ports=()
for ((n = 1; n <= BOILERS; n++)); do
    control_ports+=("${DEMO_CONTROL_PORT:+$((DEMO_CONTROL_PORT + n - 1))}")
    [ -n "${control_ports[n - 1]}" ] || control_ports[n - 1]="${free[n + 1]}"
done
for port in "$BROKER_PORT" "$API_PORT" "${control_ports[@]}"; do
    accepts "$port" && die "port $port is taken: set DEMO_BROKER_PORT, DEMO_API_PORT or DEMO_CONTROL_PORT"
done

# -- a clean slate -------------------------------------------------------------------------------
rm -rf "$DIR"/boiler-[0-9] "$DIR/cloud-keys" "$DIR/users"
rm -f "$DIR"/cloud.db* "$DIR"/passwd "$DIR"/dynamic-security.json "$DIR"/mosquitto.db \
    "$DIR"/demo.json* "$DIR"/*.log
mkdir -p "$DIR/users"

# -- simulated boilers (they need nothing else, so they start first) -----------------------------
echo "demo: starting $BOILERS simulated boilers; files and logs in $DIR"
for ((n = 1; n <= BOILERS; n++)); do
    mkdir -p "$DIR/boiler-$n"
    start "simulator $n" "$DIR/boiler-$n/sim.log" \
        "$BOILERTWIN" sim boiler --pty "$DIR/boiler-$n/modbus" --parity N \
        --control "127.0.0.1:${control_ports[n - 1]}" --modem-pty "$DIR/boiler-$n/modem" \
        --time-scale 60 --seed "$n"
done
sims=("${pids[@]}")

# -- the cloud's key and configuration -----------------------------------------------------------
echo "demo: provisioning the cloud key, $BOILERS gateways (keys, registry, broker logins) and users"
"$BOILERTWIN" cloud keygen --kid "$CLOUD_KID" --keys-dir "$DIR/cloud-keys" >/dev/null
secret "$DIR/cloud.password"
secret "$DIR/broker-admin.password"
cat >"$DIR/cloud.toml" <<EOF
# Written by deploy/demo/run-demo.sh; every key is a field of cloud/settings.py CloudSettings.
db_url = "sqlite:///$DIR/cloud.db"
broker_host = "127.0.0.1"
broker_port = $BROKER_PORT
mqtt_password_file = "$DIR/cloud.password"
mqtt_client_id = "bt-cloud-demo"
broker_admin_password_file = "$DIR/broker-admin.password"
keys_dir = "$DIR/cloud-keys"
command_kid = "$CLOUD_KID"
command_ttl_s = 120.0
api_host = "127.0.0.1"
api_port = $API_PORT
# The demo's portal is plain HTTP on loopback: a Secure cookie would never come back.
portal_secure_cookie = false
# The service platform at demo speed (the defaults are production's, see deploy/cloud.toml):
# verified after 10 s of normal running instead of 30 min; unanswered invitations expire after
# 5 min instead of 4 h (every demo engineer can log in and answer, so this is a backstop for
# playing by hand); half the eligible engineers invited, as 10% of a handful is one.
verify_normal_s = 10.0
response_window_s = 300.0
invite_fraction = 0.5
EOF

# -- the broker's logins: the dynamic-security plugin's file, as an operator makes it ------------
"$BOILERTWIN" cloud broker init --dynsec "$DIR/dynamic-security.json" \
    --admin-password-file "$DIR/broker-admin.password" \
    --cloud-password-file "$DIR/cloud.password" >/dev/null

# -- gateways: a key each, registered with the cloud, a broker login, the cloud key pinned -------
keygens=()
for ((n = 1; n <= BOILERS; n++)); do
    "$BOILERTWIN" edge keygen --out "$DIR/boiler-$n/device.key" >/dev/null &
    keygens+=("$!")
done
for pid in "${keygens[@]}"; do wait "$pid" || die "edge keygen failed"; done
models=("" "Condens 7000" "Condens 7000" "Cerapur 9000")
addresses=("" "12 Harbour Street, Bristol" "3 Mill Lane, Bath" "45 Station Road, Cardiff")
locations=("" "51.4495,-2.5966" "51.3811,-2.3590" "51.4816,-3.1791")
for ((n = 1; n <= BOILERS; n++)); do
    device="boiler-demo-$n"
    "$BOILERTWIN" cloud devices add --config "$DIR/cloud.toml" --id "$device" \
        --public-key "$DIR/boiler-$n/device.key.pub" --model "${models[n]}" \
        --serial "DEMO-$((4700 + n))" --install-date "2024-0$n-15" --location "${locations[n]}" \
        --address "${addresses[n]}" \
        --dynsec "$DIR/dynamic-security.json" --password-out "$DIR/boiler-$n/broker.password" \
        >/dev/null
    mkdir -p "$DIR/boiler-$n/cloud-keys" "$DIR/boiler-$n/state"
    cp "$DIR/cloud-keys/$CLOUD_KID.pem" "$DIR/boiler-$n/cloud-keys/"
    cat >"$DIR/boiler-$n/edge.toml" <<EOF
# Written by deploy/demo/run-demo.sh; relative paths are from this folder.
[device]
id = "$device"
key_file = "device.key"
state_dir = "state"

[modbus]
transport = "rtu"
port = "$DIR/boiler-$n/modbus"
parity = "N"

[report]
poll_interval_s = 2.0
batch_interval_s = 10.0

[mqtt]
host = "127.0.0.1"
port = $BROKER_PORT
tls = false
password_file = "broker.password"
reconnect_max_s = 10.0

[commands]
cloud_keys_dir = "cloud-keys"

[clock]
trust = "system"

[health]
interval_s = 60.0
modem_port = "$DIR/boiler-$n/modem"
EOF
done

# -- people --------------------------------------------------------------------------------------
for entry in "${USERS[@]}"; do
    user="${entry%%:*}"
    secret "$DIR/users/$user.password"
    "$BOILERTWIN" cloud users add --config "$DIR/cloud.toml" --id "$user" --role "${entry#*:}" \
        --password-file "$DIR/users/$user.password" >/dev/null
done

# Engineers: the contractor list, imported as an operator would, then a login for each. In the
# background (each command is ~2 s of start-up) while the broker, cloud and agents come up;
# waited for before demo.json is written.
engineers=()
while IFS=, read -r engineer _ || [ -n "${engineer:-}" ]; do
    engineer="${engineer%$'\r'}"
    [ -n "$engineer" ] || continue
    secret "$DIR/users/$engineer.password"
    engineers+=("$engineer")
    USERS+=("$engineer:engineer")
done < <(tail -n +2 "$ENGINEERS_CSV")
provision_engineers() {
    "$BOILERTWIN" cloud engineers import --config "$DIR/cloud.toml" "$ENGINEERS_CSV" >/dev/null \
        || return 1
    for engineer in "${engineers[@]}"; do
        "$BOILERTWIN" cloud users password --config "$DIR/cloud.toml" "$engineer" \
            --password-file "$DIR/users/$engineer.password" >/dev/null || return 1
    done
}
provision_engineers 9>&- &
provisioning=$!

# -- broker: the production config, rendered for this folder by cloud/mosquitto.py ---------------
# (its logins are in dynamic-security.json: `cloud broker init`, then `cloud devices add --dynsec`)
"$PYTHON" - "$DIR" "$BROKER_PORT" <<'EOF'
import sys
from pathlib import Path
from cloud.mosquitto import render_config
directory, port = Path(sys.argv[1]), int(sys.argv[2])
source = Path("deploy/mosquitto/mosquitto.conf")
(directory / "mosquitto.conf").write_text(
    f"# Rendered by deploy/demo/run-demo.sh from {source}: plain loopback listener only.\n"
    + render_config(source.read_text(), directory=directory, host="127.0.0.1", port=port)
)
EOF
echo "demo: starting Mosquitto on 127.0.0.1:$BROKER_PORT, the cloud on 127.0.0.1:$API_PORT, the agents"
start broker "$DIR/mosquitto.log" "$MOSQUITTO" -c "$DIR/mosquitto.conf"
wait_for mosquitto "${pids[-1]}" 10 accepts "$BROKER_PORT"

# -- the cloud, subscribed before any gateway speaks (births are not retained) --------------------
start cloud "$DIR/cloud.log" env PYTHONUNBUFFERED=1 "$BOILERTWIN" cloud serve --config "$DIR/cloud.toml"
wait_for cloud "${pids[-1]}" 30 grep -q "Sending SUBACK to bt-cloud-demo" "$DIR/mosquitto.log"

# -- the gateways, once their boilers are there -------------------------------------------------
for ((n = 1; n <= BOILERS; n++)); do
    wait_for "simulator $n" "${sims[n - 1]}" 20 accepts "${control_ports[n - 1]}"
    wait_for "simulator $n" "${sims[n - 1]}" 5 test -e "$DIR/boiler-$n/modbus" -a -e "$DIR/boiler-$n/modem"
    start "agent $n" "$DIR/boiler-$n/agent.log" \
        "$BOILERTWIN" edge run --config "$DIR/boiler-$n/edge.toml"
done

# -- engineers, owner and tenant of boiler 1 (through the API), then demo.json: the demo is ready
wait "$provisioning" || die "cannot import the engineers in $ENGINEERS_CSV"
provisioning=""
API="http://127.0.0.1:$API_PORT/api/v1"
"$PYTHON" - "$DIR" "$API" "$BROKER_PORT" "${USERS[*]}" "${control_ports[@]}" <<'EOF'
import sys
from pathlib import Path
from cloud.demo.client import DemoError
from cloud.demo.setup import prepare
directory, api, broker = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
users, controls = [entry.split(":") for entry in sys.argv[4].split()], sys.argv[5:]
record = {
    "portal": api.removesuffix("/api/v1") + "/",
    "api": api,
    "docs": api.removesuffix("/api/v1") + "/docs",
    "broker": f"mqtt://127.0.0.1:{broker}",
    "boilers": [
        {
            "id": f"boiler-demo-{n}",
            "control": f"http://127.0.0.1:{port}",
            "modbus": str(directory / f"boiler-{n}" / "modbus"),
            "owner": "olivia" if n == 1 else None,
            "tenant": "tom" if n == 1 else None,
        }
        for n, port in enumerate(controls, start=1)
    ],
    "users": [
        {"id": user, "role": role, "password": (directory / "users" / f"{user}.password").read_text().strip()}
        for user, role in users
    ],
}
try:
    prepare(record, directory)
except DemoError as exc:
    sys.exit(f"demo: {exc}")
EOF

logins=""
for entry in "${USERS[@]}"; do
    user="${entry%%:*}"
    logins+="$(printf '\n    %-9s %-8s password %s' "$user" "${entry#*:}" "$(cat "$DIR/users/$user.password")")"
done
boilers=""
for ((n = 1; n <= BOILERS; n++)); do
    boilers+="$(printf '\n    boiler-demo-%d  simulator control http://127.0.0.1:%s, files in boiler-%d/' \
        "$n" "${control_ports[n - 1]}" "$n")"
done
cat <<EOF

boilertwin demo: the whole stack on this machine; files and logs in $DIR
  web portal    http://127.0.0.1:$API_PORT/  <- open this in a browser and log in as anyone below
                (tenant: tom; landlord: olivia; engineers; the manufacturer's support desk)
  cloud API     $API (log: cloud.log)
                OpenAPI: http://127.0.0.1:$API_PORT/docs and /openapi.json
  Mosquitto     mqtt://127.0.0.1:$BROKER_PORT, production logins and roles (log: mosquitto.log)
  boilers       simulated on ptys (time x60), each with its own edge agent
                (edge.toml, sim.log, agent.log):$boilers
  logins        (olivia owns boiler-demo-1, tom is its tenant; the engineers are from
                $ENGINEERS_CSV):$logins
Try it, from another terminal:
  $BOILERTWIN demo --scenario lockout --dir $DIR
  $BOILERTWIN demo --scenario repair --dir $DIR
  curl -s -d username=support -d password=$(cat "$DIR/users/support.password") $API/auth/token
Ctrl-C stops everything.
EOF

if [ -n "${DEMO_SECONDS:-}" ]; then
    sleep "$DEMO_SECONDS" &
    pids+=("$!")
    names+=("")
fi
# Run until Ctrl-C, DEMO_SECONDS, or any part stopping on its own (then say which).
wait -n "${pids[@]}" || true
status=0
for i in "${!pids[@]}"; do
    [ -n "${names[i]}" ] || continue
    if ! kill -0 "${pids[i]}" 2>/dev/null; then
        status=1
        log="${names[i]#*:}"
        echo "demo: the ${names[i]%%:*} stopped on its own; the end of $log:" >&2
        tail -n 5 "$log" >&2
    fi
done
exit "$status"
