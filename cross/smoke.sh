#!/usr/bin/env bash
# Smoke-test a cross-built kinglet under qemu-user.
#
#   cross/smoke.sh TARGET...        (short names as in build.sh: aarch64 armv7 mipsel mips x86_64)
#   cross/smoke.sh --unit TARGET... run the library's unit tests under qemu instead
#
# For each target, with the binary from cross/build.sh ($CARGO_TARGET_DIR/<triple>/release):
#   1. `kinglet --version` and `kinglet check-config` on a temp config (127.0.0.1, port 0,
#      a self-signed certificate made with openssl, data in a temp dir);
#   2. `kinglet user add` alice and bob (SCRAM key derivation runs on the target's code);
#   3. starts the daemon; cross/smoke_client.py logs alice in over direct TLS and bob over
#      plain TCP (SASL PLAIN, allowed on loopback), sends a message each way, then alice
#      creates pubsub node 'smoke' at pubsub.localhost, bob subscribes, alice publishes and
#      bob must receive the notification;
#   4. SIGTERM: the daemon must exit 0;
#   5. restarts it on the same data directory: the store reopens, both accounts log in again,
#      bob retrieves the item published before the restart, alice publishes another one and
#      bob's stored subscription delivers it; `kinglet user list` still shows both accounts.
# Prints PASS/FAIL per target and exits non-zero if any failed. The test binary of `--unit`
# is built like the release binary (same profile, build-std where needed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cross/build.sh
. "$here/build.sh"
py="${PYTHON:-python3}"

# Run the target binary (under qemu unless it is the host's architecture).
run_bin() {
    local q
    q="$(qemu_cmd "$target")"
    # shellcheck disable=SC2086 # $q is a command plus options
    $q "$bin" "$@"
}

# Like run_bin, replacing the current (sub)shell.
exec_bin() {
    local q
    q="$(qemu_cmd "$target")"
    # shellcheck disable=SC2086 # $q is a command plus options
    exec $q "$bin" "$@"
}

# Start the daemon in the background; sets $pid, $port and $tls_port.
start_daemon() {
    : >"$tmp/stdout"
    # exec: $! must be the daemon (qemu) itself, not a subshell, so that SIGTERM reaches it.
    (KINGLET_PRINT_PORTS=1 exec_bin run --config "$tmp/kinglet.toml" >"$tmp/stdout" 2>>"$tmp/stderr") &
    pid=$!
    local i
    for i in $(seq 1 300); do
        port=$(awk '$1 == "LISTENING" && $2 == "c2s" { n = split($3, a, ":"); print a[n] }' "$tmp/stdout")
        tls_port=$(awk '$1 == "LISTENING" && $2 == "direct_tls" { n = split($3, a, ":"); print a[n] }' "$tmp/stdout")
        [ -n "$port" ] && [ -n "$tls_port" ] && return 0
        kill -0 "$pid" 2>/dev/null || { echo "daemon exited early"; return 1; }
        sleep 0.1
        : "$i"
    done
    echo "daemon did not report its ports"
    return 1
}

stop_daemon() {
    kill -TERM "$pid"
    local rc=0
    wait "$pid" || rc=$?
    pid=""
    [ "$rc" = 0 ] || { echo "exit status $rc after SIGTERM (want 0)"; return 1; }
}

cleanup() {
    if [ -n "${pid:-}" ]; then kill -9 "$pid" 2>/dev/null || true; fi
    if [ -n "${tmp:-}" ]; then rm -rf "$tmp"; fi
}

# One target, in a subshell so that its EXIT trap cleans up. Every step checks its status
# explicitly: `set -e` does not apply inside a function called from `if`.
smoke_one() (
    target="$(triple "$1")"
    bin="$CARGO_TARGET_DIR/$target/release/kinglet"
    [ -x "$bin" ] || { echo "no binary $bin (run cross/build.sh $1 first)"; return 1; }
    tmp="$(mktemp -d)"
    pid=""
    trap cleanup EXIT
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null || { echo "openssl failed"; return 1; }
    cat >"$tmp/kinglet.toml" <<EOF
domain = "localhost"
data_dir = "$tmp/data"
log_level = "info"
[c2s]
listen = ["127.0.0.1:0"]
direct_tls_listen = ["127.0.0.1:0"]
[tls]
cert = "cert.pem"
key = "key.pem"
[auth]
scram_iterations = 4096
EOF
    run_bin --version | grep -q "^kinglet " || { echo "--version failed"; return 1; }
    run_bin check-config --config "$tmp/kinglet.toml" >/dev/null || { echo "check-config failed"; return 1; }
    local u
    for u in alice bob; do
        run_bin user add "$u" --password "$u-pw" --config "$tmp/kinglet.toml" >/dev/null ||
            { echo "user add $u failed"; return 1; }
    done
    start_daemon || return 1
    "$py" "$here/smoke_client.py" "$port" "$tls_port" "$tmp/cert.pem" first || return 1
    stop_daemon || return 1
    # The store reopens after a clean stop, with the accounts in it.
    start_daemon || return 1
    "$py" "$here/smoke_client.py" "$port" 0 "$tmp/cert.pem" again || return 1
    stop_daemon || return 1
    run_bin user list --config "$tmp/kinglet.toml" | tr '\n' ' ' | grep -q "alice.*bob" ||
        { echo "user list lost the accounts"; return 1; }
    if grep -Eq "ERROR|panicked" "$tmp/stderr"; then
        echo "errors in the daemon log:"; cat "$tmp/stderr"; return 1
    fi
    echo "$target: login, messages, TLS, pubsub publish/notify, clean stop and store reopen ok"
)

# The library's unit tests, built like the release binary and run under qemu. With build-std
# there is no unwinder (panic=abort, stub libunwind), so libtest runs each test in its own
# process (-Zpanic-abort-tests), which also keeps #[should_panic] working.
unit_one() {
    local t args up
    t="$(triple "$1")"
    mapfile -t args < <(cargo_args "$t")
    up="$(tr 'a-z-' 'A-Z_' <<<"$t")"
    (
        target_env "$t"
        bootstrap=""
        if build_std "$t"; then
            bootstrap=1
            args+=(-Zpanic-abort-tests)
            export "CARGO_TARGET_${up}_RUSTFLAGS=$(printenv "CARGO_TARGET_${up}_RUSTFLAGS") -C panic=abort"
        fi
        cd "$repo"
        RUSTC_BOOTSTRAP="$bootstrap" nice -n 19 cargo test --lib "${args[@]}" -- --test-threads=2
    )
}

smoke_main() {
    local mode=smoke results=() failed=0 t start
    [ "${1:-}" = --unit ] && { mode=unit; shift; }
    [ $# -gt 0 ] || { sed -n '2,19p' "${BASH_SOURCE[0]}"; exit 2; }
    for t in "$@"; do
        start=$(date +%s)
        if "${mode}_one" "$t"; then
            results+=("PASS $mode $(triple "$t") ($(($(date +%s) - start))s)")
        else
            results+=("FAIL $mode $(triple "$t")")
            failed=1
        fi
    done
    printf '%s\n' "${results[@]}"
    return "$failed"
}

smoke_main "$@"
