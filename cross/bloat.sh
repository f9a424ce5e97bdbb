#!/usr/bin/env bash
# What takes the space in a cross-built kinglet.
#
#   cross/bloat.sh [TARGET] [N]      (default: aarch64, 25 lines)
#
# Builds TARGET exactly as cross/build.sh does, but unstripped and in its own target dir
# ($CARGO_TARGET_DIR/bloat), and prints cargo-bloat's per-crate and per-function tables
# (`cargo install --locked cargo-bloat` if it is missing), then the ELF sections of the
# stripped release binary from cross/build.sh (`size -A`), if it exists. Sizes are of .text
# (code) unless a line says otherwise; the stripped file also holds .rodata, .data.rel.ro,
# .eh_frame and the like.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cross/build.sh
. "$here/build.sh"

t="$(triple "${1:-aarch64}")"
n="${2:-25}"
command -v cargo-bloat >/dev/null 2>&1 || cargo install --locked cargo-bloat >&2
stripped="$CARGO_TARGET_DIR/$t/release/kinglet"
mapfile -t args < <(cargo_args "$t")
(
    target_env "$t"
    export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/bloat"
    export CARGO_PROFILE_RELEASE_STRIP=false
    if build_std "$t"; then
        # shellcheck disable=SC2031 # this subshell is the scope these are meant for
        export RUSTC_BOOTSTRAP=1
        # shellcheck disable=SC2031
        export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-z}"
    fi
    cd "$repo"
    echo "== $t: per crate (.text) =="
    nice -n 19 cargo bloat "${args[@]}" --bin kinglet --crates -n "$n" 2>/dev/null
    echo
    echo "== $t: largest functions (.text) =="
    nice -n 19 cargo bloat "${args[@]}" --bin kinglet -n "$n" 2>/dev/null
)
if [ -f "$stripped" ]; then
    echo
    echo "== $t: sections of the stripped binary ($(stat -c %s "$stripped") bytes) =="
    prefix="$(gnu_prefix "$t")"
    sz=size
    command -v "$prefix-size" >/dev/null 2>&1 && sz="$prefix-size"
    "$sz" -A "$stripped" | awk 'NR > 2 && $2 > 0 { printf "%-22s %9d\n", $1, $2 }'
fi
