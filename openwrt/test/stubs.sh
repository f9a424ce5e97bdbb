# shellcheck shell=dash
# Stand-ins for OpenWrt's /lib/functions.sh (UCI) and /lib/functions/procd.sh, enough to run
# files/kinglet.init outside OpenWrt. Every procd call is recorded, one line each, in
# $PROCD_LOG; `config_load` reads $UCI_CONFIG_DIR/<package>.
#
# These encode our reading of the real semantics (openwrt/openwrt package/base-files
# functions.sh and package/system/procd procd.sh), which is the limit of this test: it checks
# the init script's logic and the command line it builds, not procd itself.

UCI_SECTIONS=""
UCI_LISTS=""

# UCI file syntax, evaluated as shell: config TYPE [NAME], option KEY VALUE, list KEY VALUE.
config() {
	local name="$2"
	if [ -z "$name" ]; then
		UCI_ANON=$((${UCI_ANON:-0} + 1))
		name="cfg$UCI_ANON"
	fi
	UCI_CUR="$name"
	UCI_SECTIONS="$UCI_SECTIONS $name"
	eval "UCI_${name}__TYPE=\$1"
}
option() {
	eval "UCI_${UCI_CUR}_$1=\$2"
}
list() {
	local n
	eval "n=\${UCI_${UCI_CUR}_$1__N:-0}"
	[ "$n" = 0 ] && UCI_LISTS="$UCI_LISTS UCI_${UCI_CUR}_$1__N"
	n=$((n + 1))
	eval "UCI_${UCI_CUR}_$1__N=$n"
	eval "UCI_${UCI_CUR}_$1__$n=\$2"
}
# Like uci_load, forget the previous load's lists (and sections) first.
config_load() {
	local v
	for v in $UCI_LISTS; do
		eval "$v=0"
	done
	UCI_LISTS=""
	UCI_SECTIONS=""
	UCI_ANON=0
	# shellcheck disable=SC1090
	. "$UCI_CONFIG_DIR/$1"
}
# shellcheck disable=SC2034 # def is read through eval
config_get() {
	local var="$1" sec="$2" opt="$3" def="$4" set
	eval "set=\${UCI_${sec}_${opt}+x}"
	if [ -n "$set" ]; then
		eval "$var=\$UCI_${sec}_${opt}"
	else
		eval "$var=\$def"
	fi
}
config_get_bool() {
	local _v
	config_get _v "$2" "$3" "$4"
	case "$_v" in
		1 | on | true | yes | enabled) _v=1 ;;
		0 | off | false | no | disabled) _v=0 ;;
		*) _v="$4" ;;
	esac
	eval "$1=\$_v"
}
config_foreach() {
	local fn="$1" type="$2" s t
	shift 2
	for s in $UCI_SECTIONS; do
		eval "t=\$UCI_${s}__TYPE"
		[ "$t" = "$type" ] && "$fn" "$s" "$@"
	done
	return 0
}
config_list_foreach() {
	local sec="$1" opt="$2" fn="$3" n i v
	shift 3
	eval "n=\${UCI_${sec}_${opt}__N:-0}"
	i=1
	while [ "$i" -le "$n" ]; do
		eval "v=\$UCI_${sec}_${opt}__$i"
		"$fn" "$v" "$@"
		i=$((i + 1))
	done
}

procd_record() { echo "$*" >>"$PROCD_LOG"; }
procd_open_instance() { procd_record "open_instance $*"; }
procd_set_param() { procd_record "set_param $*"; }
procd_append_param() { procd_record "append_param $*"; }
procd_close_instance() { procd_record "close_instance"; }
procd_add_jail() { procd_record "add_jail $*"; }
procd_add_jail_mount() { procd_record "add_jail_mount $*"; }
procd_add_jail_mount_rw() { procd_record "add_jail_mount_rw $*"; }
procd_add_reload_trigger() { procd_record "add_reload_trigger $*"; }
procd_send_signal() { procd_record "send_signal $*"; }
logger() { procd_record "logger $*"; }
# The 'kinglet' user does not exist on the test host.
chown() { procd_record "chown $*"; }
# rc.common's start, in procd mode, runs start_service inside a service transaction.
start() { procd_record "start"; start_service "$@"; }
