#!/usr/bin/env bash
# A private Prosody 0.12 or ejabberd 23.01 (Debian's packages) on loopback that hosts one
# XEP-0114 external component, for tests/e2e/component.rs and docs/component.md.
#
#   component_server.sh start prosody|ejabberd
#   component_server.sh stop  prosody|ejabberd
#
# Env: SRV_DIR (all state; required), C2S_PORT, COMPONENT_PORT (required),
# COMPONENT_HOST (default kpubsub.localhost), COMPONENT_SECRET (required),
# USERS (default "alice bob"; password pass-<user>), PROSODY_LOGLEVEL (default info), and for ejabberd EJ_EPMD_PORT (default
# 36759) and EJ_DIST_MIN/EJ_DIST_MAX (default 36760-36799): a private epmd and Erlang
# distribution window, all on 127.0.0.1. The domain is `localhost`. Nothing system-wide is
# used or started; stop acts only on the PID files under SRV_DIR (and ejabberdctl/epmd of
# our own node and port). Adapted from the tested recipes of the project's peers notes.
set -euo pipefail
kind="${2:?usage: $0 start|stop prosody|ejabberd}"
: "${SRV_DIR:?}"
if [ "$1" = start ]; then : "${C2S_PORT:?}" "${COMPONENT_PORT:?}" "${COMPONENT_SECRET:?}"; fi
COMPONENT_HOST="${COMPONENT_HOST:-kpubsub.localhost}"
USERS="${USERS:-alice bob}"
EJ_EPMD_PORT="${EJ_EPMD_PORT:-36759}"
EJ_DIST_MIN="${EJ_DIST_MIN:-36760}"
EJ_DIST_MAX="${EJ_DIST_MAX:-36799}"
mkdir -p "$SRV_DIR"

wait_port() { # port timeout_s
  local end=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -le "$end" ]; do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# ---- Prosody ---------------------------------------------------------------------------
PR_CFG="$SRV_DIR/prosody.cfg.lua"; PR_PID="$SRV_DIR/prosody.pid"
prosody_start() {
  mkdir -p "$SRV_DIR/data" "$SRV_DIR/certs"
  # Listener options are global only: keep them before the first VirtualHost/Component.
  cat > "$PR_CFG" <<CFG
run_as_root = true
pidfile = "$SRV_DIR/prosody-internal.pid"
data_path = "$SRV_DIR/data"
certificates = "$SRV_DIR/certs"
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { $C2S_PORT }
c2s_direct_tls_ports = { }
s2s_ports = { }
http_ports = { }
https_ports = { }
component_ports = { $COMPONENT_PORT }
component_interfaces = { "127.0.0.1" }
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; }
modules_disabled = { "s2s"; "offline"; "tls" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
log = { { levels = { min = "${PROSODY_LOGLEVEL:-info}" }, to = "file", filename = "$SRV_DIR/prosody.log" }; }

VirtualHost "localhost"

Component "$COMPONENT_HOST"
  component_secret = "$COMPONENT_SECRET"
CFG
  for u in $USERS; do prosodyctl --config "$PR_CFG" register "$u" localhost "pass-$u" >/dev/null; done
  prosody --config "$PR_CFG" -F >>"$SRV_DIR/prosody.stdout" 2>&1 &
  echo $! > "$PR_PID"
  wait_port "$C2S_PORT" 20 && wait_port "$COMPONENT_PORT" 20 || {
    echo "prosody did not open its ports; log:" >&2; tail -30 "$SRV_DIR/prosody.log" >&2 || true
    prosody_stop; exit 1; }
  echo "prosody pid=$(cat "$PR_PID") c2s=127.0.0.1:$C2S_PORT component=127.0.0.1:$COMPONENT_PORT"
}
prosody_stop() {
  [ -s "$PR_PID" ] || return 0
  local pid; pid="$(cat "$PR_PID")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$PR_PID"
}

# ---- ejabberd --------------------------------------------------------------------------
EJ_NODE=kcomp
D="$SRV_DIR/$EJ_NODE"
ctl() { ejabberdctl -d "$D" -l "$D/log" "$@"; }
ejabberd_start() {
  mkdir -p "$D/spool" "$D/log"
  if [ ! -s "$SRV_DIR/.erlang.cookie" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -dc A-Za-z0-9 > "$SRV_DIR/.erlang.cookie")
    chmod 400 "$SRV_DIR/.erlang.cookie"
  fi
  printf '{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n' > "$D/inetrc"
  cat > "$D/ejabberdctl.cfg" <<CFG
EXEC_CMD=as_current_user
ERLANG_NODE=$EJ_NODE@localhost
SPOOL_DIR=$D/spool
EJABBERD_PID_PATH=$D/ejabberd.pid
EJABBERD_BYPASS_WARNINGS=true
FIREWALL_WINDOW=$EJ_DIST_MIN-$EJ_DIST_MAX
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {127,0,0,1}"
export HOME=$SRV_DIR
export ERL_EPMD_PORT=$EJ_EPMD_PORT
export ERL_EPMD_ADDRESS=127.0.0.1
CFG
  # The component domain is NOT in hosts: its route exists once the component is accepted.
  cat > "$D/ejabberd.yml" <<YML
loglevel: warning
log_rotate_count: 0
hosts:
  - localhost
certfiles: []
listen:
  -
    port: $C2S_PORT
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    starttls_required: false
  -
    port: $COMPONENT_PORT
    ip: "127.0.0.1"
    module: ejabberd_service
    access: all
    hosts:
      "$COMPONENT_HOST":
        password: "$COMPONENT_SECRET"
s2s_access: none
auth_method: internal
auth_password_format: plain
acl:
  local:
    user_regexp: ""
access_rules:
  c2s:
    allow: all
api_permissions:
  "console commands":
    from: [ejabberd_ctl]
    who: all
    what: "*"
modules:
  mod_admin_extra: {}
  mod_disco: {}
  mod_roster: {}
  mod_ping: {}
YML
  ctl start
  wait_port "$C2S_PORT" 60 || { echo "ejabberd: c2s port $C2S_PORT not open; see $D/log" >&2; ejabberd_stop; exit 1; }
  local ok=""
  for _ in $(seq 1 60); do if ctl status >/dev/null 2>&1; then ok=1; break; fi; sleep 0.2; done
  [ -n "$ok" ] || { echo "ejabberd failed to start; see $D/log" >&2; ejabberd_stop; exit 1; }
  for u in $USERS; do ctl register "$u" localhost "pass-$u" >/dev/null; done
  echo "ejabberd pid=$(cat "$D/ejabberd.pid") c2s=127.0.0.1:$C2S_PORT component=127.0.0.1:$COMPONENT_PORT"
}
ejabberd_stop() {
  local pid=""
  [ -s "$D/ejabberd.pid" ] && pid="$(cat "$D/ejabberd.pid")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    ctl stop >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  # Our private epmd only, and only when no node is registered there any more.
  if ! ERL_EPMD_PORT=$EJ_EPMD_PORT epmd -names 2>/dev/null | grep -q '^name '; then
    ERL_EPMD_PORT=$EJ_EPMD_PORT epmd -kill >/dev/null 2>&1 || true
  fi
}

case "$1:$kind" in
  start:prosody) prosody_start ;;
  stop:prosody) prosody_stop ;;
  start:ejabberd) ejabberd_start ;;
  stop:ejabberd) ejabberd_stop ;;
  *) echo "usage: $0 start|stop prosody|ejabberd" >&2; exit 2 ;;
esac
