#!/usr/bin/env bash
# Smoke-test a cross-built kinglet under qemu-user.
#
#   cross/smoke.sh [--no-setup] TARGET...        (short names as in build.sh: aarch64 armv7 mipsel mips x86_64)
#   cross/smoke.sh [--no-setup] --unit TARGET... run the library's unit tests under qemu instead
#
# Both modes first run cross/build.sh's setup for their targets (apt packages, qemu, rustup
# target or rust-src, musl sysroot and unwind stub; cached, so a second run costs a second),
# so `--unit mips` works on a machine where nothing was set up. A setup failure stops the
# script with the step that failed. --no-setup skips it.
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
# is built for the target with the release profile but an unwinding std (see unit_one).
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

# The library's unit tests, built for the target (release profile, build-std where needed)
# and run under qemu through the cargo runner. libtest must run them in its own process:
# with -Zpanic-abort-tests it would re-exec itself per test, which needs binfmt_misc (not
# registered on these machines). So tests use std with panic_unwind, as cargo wants anyway.
#   armv7: libgcc_eh is a real unwinder (EHABI), so everything runs, #[should_panic] too.
#   MIPS:  there is no soft-float unwinder to link (Debian's libgcc_eh is hard-float and
#          needs glibc), so a test-only stub (unwind_test_stub) makes any panic abort the
#          run: a failing test still fails it, only without libtest's summary, and the
#          #[should_panic] test is skipped (libtest counts it as filtered out).
unit_one() {
    local t args up name skip=()
    t="$(triple "$1")"
    mapfile -t args < <(cargo_args "$t")
    up="$(tr 'a-z-' 'A-Z_' <<<"$t")"
    name="$(sysroot_name "$t")"
    (
        target_env "$t"
        bootstrap=""
        if build_std "$t"; then
            bootstrap=1
            # Replace build.sh's panic_abort std with one that can unwind, with unwind tables.
            flags="$(printenv "CARGO_TARGET_${up}_RUSTFLAGS")"
            export "CARGO_TARGET_${up}_RUSTFLAGS=${flags/ -C force-unwind-tables=no/}"
            for i in "${!args[@]}"; do
                [ "${args[$i]}" = "-Zbuild-std=std,panic_abort" ] && args[i]="-Zbuild-std=std,panic_unwind,panic_abort"
            done
            case "$t" in
                mips* | aarch64*)
                    # (aarch64: Debian's libgcc_eh.a needs glibc, so the stub as on MIPS.)
                    unwind_test_stub "$t" || { echo "cannot build the test unwind stub for $t"; exit 1; }
                    flags="$(printenv "CARGO_TARGET_${up}_RUSTFLAGS")"
                    export "CARGO_TARGET_${up}_RUSTFLAGS=${flags/"-L $xs/$name/unwind"/"-L $xs/$name/unwind-test"}"
                    # qemu-mips 7.2 (Debian 12) has no timerfd_settime64 (o32 syscall 4411:
                    # "Unknown syscall"), and rustix's fallback to the old call does not
                    # happen under it, so an async-io Timer never fires and this test (the
                    # only one that sleeps on the reactor) hangs. Real MIPS kernels >= 5.1
                    # have the call; armv7 under qemu runs the test.
                    # The #[should_panic] tests panic by design: with the stub, a panic
                    # aborts the whole run, so they are skipped here (armv7 runs them).
                    skip=(--skip store::tests::truncated_file_panics_inside_redb
                        --skip xml::tests::writer_end_without_start_panics
                        --skip pubsub::commit::tests::slow_commit_does_not_stall_other_clients)
                    ;;
            esac
        fi
        cd "$repo"
        # One panic strategy for std, the deps and the harness (else two copies of core).
        RUSTC_BOOTSTRAP="$bootstrap" CARGO_TARGET_DIR="$CARGO_TARGET_DIR/unit" CARGO_PROFILE_RELEASE_PANIC=unwind nice -n 19 \
            cargo test --lib "${args[@]}" -- --test-threads=2 "${skip[@]}"
    )
}

# A libunwind.a for MIPS test binaries: every _Unwind_* entry point std's panic_unwind
# links, none of which unwinds. _Unwind_RaiseException reports _URC_END_OF_STACK, on which
# std prints "failed to initiate panic" and aborts.
unwind_test_stub() {
    local t="$1" name prefix dir
    name="$(sysroot_name "$t")"
    prefix="$(gnu_prefix "$t")"
    dir="$xs/$name/unwind-test"
    [ -n "$name" ] || die "no sysroot for $t"
    [ -f "$dir/libunwind.a" ] && return 0
    mkdir -p "$dir"
    cat >"$dir/stub.c" <<'EOF'
#include <stdint.h>
#include <stdlib.h>
int _Unwind_RaiseException(void *e) { (void)e; return 5; }
void _Unwind_Resume(void *e) { (void)e; abort(); }
void _Unwind_DeleteException(void *e) { (void)e; }
int _Unwind_Backtrace(void *f, void *a) { (void)f; (void)a; return 5; }
uintptr_t _Unwind_GetIP(void *c) { (void)c; return 0; }
uintptr_t _Unwind_GetIPInfo(void *c, int *before) { (void)c; *before = 0; return 0; }
uintptr_t _Unwind_GetCFA(void *c) { (void)c; return 0; }
uintptr_t _Unwind_GetGR(void *c, int i) { (void)c; (void)i; return 0; }
void _Unwind_SetGR(void *c, int i, uintptr_t v) { (void)c; (void)i; (void)v; }
void _Unwind_SetIP(void *c, uintptr_t v) { (void)c; (void)v; }
uintptr_t _Unwind_GetLanguageSpecificData(void *c) { (void)c; return 0; }
uintptr_t _Unwind_GetRegionStart(void *c) { (void)c; return 0; }
uintptr_t _Unwind_GetDataRelBase(void *c) { (void)c; return 0; }
uintptr_t _Unwind_GetTextRelBase(void *c) { (void)c; return 0; }
void *_Unwind_FindEnclosingFunction(void *pc) { (void)pc; return 0; }
EOF
    local fl=-O2
    case "$t" in mips*) fl="-msoft-float -O2" ;; esac
    # shellcheck disable=SC2086 # $fl is one or two flags
    "$xs/$name/bin/musl-gcc" $fl -c "$dir/stub.c" -o "$dir/stub.o" ||
        { log "error: compiling $dir/stub.c with $xs/$name/bin/musl-gcc failed"; return 1; }
    "$prefix-ar" rcs "$dir/libunwind.a" "$dir/stub.o" ||
        { log "error: $prefix-ar failed for $dir/libunwind.a"; return 1; }
}

smoke_main() {
    local mode=smoke results=() failed=0 t start do_setup=1 triples=()
    [ "${1:-}" = --no-setup ] && { do_setup=0; shift; }
    [ "${1:-}" = --unit ] && { mode=unit; shift; }
    [ "${1:-}" = --no-setup ] && { do_setup=0; shift; }
    [ $# -gt 0 ] || { sed -n '2,26p' "${BASH_SOURCE[0]}"; exit 2; }
    for t in "$@"; do triples+=("$(triple "$t")"); done
    # Not inside `if`: there set -e would not stop a failed setup step.
    if [ "$do_setup" = 1 ]; then
        setup "${triples[@]}"
    fi
    command -v "$py" >/dev/null 2>&1 || die "$py not found (set PYTHON)"
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
