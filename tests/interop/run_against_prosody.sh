#!/usr/bin/env bash
# Developer tool: prove tests/interop/slixmpp_core.py, slixmpp_sm.py and aioxmpp_sm.py
# right against a reference XMPP server (Prosody 0.12 from Debian, with its mod_smacks and
# pubsub component) before blaming Kinglet for a failure.
#
#   tests/interop/run_against_prosody.sh               # core: STARTTLS, then direct TLS;
#                                                      # then the XEP-0198 scripts
#   tests/interop/run_against_prosody.sh --verbose     # extra args go to slixmpp_core.py
#
# Exit status: 0 only if every run passed.
# Env: KINGLET_PYTHON (a python with requirements.txt installed; otherwise a venv is
# made at ${KINGLET_VENV:-$HOME/.cache/kinglet-venv}), KEEP_TMP=1 keeps the temp dir,
# SKIP_DIRECT_TLS=1 runs only the STARTTLS variant, SKIP_SM=1 skips the XEP-0198 scripts.
#
# What it took to make Prosody a fair reference (Debian bookworm, prosody 0.12.3):
# - The package's postinst cannot start the system service here (no init system;
#   policy-rc.d refuses) which is what we want: nothing system-wide is used. Our own
#   instance runs in the foreground with `prosody --config FILE -F` (0.12 accepts
#   --config; -F = no daemonize; the pid is simply $!).
# - As root, prosodyctl switches to the `prosody` user unless the config says
#   run_as_root = true; that user could not read our private temp dir, so the config
#   sets it (the prosody binary itself never switches user). Harmless when not root.
# - Prosody 0.12's internal_hashed stores SCRAM-SHA-1 unless password_hash = "SHA-256";
#   with it, it offers SCRAM-SHA-256 (plus PLAIN; -PLUS variants only with TLS 1.2 where
#   LuaSec has tls-unique). Users must be created after that option is set.
# - s2s is auto-loaded in 0.12; modules_disabled = { "s2s" } keeps port 5269 closed.
#   All listeners are bound to 127.0.0.1 only (interfaces/local_interfaces).
# - The certificate: global `ssl` (used by the STARTTLS and direct TLS listeners alike)
#   plus `certificates` pointing at a dir with localhost.crt/.key for SNI lookups.
# - Direct TLS (XEP-0368): c2s_direct_tls_ports = { N } (0.12 name; legacy_ssl_ports is
#   the old alias).
# - XEP-0198: "smacks" (in 0.12's core modules) with resumption; pub-sub is the
#   `Component "pubsub.localhost" "pubsub"`, where only admins create nodes, so the
#   publisher (bob) is an admin.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
domain=localhost

log() { printf '[prosody-interop] %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

# ---- prosody and openssl -------------------------------------------------------------
need=()
command -v prosody >/dev/null 2>&1 || need+=(prosody)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    # The service cannot (and must not) start here; postinst's failure to start it is harmless.
    as_root apt-get install -y -qq "${need[@]}" >/dev/null
fi
log "prosody $(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo '(version unknown)')"

# ---- python with slixmpp -------------------------------------------------------------
if [ -z "${KINGLET_PYTHON:-}" ]; then
    venv="${KINGLET_VENV:-$HOME/.cache/kinglet-venv}"
    if [ ! -x "$venv/bin/python" ]; then
        log "creating venv $venv"
        python3 -m venv "$venv"
    fi
    # Offline check that every pinned name==version is installed; pip only if not.
    if ! "$venv/bin/python" - "$here/requirements.txt" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    name, _, want = line.split("#", 1)[0].strip().partition("==")
    if not name:
        continue
    try:
        if version(name.strip()) != want.strip():
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
    then
        log "installing $here/requirements.txt into $venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
    fi
    KINGLET_PYTHON="$venv/bin/python"
fi
"$KINGLET_PYTHON" -c 'import slixmpp' || { log "no slixmpp in $KINGLET_PYTHON"; exit 1; }

# ---- private prosody instance ----------------------------------------------------------
tmp="$(mktemp -d /tmp/kinglet-prosody.XXXXXX)"
prosody_pid=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    if [ -n "$prosody_pid" ] && kill -0 "$prosody_pid" 2>/dev/null; then
        kill "$prosody_pid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$prosody_pid" 2>/dev/null || break
            sleep 0.3
        done
        kill -9 "$prosody_pid" 2>/dev/null || true
    fi
    if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

mkdir -p "$tmp/data" "$tmp/certs"
chmod 700 "$tmp"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$domain" -addext "subjectAltName=DNS:$domain" \
    -keyout "$tmp/certs/$domain.key" -out "$tmp/certs/$domain.crt" 2>/dev/null

# Two free loopback ports (kernel-chosen, released just before prosody binds them).
read -r c2s_port tls_port < <("$KINGLET_PYTHON" - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)

cfg="$tmp/prosody.cfg.lua"
cat >"$cfg" <<EOF
-- Private Prosody config written by tests/interop/run_against_prosody.sh
run_as_root = true
pidfile = "$tmp/prosody.pid"
data_path = "$tmp/data"
log = { debug = "$tmp/prosody.log" }

interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { $c2s_port }
c2s_direct_tls_ports = { $tls_port }

modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "smacks" }
modules_disabled = { "s2s" }
allow_registration = false
admins = { "bob@$domain" }
smacks_hibernation_time = 20

