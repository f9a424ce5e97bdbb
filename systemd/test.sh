#!/usr/bin/env bash
# Static checks of the systemd packaging; needs no running systemd (PID 1 may be anything).
#
#   systemd/test.sh [KINGLET_BINARY]
#
# 1. `systemd-analyze verify` of kinglet.service fails the test on ANY output: unknown keys
#    and unparsable values are only warnings there and leave its exit status 0. ExecStart
#    must name an existing file, so a temp copy points it at KINGLET_BINARY (default:
#    target/release/kinglet, else target/debug/kinglet).
# 2. `systemd-analyze security --offline=yes --threshold=20`: exposure score at most 2.0.
# 3. The unit has the settings the packaging promises (Type=notify, watchdog, reload, ...).
# 4. kinglet.toml passes `kinglet check-config`, also with its [tls] section enabled.
# 5. If a .deb built by `cargo deb` is given in $KINGLET_DEB, its control files are checked.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
bin="${1:-}"
if [ -z "$bin" ]; then
    for b in "$repo/target/release/kinglet" "$repo/target/debug/kinglet"; do
        [ -x "$b" ] && { bin="$b"; break; }
    done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "no kinglet binary; build first or pass its path" >&2
    exit 1
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { printf 'ok   %s\n' "$*"; }
bad() { printf 'FAIL %s\n' "$*"; fail=1; }

# 1. verify, any output is a failure
sed "s#/usr/bin/kinglet#$bin#g" "$here/kinglet.service" >"$tmp/kinglet.service"
out="$(cd "$tmp" && systemd-analyze verify --man=no "$tmp/kinglet.service" 2>&1)" && rc=0 || rc=$?
if [ "$rc" = 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify"; else bad "systemd-analyze verify (rc $rc): $out"; fi

# The check itself must catch warnings: a unit with an unknown key has to fail it.
printf '[Service]\nBogusDirective=1\n' >>"$tmp/kinglet.service"
out="$(cd "$tmp" && systemd-analyze verify --man=no "$tmp/kinglet.service" 2>&1)" || true
if [ -n "$out" ]; then ok "verify reports an unknown key (the gate works)"; else bad "verify silent on a bogus key"; fi

# 2. exposure score
sed "s#/usr/bin/kinglet#$bin#g" "$here/kinglet.service" >"$tmp/kinglet.service"
score="$(systemd-analyze security --offline=yes --threshold=20 "$tmp/kinglet.service" 2>&1 | tail -n 1)" && rc=0 || rc=$?
if [ "$rc" = 0 ]; then ok "security: ${score#*: }"; else bad "security above 2.0: $score"; fi

# 3. promised settings
# shellcheck disable=SC2016 # $MAINPID is literal unit text
for kv in Type=notify NotifyAccess=main WatchdogSec= Restart=on-failure DynamicUser=yes \
    StateDirectory=kinglet ConfigurationDirectory=kinglet LoadCredential=tls.key: \
    'ExecReload=/bin/kill -HUP $MAINPID' 'ExecStart=/usr/bin/kinglet run --config /etc/kinglet/kinglet.toml' \
    WantedBy=multi-user.target; do
    if grep -qF -- "$kv" "$here/kinglet.service"; then ok "unit has $kv"; else bad "unit lacks $kv"; fi
done

# 4. the default config, as shipped and with TLS enabled
if "$bin" check-config --config "$here/kinglet.toml" >/dev/null 2>"$tmp/err"; then
    ok "kinglet.toml passes check-config"
else
    bad "kinglet.toml: $(cat "$tmp/err")"
fi
if command -v openssl >/dev/null 2>&1; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=localhost -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
    sed -e 's/^#\[tls\]/[tls]/' -e "s#^\#cert = .*#cert = \"$tmp/tls.crt\"#" \
        -e "s#^\#key = .*#key = \"$tmp/tls.key\"#" "$here/kinglet.toml" >"$tmp/tls.toml"
    if grep -q '^\[tls\]' "$tmp/tls.toml" && "$bin" check-config --config "$tmp/tls.toml" >/dev/null 2>"$tmp/err"; then
        ok "kinglet.toml with [tls] enabled passes check-config"
    else
        bad "kinglet.toml with [tls]: $(cat "$tmp/err")"
    fi
fi

# 5. a .deb, if one was built
if [ -n "${KINGLET_DEB:-}" ]; then
    dpkg-deb -e "$KINGLET_DEB" "$tmp/control"
    dpkg-deb -c "$KINGLET_DEB" >"$tmp/contents"
    for f in postinst prerm postrm; do
        if grep -q kinglet.service "$tmp/control/$f" 2>/dev/null; then ok "deb $f handles kinglet.service"; else bad "deb $f missing or ignores the unit"; fi
    done
    if grep -qx /etc/kinglet/kinglet.toml "$tmp/control/conffiles"; then ok "deb conffile"; else bad "deb conffiles lacks /etc/kinglet/kinglet.toml"; fi
    for p in ./usr/bin/kinglet ./lib/systemd/system/kinglet.service ./etc/kinglet/kinglet.toml; do
        if grep -q " $p\$" "$tmp/contents" || grep -q " ${p/.\/lib/.\/usr\/lib}\$" "$tmp/contents"; then ok "deb has $p"; else bad "deb lacks $p"; fi
    done
fi

exit "$fail"
