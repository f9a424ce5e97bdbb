#!/usr/bin/env bash
# Kinglet beside Prosody, ejabberd and mosquitto: the same loadgen scenarios against each,
# server pinned to CPU 0 and loadgen to CPU 1, results in docs/benchmarks.md.
#
#   bash benches/compare.sh                  # everything (about 20 minutes)
#   SERVERS="kinglet mosquitto" bash benches/compare.sh
#
# Knobs (environment): SERVERS, IDLE_SIZES ("1000 5000"), TLS_SIZES ("1000 5000"),
# FANOUT_SUBS ("10 100 1000"), RESUME_SIZES ("1000": sessions of the resume scenario, each
# with 10 notifications queued while detached), SECS (measured seconds per flow run, 15),
# SOAK_SECS (120), SECTIONS (which parts run: "idle tls resume login fanout fanin soak"),
# OUT (docs/benchmarks.md).
#   SECTIONS=resume OUT=/tmp/resume.md bash benches/compare.sh   # the resume part alone Installs prosody, ejabberd and mosquitto with apt-get if absent.
# Servers run as child processes on loopback with their data in a temp dir; all are stopped
# at the end (trap). Peer configurations and what they lift: benches/peers/.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
SERVERS=${SERVERS:-"kinglet prosody ejabberd mosquitto"}
IDLE_SIZES=${IDLE_SIZES:-"1000 5000"}
TLS_SIZES=${TLS_SIZES:-"1000 5000"}
FANOUT_SUBS=${FANOUT_SUBS:-"10 100 1000"}
RESUME_SIZES=${RESUME_SIZES:-"1000"}
SECTIONS=${SECTIONS:-"idle tls resume login fanout fanin soak"}
SECS=${SECS:-15}
SOAK_SECS=${SOAK_SECS:-120}
OUT=${OUT:-docs/benchmarks.md}
ACCOUNTS=5000
WORK=$(mktemp -d /tmp/kinglet-compare.XXXXXX)
RESULTS=$WORK/results.jsonl
: > "$RESULTS"
ulimit -n "$(ulimit -Hn)" 2>/dev/null

SERVER_PID=""
EXTRA_PIDS=""
stop_server() {
  # ejabberd: the beam.smp process found by its node name (ejabberdctl runs it through su).
  local beam; beam=$(pgrep -f "beam.smp.*kbench@localhost")
  [ -n "$beam" ] && kill $beam 2>/dev/null
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 20); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null
  fi
  for p in $EXTRA_PIDS; do kill "$p" 2>/dev/null; done
  SERVER_PID=""; EXTRA_PIDS=""
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT
trap "exit 130" INT TERM

say() { echo "== $*" >&2; }
on() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }
# epmd (started by ejabberd's Erlang VM) is stopped at the end only if it was not running before.
EPMD_BEFORE=$(pgrep -x epmd)

# --- build and install ----------------------------------------------------------------------
cargo build --release --bin kinglet --example loadgen >&2 || exit 1
TGT=${CARGO_TARGET_DIR:-$ROOT/target}/release
KINGLET=$TGT/kinglet
LOADGEN=$TGT/examples/loadgen
need=""
for s in $SERVERS; do
  case $s in
    prosody) command -v prosody >/dev/null || need="$need prosody" ;;
    ejabberd) command -v ejabberdctl >/dev/null || need="$need ejabberd" ;;
    mosquitto) command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need="$need mosquitto" ;;
  esac
done
if [ -n "$need" ]; then
  say "installing$need"
  # policy-rc.d keeps the packages' own services from starting.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need >&2 || say "apt-get failed:$need"
fi

# One certificate for every server (P-256, SAN localhost).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 644 "$WORK/key.pem"

subst() { sed -e "s#@DIR@#$2#g" -e "s#@PORT@#$3#g" -e "s#@TLSPORT@#$4#g" "benches/peers/$1"; }

wait_port() {
  for _ in $(seq 1 120); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.5
  done
  return 1
}

