#!/usr/bin/env bash
# Fan-out before/after: two kinglet binaries measured interleaved in one run (issue 11), so
# that the noise of a shared machine falls on both alike. For each round and each subscriber
# count, the OLD binary then the NEW one, each on a freshly started server whose data dir is a
# copy of one prepared account set; server pinned to CPU 0, loadgen to CPU 1, loopback only.
# The scenario is compare.sh's fan-out line. Prints a table of medians over the rounds.
#
#   OLD_BIN=/path/to/old/kinglet bash benches/fanout-ab.sh
#
# Knobs (environment): OLD_BIN (required), NEW_BIN (this tree's target/release/kinglet),
# LOADGEN (this tree's target/release/examples/loadgen), FANOUT_SUBS ("10 100 1000"),
# ROUNDS (3), SECS (10 measured seconds per run), PORT (25011), CONFIG (a kinglet.toml with
# @DIR@/@PORT@ placeholders both binaries accept: benches/peers/kinglet.toml),
# RAW (a file to copy the JSON lines to).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OLD_BIN=${OLD_BIN:?set OLD_BIN to the old kinglet binary}
NEW_BIN=${NEW_BIN:-$ROOT/target/release/kinglet}
LOADGEN=${LOADGEN:-$ROOT/target/release/examples/loadgen}
FANOUT_SUBS=${FANOUT_SUBS:-"10 100 1000"}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
PORT=${PORT:-25011}
CONFIG=${CONFIG:-$ROOT/benches/peers/kinglet.toml}
RAW=${RAW:-}
ACCOUNTS=5000
for b in "$OLD_BIN" "$NEW_BIN" "$LOADGEN"; do [ -x "$b" ] || { echo "not executable: $b" >&2; exit 1; }; done
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || { echo "ROUNDS must be 1..20" >&2; exit 1; }

WORK=$(mktemp -d /tmp/kinglet-fanout-ab.XXXXXX)
RESULTS=$WORK/results.jsonl
: > "$RESULTS"
ulimit -n "$(ulimit -Hn)" 2>/dev/null

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null
  fi
  SERVER_PID=""
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT
trap "exit 130" INT TERM
say() { echo "== $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 120); do
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    port_open "$1" && return 0
    sleep 0.25
  done
  return 1
}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null || exit 1

# One account set, copied for every run.
say "preparing $ACCOUNTS accounts"
"$LOADGEN" kinglet-users --data-dir "$WORK/accounts" --count $ACCOUNTS || exit 1

# Both binaries must accept the configuration.
mkdir -p "$WORK/run"; cp "$WORK"/*.pem "$WORK/run/"
sed -e "s#@DIR@#$WORK/run#g" -e "s#@PORT@#$PORT#g" -e "s#@TLSPORT@#0#g" "$CONFIG" > "$WORK/kinglet.toml"
for b in "$OLD_BIN" "$NEW_BIN"; do
  "$b" check-config --config "$WORK/kinglet.toml" >/dev/null 2>"$WORK/check.err" ||
    { echo "$b rejects the configuration:" >&2; cat "$WORK/check.err" >&2; exit 1; }
done

run_one() { # label binary subs round
  local label=$1 bin=$2 s=$3 r=$4
  rm -rf "$WORK/run"; mkdir -p "$WORK/run"; cp "$WORK"/*.pem "$WORK/run/"
  cp -a "$WORK/accounts" "$WORK/run/data"
  if port_open "$PORT"; then say "port $PORT is already in use"; return 1; fi
  taskset -c 0 "$bin" run --config "$WORK/kinglet.toml" 2>"$WORK/run/log" &
  SERVER_PID=$!
  if ! wait_port "$PORT"; then
    say "$label did not start:"; tail -5 "$WORK/run/log" >&2
    echo "{\"bench\":\"fanout\",\"server\":\"$label\",\"subs\":$s,\"round\":$r,\"error\":\"did not start\"}" >> "$RESULTS"
    stop_server; return 0
  fi
  sleep 1
  local line
  line=$(timeout 600 taskset -c 1 "$LOADGEN" fanout --name "$label" --proto xmpp \
    --server 127.0.0.1:$PORT --pid "$SERVER_PID" --ca "$WORK/cert.pem" \
    --count "$s" --items $((2000000 / s)) --window 64 --secs "$SECS" | grep '^{' | tail -1)
  [ -n "$line" ] || line="{\"bench\":\"fanout\",\"server\":\"$label\",\"subs\":$s,\"error\":\"no result\"}"
  echo "${line%\}},\"round\":$r}" >> "$RESULTS"
  stop_server
}

for r in $(seq 1 "$ROUNDS"); do
  for s in $FANOUT_SUBS; do
    say "round $r/$ROUNDS, $s subscribers"
    run_one old "$OLD_BIN" "$s" "$r" || exit 1
    run_one new "$NEW_BIN" "$s" "$r" || exit 1
  done
done
[ -n "$RAW" ] && cp "$RESULTS" "$RAW"

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def vals(label, s, key):
    return [r[key] for r in rows if r.get("server") == label and r.get("subs") == s
            and "error" not in r and key in r]
def med(v):
    return statistics.median(v) if v else None
def f(v, d=0):
    return "n/a" if v is None else f"{v:,.{d}f}"
subs = sorted({r["subs"] for r in rows if "subs" in r})
print("| subscribers | old median notifications/s | new median notifications/s | ratio new/old | server CPU µs per notification, old / new (medians) |")
print("|---:|---:|---:|---:|---:|")
for s in subs:
    o, n = med(vals("old", s, "notif_per_s")), med(vals("new", s, "notif_per_s"))
    co, cn = med(vals("old", s, "cpu_us_per_notif")), med(vals("new", s, "cpu_us_per_notif"))
    ratio = f"{n / o:.2f}" if o and n else "n/a"
    print(f"| {s} | {f(o)} | {f(n)} | {ratio} | {f(co, 2)} / {f(cn, 2)} |")
print()
print("Each run (round: notifications/s, CPU µs/notification, exactly-once):")
for s in subs:
    for label in ("old", "new"):
        cells = []
        for r in rows:
            if r.get("server") != label or r.get("subs") != s:
                continue
            if "error" in r:
                cells.append(f"r{r.get('round')}: {r['error']}")
            else:
                cells.append(f"r{r['round']}: {r['notif_per_s']:,.0f}, {r['cpu_us_per_notif']:.2f}, "
                             f"{'yes' if r.get('exactly_once') else 'NO'}")
        print(f"- {s} subscribers, {label}: " + "; ".join(cells))
EOF
