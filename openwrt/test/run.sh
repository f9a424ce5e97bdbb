#!/bin/sh
# shellcheck shell=dash
# Runs openwrt/files/kinglet.init against the procd/UCI stubs (stubs.sh) under busybox ash
# (or the shell in $TEST_SH), and compares what it records and generates with expected/.
#
#   openwrt/test/run.sh [KINGLET_BINARY]
#
# With a kinglet binary (default: target/debug or target/release, if built), every generated
# TOML must also pass `kinglet check-config`. Set UPDATE=1 to rewrite the expected files.
set -eu

here="$(cd "$(dirname "$0")" && pwd)"
init="$here/../files/kinglet.init"
shell="${TEST_SH:-busybox ash}"
bin="${1:-}"
if [ -z "$bin" ]; then
	for b in "$here/../../target/debug/kinglet" "$here/../../target/release/kinglet"; do
		if [ -x "$b" ]; then bin="$b"; break; fi
	done
fi
fail=0
pem="$(mktemp -d)"
trap 'rm -rf "$pem"' EXIT
if command -v openssl >/dev/null 2>&1; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
		-subj /CN=localhost -keyout "$pem/a.key" -out "$pem/a.crt" 2>/dev/null
else
	printf 'CERT\n' >"$pem/a.crt"
	printf 'KEY\n' >"$pem/a.key"
	bin=""
fi

# `[store] flush_interval` is newer than some binaries this may run with: if the binary does
# not know the key, check-config runs on the TOML without that one line (and says so).
strip_flush=0
if [ -n "$bin" ]; then
	printf '[store]\nflush_interval = "30s"\n' >"$pem/probe.toml"
	if ! "$bin" check-config --config "$pem/probe.toml" >/dev/null 2>&1; then
		echo "note: $bin does not accept [store] flush_interval; checking the TOML without it"
		strip_flush=1
	fi
fi

# run_case NAME UCI_FILE ACTIONS [CHECK]: ACTIONS is a shell snippet run after sourcing the
# script; CHECK=0 skips check-config (for deliberately invalid values).
run_case() {
	name="$1" uci="$2" actions="$3" check="${4:-1}"
	work="$(mktemp -d)"
	mkdir -p "$work/config" "$work/etc" "$work/run" "$work/ssl"
	# The default RAM store path, moved into the work directory.
	sed "s#'/tmp/kinglet'#'@W@/tmpdata'#" "$uci" >"$work/config/kinglet"
	cp "$pem/a.crt" "$pem/a.key" "$work/ssl/"
	# Paths in the UCI file written as @W@ point into the work directory.
	sed -i "s#@W@#$work#g" "$work/config/kinglet"
	$shell -c "
		set -e
		PROCD_LOG='$work/procd.log'
		UCI_CONFIG_DIR='$work/config'
		. '$here/stubs.sh'
		. '$init'
		CONF_DIR='$work/etc'
		RUN_DIR='$work/run'
		$actions
	" >"$work/stdout" 2>&1 || { echo "FAIL $name: shell error"; cat "$work/stdout"; fail=1; }
	{
		echo "## procd"
		cat "$work/procd.log" 2>/dev/null || true
		for f in "$work"/etc/*.toml; do
			[ -e "$f" ] || continue
			echo "## $(basename "$f")"
			cat "$f"
		done
		echo "## run"
		(cd "$work/run" && ls -1) 2>/dev/null || true
	} | sed "s#$work#@W@#g" >"$work/actual"
	expected="$here/expected/$name"
	if [ "${UPDATE:-0}" = 1 ]; then
		cp "$work/actual" "$expected"
	fi
	if diff -u "$expected" "$work/actual"; then
		echo "ok   $name"
	else
		echo "FAIL $name"
		fail=1
	fi
	if [ -n "$bin" ] && [ "$check" = 1 ]; then
		for f in "$work"/etc/*.toml; do
			[ -e "$f" ] || continue
			if [ "$strip_flush" = 1 ]; then
				sed '/^flush_interval = /d' "$f" >"$f.check"
				mv "$f.check" "$f"
			fi
			if "$bin" check-config --config "$f" >/dev/null 2>"$work/err"; then
				echo "ok   $name: $(basename "$f") passes check-config"
			else
				echo "FAIL $name: $(basename "$f"): $(cat "$work/err")"
				fail=1
			fi
		done
	fi
	rm -rf "$work"
}

start='start_service; service_triggers'
run_case default "$here/../files/kinglet.config" "$start"
run_case full "$here/uci/full" "$start"
run_case disabled "$here/uci/disabled" "$start"
run_case bad-cert "$here/uci/bad-cert" "$start"
# reload with nothing changed: SIGHUP only. Then a changed option: restart through start.
run_case reload-same "$here/uci/full" "start_service; : >\"\$PROCD_LOG\"; reload_service"
run_case reload-changed "$here/uci/full" "start_service; : >\"\$PROCD_LOG\"; sed -i 's/warn/debug/' \"\$UCI_CONFIG_DIR/kinglet\"; reload_service"
# Values that would break TOML quoting stay inside their strings.
run_case quoting "$here/uci/quoting" "$start" 0

exit "$fail"