# --- per-server start -----------------------------------------------------------------------
PORT=0; TLSPORT=0; PROTO=xmpp
start_kinglet() {
  local d=$WORK/kinglet; mkdir -p "$d"; cp "$WORK"/*.pem "$d/"
  PORT=25001; PROTO=xmpp
  subst kinglet.toml "$d" $PORT 0 > "$d/kinglet.toml"
  [ -d "$d/data" ] || "$LOADGEN" kinglet-users --data-dir "$d/data" --count $ACCOUNTS || return 1
  taskset -c 0 "$KINGLET" run --config "$d/kinglet.toml" 2>"$d/log" &
  SERVER_PID=$!
  wait_port $PORT
}
start_prosody() {
  command -v prosody >/dev/null || return 1
  local d=$WORK/prosody; mkdir -p "$d/data/localhost/accounts" "$d/certs"; cp "$WORK"/*.pem "$d/"
  PORT=25002; PROTO=xmpp
  # Prosody lets only admins create pub-sub nodes: the publishers p0..p99 are admins.
  subst prosody.cfg.lua "$d" $PORT 0 | sed "s#@ADMINS@#$(for i in $(seq 0 99); do printf '"p%s@localhost", ' $i; done)#" > "$d/prosody.cfg.lua"
  for i in $(seq 0 $((ACCOUNTS - 1))); do printf 'return {\n\t["password"] = "pw";\n};\n' > "$d/data/localhost/accounts/u$i.dat"; done
  for i in $(seq 0 99); do printf 'return {\n\t["password"] = "pw";\n};\n' > "$d/data/localhost/accounts/p$i.dat"; done
  taskset -c 0 prosody --config "$d/prosody.cfg.lua" >"$d/stdout" 2>&1 &
  SERVER_PID=$!
  wait_port $PORT
}
start_ejabberd() {
  command -v ejabberdctl >/dev/null || return 1
  local d=$WORK/ejabberd fresh=1; [ -d "$d/db" ] && fresh=0; mkdir -p "$d/db"; cat "$WORK/key.pem" "$WORK/cert.pem" > "$d/server.pem"
  PORT=25003; PROTO=xmpp
  subst ejabberd.yml "$d" $PORT 0 > "$d/ejabberd.yml"
  # Debian's /etc/ejabberd/ejabberdctl.cfg pins the config path: use our own config dir.
  printf 'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\nEJABBERD_CONFIG_PATH=%s\n' "$d/ejabberd.yml" > "$d/ejabberdctl.cfg"
  cp /etc/ejabberd/inetrc "$d/" 2>/dev/null
  chown -R ejabberd: "$d" 2>/dev/null; chmod 755 "$WORK"
  # As the ejabberd user through setpriv, not ejabberdctl's su: su resets the open-files
  # limit to 1024, too few for 5,000 sessions.
  taskset -c 0 env HOME=/var/lib/ejabberd setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
    ejabberdctl --config-dir "$d" --spool "$d/db" --logs "$d" \
    --node "kbench@localhost" foreground >"$d/stdout" 2>&1 &
  EXTRA_PIDS=$!
  wait_port $PORT || return 1
  SERVER_PID=$(pgrep -f "beam.smp.*kbench@localhost" | head -1)
  [ -n "$SERVER_PID" ] || return 1
  taskset -a -p -c 0 "$SERVER_PID" >/dev/null
  [ $fresh = 1 ] || return 0
  say "registering $ACCOUNTS ejabberd accounts (XEP-0077)"
  taskset -c 1 "$LOADGEN" register --server 127.0.0.1:$PORT --count $ACCOUNTS --name ejabberd >/dev/null
}
start_mosquitto() {
  local m; m=$(command -v mosquitto || echo /usr/sbin/mosquitto); [ -x "$m" ] || return 1
  local d=$WORK/mosquitto; mkdir -p "$d"; cp "$WORK"/*.pem "$d/"
  PORT=25004; TLSPORT=25005; PROTO=mqtt
  subst mosquitto.conf "$d" $PORT $TLSPORT > "$d/mosquitto.conf"
  taskset -c 0 "$m" -c "$d/mosquitto.conf" >"$d/stdout" 2>&1 &
  SERVER_PID=$!
  wait_port $PORT
}

lg() { # scenario args...
  local sc=$1; shift
  timeout 600 taskset -c 1 "$LOADGEN" "$sc" --name "$NAME" --proto $PROTO \
    --server 127.0.0.1:$PORT --tls-server 127.0.0.1:$TLSPORT --pid "$SERVER_PID" \
    --ca "$WORK/cert.pem" "$@" | tee -a "$RESULTS"
}

for NAME in $SERVERS; do
  say "$NAME"
  if ! "start_$NAME"; then
    say "$NAME could not be installed or started: n/a"
    echo "{\"bench\":\"start\",\"server\":\"$NAME\",\"error\":\"not available\"}" >> "$RESULTS"
    stop_server; continue
  fi
  sleep 2
  echo "{\"bench\":\"start\",\"server\":\"$NAME\",\"rss_kib\":$(awk '/VmRSS/{print $2}' /proc/$SERVER_PID/status)}" | tee -a "$RESULTS"
  # Each idle run on a freshly started server: freed memory stays in a process's heap, so a
  # previous run would hide the next one's growth.
  on idle && for n in $IDLE_SIZES; do lg idle --count "$n"; stop_server; "start_$NAME" || break; sleep 1; done
  on tls && for n in $TLS_SIZES; do lg idle --count "$n" --tls; stop_server; "start_$NAME" || break; sleep 1; done
  # Resumption: N sessions detached with 10 queued notifications each, then resumed; each
  # run on a freshly started server, like idle (RSS per session).
  on resume && for n in $RESUME_SIZES; do lg resume --count "$n" --items 10; stop_server; "start_$NAME" || break; sleep 1; done
  on login && [ $PROTO = xmpp ] && lg login --count 100000 --secs 10
  on fanout && for s in $FANOUT_SUBS; do lg fanout --count "$s" --items $((2000000 / s)) --window 64 --secs "$SECS"; done
  on fanin && lg fanin --count 100 --items 100000 --window 4 --secs "$SECS"
  on soak && lg soak --count 50 --items 2000 --window 32 --secs "$SOAK_SECS"
  stop_server
done
# epmd is started by ejabberd's Erlang VM; stop it if it runs and did not before.
[ -z "$EPMD_BEFORE" ] && command -v epmd >/dev/null && epmd -kill >/dev/null 2>&1

python3 benches/peers/report.py "$RESULTS" > "$OUT" && say "wrote $OUT"
cp "$RESULTS" "${OUT%.md}.jsonl"