c2s_require_encryption = true
authentication = "internal_hashed"
password_hash = "SHA-256"
storage = "internal"

certificates = "$tmp/certs"
ssl = {
    certificate = "$tmp/certs/$domain.crt";
    key = "$tmp/certs/$domain.key";
}

VirtualHost "$domain"
Component "pubsub.$domain" "pubsub"
EOF

pass1="alice-$RANDOM-$RANDOM"
pass2="bob-$RANDOM-$RANDOM"
prosodyctl --config "$cfg" register alice "$domain" "$pass1"
prosodyctl --config "$cfg" register bob "$domain" "$pass2"

log "starting prosody: c2s (STARTTLS) 127.0.0.1:$c2s_port, direct TLS 127.0.0.1:$tls_port, data in $tmp"
prosody --config "$cfg" -F >"$tmp/prosody.out" 2>&1 &
prosody_pid=$!

wait_port() {
    "$KINGLET_PYTHON" - "$1" <<'EOF'
import socket, sys, time
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
EOF
}
for p in "$c2s_port" "$tls_port"; do
    if ! wait_port "$p"; then
        log "prosody did not listen on $p; its output and log:"
        cat "$tmp/prosody.out" "$tmp/prosody.log" >&2 || true
        exit 1
    fi
done

status=0
run_core() {
    local name="$1"; shift
    log "== slixmpp_core.py ($name): $*"
    if "$KINGLET_PYTHON" "$here/slixmpp_core.py" --host 127.0.0.1 --domain "$domain" \
        --user1 alice --pass1 "$pass1" --user2 bob --pass2 "$pass2" \
        --cafile "$tmp/certs/$domain.crt" "$@"; then
        log "== $name: PASS"
    else
        log "== $name: FAIL (prosody log tail follows)"
        tail -n 40 "$tmp/prosody.log" >&2 || true
        status=1
    fi
}

run_core starttls --port "$c2s_port" "$@"
if [ "${SKIP_DIRECT_TLS:-0}" != 1 ]; then
    run_core direct-tls --port "$tls_port" --direct-tls "$@"
fi
if [ "${SKIP_SM:-0}" != 1 ]; then
    for script in slixmpp_sm.py aioxmpp_sm.py; do
        for cut in reset silent; do
            log "== $script --cut $cut"
            if "$KINGLET_PYTHON" "$here/$script" --host 127.0.0.1 --domain "$domain" \
                --port "$c2s_port" --user1 alice --pass1 "$pass1" --user2 bob --pass2 "$pass2" \
                --cafile "$tmp/certs/$domain.crt" --cut "$cut"; then
                log "== $script --cut $cut: PASS"
            else
                log "== $script --cut $cut: FAIL (prosody log tail follows)"
                tail -n 40 "$tmp/prosody.log" >&2 || true
                status=1
            fi
        done
    done
fi
exit "$status"
