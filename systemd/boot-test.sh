#!/usr/bin/env bash
# shellcheck disable=SC2015 # `check && ok || bad` is intended: ok and bad always succeed
# Real boot test of the .deb: Debian 12 with systemd as PID 1 in systemd-nspawn.
#
#   systemd/boot-test.sh KINGLET_DEB        (as root; amd64 .deb on an x86_64 host)
#
# 1. Once: apt-get install debootstrap systemd-container (if missing) and debootstrap a
#    minimal bookworm into $KINGLET_NSPAWN_CACHE/base (default /var/tmp/kinglet-nspawn, about
#    30 s to 3 min and 250 MB, from the host's Debian mirror). Each run boots a fresh copy.
# 2. Boots it (`systemd-nspawn -b`, sharing the host's network) and waits for
#    `systemctl is-system-running`.
# 3. `apt-get install` the package: the unit must be enabled and active, Status "serving ...".
#    `systemd-analyze verify` of the installed unit prints nothing and `systemd-analyze
#    security` (online, as systemd sees the running unit) is at most 2.0.
# 4. Follows docs/install.md: stop, `kinglet user add` (password on stdin), a certificate
#    in /etc/kinglet/tls.{crt,key} (root-only) handed over by LoadCredential=, [tls] and
#    listeners on free loopback ports, start (a hand-run `kinglet check-config` cannot see
#    /run/credentials/, which exists only for the service). cross/smoke_client.py (on the host: same
#    network) logs in over direct TLS and plain TCP, exchanges messages, creates a pubsub
#    node, subscribes, publishes and receives the notification.
# 5. `systemctl reload` (SIGHUP): same main PID, still active, STATUS reports the reload.
# 6. Watchdog: a drop-in shortens WatchdogSec to 3 s; the daemon is SIGSTOPped; systemd must
#    log "Watchdog timeout", kill it and restart it (NRestarts 1, a new main PID). The
#    restarted daemon has the node, item and subscription back (smoke client "again").
#    A broken config then fails the unit with exit status 78 and no restart loop.
# 7. `dpkg -P`: the unit is stopped and gone, /usr/bin/kinglet and /etc/kinglet removed.
# Prints one line per check and exits non-zero if any failed. Takes about a minute with the
# base cached. The container is halted and its copy deleted on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
deb="${1:-}"
[ -n "$deb" ] && [ -f "$deb" ] || { sed -n '3,28p' "${BASH_SOURCE[0]}" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "boot-test: must run as root (nspawn, debootstrap)" >&2; exit 2; }
deb="$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"
cache="${KINGLET_NSPAWN_CACHE:-/var/tmp/kinglet-nspawn}"
mirror="${KINGLET_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
py="${PYTHON:-python3}"

fail=0
ok() { printf 'ok   %s\n' "$*"; }
bad() { printf 'FAIL %s\n' "$*"; fail=1; }
log() { printf 'boot-test: %s\n' "$*" >&2; }

need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -qq </dev/null ||
        { echo "boot-test: setup: 'apt-get update' failed (needed for ${need[*]})" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" </dev/null ||
        { echo "boot-test: setup: 'apt-get install ${need[*]}' failed" >&2; exit 1; }
fi

if [ ! -x "$cache/base/lib/systemd/systemd" ]; then
    log "debootstrap bookworm into $cache/base ($mirror)"
    rm -rf "$cache/base.new"
    mkdir -p "$cache"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps \
        bookworm "$cache/base.new" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
        { tail -n 20 "$cache/debootstrap.log" >&2; echo "boot-test: setup: debootstrap of bookworm from $mirror failed (log: $cache/debootstrap.log)" >&2; exit 1; }
    mv "$cache/base.new" "$cache/base"
fi

root="$(mktemp -d "$cache/run.XXXXXX")"
tmp="$(mktemp -d)"
nspawn_pid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null || true # a clean halt of the container
        for _ in $(seq 1 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    rm -rf "$root" "$tmp"
}
trap cleanup EXIT

cp -a --reflink=auto "$cache/base/." "$root/"
cp "$deb" "$root/root/kinglet.deb"
echo kinglet-test >"$root/etc/hostname"

log "booting the container"
# --keep-unit --register=no: the host has no systemd/machined to register with.
systemd-nspawn --keep-unit --register=no --quiet -D "$root" -b --console=pipe \
    >"$tmp/console.log" 2>&1 </dev/null &
nspawn_pid=$!
cpid=""
for _ in $(seq 1 100); do
    cpid="$(pgrep -P "$nspawn_pid" -x systemd || true)"
    [ -n "$cpid" ] && break
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$tmp/console.log" >&2; echo "nspawn exited" >&2; exit 1; }
    sleep 0.1
done
[ -n "$cpid" ] || { cat "$tmp/console.log" >&2; echo "no systemd in the container" >&2; exit 1; }

# Run a command inside the container (all its namespaces).
c() { nsenter -t "$cpid" -a "$@"; }

state=""
for _ in $(seq 1 300); do
    state="$(c systemctl is-system-running 2>/dev/null || true)"
    case "$state" in running | degraded) break ;; esac
    sleep 0.2
