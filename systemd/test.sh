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
# 5. If a .deb built by `cargo deb` is given in $KINGLET_DEB: its control files and scripts
#    (enable + start on install, stop on removal, purge), conffiles, contents, Architecture,
#    and that the binary inside is a static build for that architecture.
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
# The gate itself: the same unit without its sandboxing must fail it.
grep -vE '^(Protect|Private|Restrict|SystemCall|Capability|Ambient|NoNewPriv|Lock|Memory|DynamicUser|UMask|RemoveIPC|Device|Keyring|ProcSubset)' \
    "$tmp/kinglet.service" >"$tmp/bare.service"
mv "$tmp/bare.service" "$tmp/kinglet.service"
if ! systemd-analyze security --offline=yes --threshold=20 "$tmp/kinglet.service" >/dev/null 2>&1; then
    ok "security gate fails an unhardened copy"
else
    bad "security gate passes an unhardened copy"
fi

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
    # The Architecture field matches the file name (kinglet_<version>_<arch>.deb) and the
    # binary inside is built for it.
    arch="$(dpkg-deb -f "$KINGLET_DEB" Architecture)"
    name_arch="$(basename "$KINGLET_DEB" .deb)"
    name_arch="${name_arch##*_}"
    if [ "$arch" = "$name_arch" ]; then ok "deb Architecture: $arch"; else bad "deb Architecture $arch, file name says $name_arch"; fi
    dpkg-deb --fsys-tarfile "$KINGLET_DEB" | tar -xOf - ./usr/bin/kinglet >"$tmp/deb-kinglet"
    case "$arch" in
        amd64) want="x86-64" ;;
        arm64) want="ARM aarch64" ;;
        armhf) want="ARM, EABI5" ;;
        *) want="$arch" ;;
    esac
    desc="$(file -b "$tmp/deb-kinglet")"
    case "$desc" in *"$want"*statically\ linked* | *"$want"*static-pie*) ok "deb binary: $want, static" ;; *) bad "deb binary for $arch: $desc" ;; esac
    # The maintainer scripts enable the unit on install and start it (restart on upgrade).
    if grep -q "deb-systemd-helper enable kinglet.service" "$tmp/control/postinst" &&
        grep -q "deb-systemd-invoke \$_dh_action kinglet.service" "$tmp/control/postinst" &&
        grep -q "_dh_action=start" "$tmp/control/postinst"; then
        ok "deb postinst enables and starts the unit"
    else
        bad "deb postinst does not enable and start the unit"
    fi
    if grep -q "deb-systemd-invoke stop kinglet.service" "$tmp/control/prerm"; then ok "deb prerm stops the unit"; else bad "deb prerm does not stop the unit"; fi
    if grep -q "deb-systemd-helper purge kinglet.service" "$tmp/control/postrm"; then ok "deb postrm purges the unit state"; else bad "deb postrm does not purge the unit state"; fi
    for p in ./usr/bin/kinglet ./lib/systemd/system/kinglet.service ./etc/kinglet/kinglet.toml; do
        if grep -q " $p\$" "$tmp/contents" || grep -q " ${p/.\/lib/.\/usr\/lib}\$" "$tmp/contents"; then ok "deb has $p"; else bad "deb lacks $p"; fi
    done
fi

exit "$fail"