done
case "$state" in
    running) ok "container booted (systemd $(c systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p'), system running)" ;;
    *) bad "container state '$state': $(c systemctl --failed --no-legend 2>&1 | tr '\n' ' ')" ;;
esac

# A unit property.
prop() { c systemctl show -P "$1" kinglet.service; }

# 3. install
# The package starts the service on the default 127.0.0.1:5222 at once, and the container
# shares the host's network: anything listening there on the host makes that start fail
# (exit 71), so say so instead of reporting a broken package.
if (exec 3<>/dev/tcp/127.0.0.1/5222) 2>/dev/null; then
    bad "127.0.0.1:5222 is in use on the host (the container shares its network): stop what listens there ($(ss -ltnpH 'sport = :5222' 2>/dev/null | tr -s ' ' | cut -c1-120)) and run again"
fi
# As docs/install.md says: apt with the local file (no network needed: no dependencies).
if c env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/kinglet.deb >"$tmp/dpkg.log" 2>&1; then ok "apt-get install ./kinglet.deb"; else bad "apt-get install: $(cat "$tmp/dpkg.log")"; fi
wait_active() {
    for _ in $(seq 1 100); do
        [ "$(c systemctl is-active kinglet 2>/dev/null || true)" = active ] && return 0
        sleep 0.1
    done
    return 1
}
if wait_active; then ok "systemctl is-active kinglet: active"; else bad "kinglet not active: $(c systemctl status kinglet 2>&1 | tail -n 15)"; fi
st="$(c systemctl is-enabled kinglet 2>&1 || true)"
[ "$st" = enabled ] && ok "systemctl is-enabled kinglet: enabled" || bad "is-enabled: $st"
st="$(prop StatusText)"
case "$st" in serving*) ok "Type=notify status: $st" ;; *) bad "status text '$st'" ;; esac
out="$(c systemd-analyze verify --man=no /lib/systemd/system/kinglet.service 2>&1)" && rc=0 || rc=$?
[ "$rc" = 0 ] && [ -z "$out" ] && ok "systemd-analyze verify (installed unit)" || bad "verify (rc $rc): $out"
score="$(c systemd-analyze security --no-pager kinglet.service 2>&1 | tail -n 1)"
c systemd-analyze security --threshold=20 kinglet.service >/dev/null 2>&1 && ok "security (online): ${score#*: }" || bad "security above 2.0: $score"
pid="$(prop MainPID)"
# MainPID is a PID of the container's namespace: look at it from inside.
uid="$(c ps -o uid= -p "$pid" 2>/dev/null | tr -d ' ' || true)"
c cat "/proc/$pid/status" >"$tmp/status" 2>/dev/null || true
caps="$(awk '/^CapEff/ {print $2}' "$tmp/status")"
nnp="$(awk '/^NoNewPrivs/ {print $2}' "$tmp/status")"
# DynamicUser= allocates from 61184..65519 (systemd's DYNAMIC_UID_MIN/MAX).
[ "${uid:-0}" -ge 61184 ] && [ "$uid" -le 65519 ] && [ "$caps" = 0000000000000000 ] && [ "$nnp" = 1 ] &&
    ok "runs as dynamic uid $uid, no capabilities, no_new_privs" ||
    bad "identity: uid '$uid' CapEff '$caps' NoNewPrivs '$nnp'"

# 4. configure as docs/install.md says: accounts, certificate, listeners
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
tls_port="$(free_port)"
c systemctl stop kinglet
for u in alice bob; do
    printf '%s\n' "$u-pw" | c kinglet user add "$u" --config /etc/kinglet/kinglet.toml >"$tmp/user.log" 2>&1 ||
        bad "user add $u: $(cat "$tmp/user.log")"
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$root/etc/kinglet/tls.key" -out "$root/etc/kinglet/tls.crt" 2>/dev/null
chmod 0600 "$root/etc/kinglet/tls.key"
sed -i -e "s/^listen = .*/listen = [\"127.0.0.1:$port\"]\ndirect_tls_listen = [\"127.0.0.1:$tls_port\"]/" \
    -e 's/^#\[tls\]/[tls]/' -e 's/^#cert = /cert = /' -e 's/^#key = /key = /' "$root/etc/kinglet/kinglet.toml"
c systemctl start kinglet || true
wait_active && ok "restarted with TLS from LoadCredential" || bad "not active after config change: $(c journalctl -u kinglet --no-pager -n 20 2>&1)"
if out="$("$py" "$repo/cross/smoke_client.py" "$port" "$tls_port" "$root/etc/kinglet/tls.crt" first 2>&1)"; then
    ok "client: TLS login, messages, pubsub publish and notification ($out)"
else
    bad "client: $out"
fi

# 5. reload keeps the process
pid="$(prop MainPID)"
c systemctl reload kinglet || bad "systemctl reload failed"
sleep 0.5
st="$(prop StatusText)"
[ "$(prop MainPID)" = "$pid" ] && [ "$(c systemctl is-active kinglet)" = active ] && case "$st" in reloaded*) true ;; *) false ;; esac &&
    ok "systemctl reload: same PID $pid, status '$st'" || bad "reload: PID $(prop MainPID) (was $pid), status '$st'"

# 6. watchdog
mkdir -p "$root/etc/systemd/system/kinglet.service.d"
printf '[Service]\nWatchdogSec=3s\nTimeoutAbortSec=2s\n' >"$root/etc/systemd/system/kinglet.service.d/watchdog.conf"
c systemctl daemon-reload
c systemctl restart kinglet
wait_active || bad "not active with the watchdog drop-in"
sleep 1
[ "$(prop NRestarts)" = 0 ] || bad "restarts before the freeze: $(prop NRestarts)"
pid="$(prop MainPID)"
since="$(c date '+%Y-%m-%d %H:%M:%S')"
c /bin/kill -STOP "$pid"
t0=$(date +%s)
newpid=""
for _ in $(seq 1 200); do
    newpid="$(prop MainPID)"
    if [ "$newpid" != "$pid" ] && [ "$newpid" != 0 ] && [ "$(c systemctl is-active kinglet 2>/dev/null || true)" = active ]; then break; fi
    sleep 0.1
done
secs=$(($(date +%s) - t0))
journal="$(c journalctl -u kinglet --no-pager --since "$since" 2>&1)"
if [ "$newpid" != "$pid" ] && [ "$(prop NRestarts)" = 1 ] && grep -q "Watchdog timeout" <<<"$journal"; then
    ok "watchdog: SIGSTOPped PID $pid killed and restarted as $newpid after ${secs}s (NRestarts 1)"
else
    bad "watchdog: PID $pid -> '$newpid', NRestarts $(prop NRestarts); journal: $journal"
fi
if out="$("$py" "$repo/cross/smoke_client.py" "$port" "$tls_port" "$root/etc/kinglet/tls.crt" again 2>&1)"; then
    ok "after the watchdog restart: store reopened, item and subscription back ($out)"
else
    bad "client after restart: $out"
fi

# A configuration error: exit 78 (EX_CONFIG), the unit fails and is not restarted in a loop.
cp "$root/etc/kinglet/kinglet.toml" "$tmp/good.toml"
echo 'domain = 42' >>"$root/etc/kinglet/kinglet.toml"
c systemctl restart kinglet >/dev/null 2>&1 || true
sleep 3
st="$(c systemctl is-active kinglet 2>/dev/null || true)"
code="$(prop ExecMainStatus)"
[ "$st" = failed ] && [ "$code" = 78 ] && [ "$(prop NRestarts)" = 0 ] &&
    ok "config error: unit $st, exit status $code, no restart loop" ||
    bad "config error: state '$st', exit status '$code', NRestarts $(prop NRestarts)"
cp "$tmp/good.toml" "$root/etc/kinglet/kinglet.toml"
c systemctl reset-failed kinglet
c systemctl start kinglet || true
wait_active && ok "fixed config: active again" || bad "not active after fixing the config"

# 7. purge
rm -rf "$root/etc/systemd/system/kinglet.service.d"
c systemctl daemon-reload
if c dpkg -P kinglet >"$tmp/dpkg.log" 2>&1; then ok "dpkg -P"; else bad "dpkg -P: $(cat "$tmp/dpkg.log")"; fi
st="$(c systemctl is-active kinglet 2>/dev/null || true)"
[ "$st" != active ] && [ ! -e "$root/usr/bin/kinglet" ] && [ ! -e "$root/lib/systemd/system/kinglet.service" ] &&
    [ ! -e "$root/usr/lib/systemd/system/kinglet.service" ] && [ ! -e "$root/etc/kinglet/kinglet.toml" ] &&
    ok "purged: service stopped ($st), binary, unit and config gone" ||
    bad "after purge: active '$st'; left: $(for f in /usr/bin/kinglet /lib/systemd/system/kinglet.service \
        /usr/lib/systemd/system/kinglet.service /etc/kinglet/kinglet.toml; do [ -e "$root$f" ] && printf '%s ' "$f"; done)"

exit "$fail"
