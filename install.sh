#!/bin/sh
# install.sh - install (or uninstall) the Panda Breath bridge for Klipper.
#
# What gets installed
#   * the bridge binary (dist/panda-breath-<arch>-linux, built by
#     `deno task compile`),
#   * the Klipper extra klipper/panda_bridge.py -> <klipper>/klippy/extras/,
#   * the config fragment klipper/panda_bridge.cfg, whose [panda_bridge]
#     section holds the device address ("host:") and the socket path,
#   * a service that starts the bridge at boot: a systemd unit where systemd
#     runs, else a SysV script /etc/init.d/S99panda-breath (start-stop-daemon).
#
# The bridge binary reads no config file. The one place to set the device
# address is the "host:" line of [panda_bridge] in the installed fragment
# (editable from Mainsail/Fluidd). The service reads "host:" and "socket:"
# from the fragment at every start and passes --host/--socket; it refuses to
# start, with a clear message, while no host is set.
#
# Layouts
#   Live, Snapmaker U1 (detected, or --u1):
#     /home/lava/printer_data/panda-breath/bin/panda-breath      (persistent)
#     /home/lava/printer_data/panda-breath/share/panda-breath/   (persistent:
#         installed.txt manifest, a copy of install.sh and of klipper/, so the
#         install can be redone offline after a reboot or firmware update)
#     /home/lava/printer_data/config/panda_bridge.cfg             (persistent)
#     /home/lava/printer_data/config/printer.cfg + [include panda_bridge.cfg]
#     /home/lava/printer_data/logs/panda_bridge.log (+ .old)      (persistent)
#     /home/lava/klipper/klippy/extras/panda_bridge.py            (overlay root!)
#     /etc/init.d/S99panda-breath                                 (overlay root!)
#   Live, other Klipper hosts (prefix /usr/local):
#     /usr/local/bin/panda-breath, /usr/local/share/panda-breath/...,
#     ~USER/klipper/klippy/extras/panda_bridge.py,
#     ~USER/printer_data/config/panda_bridge.cfg (+ printer.cfg include),
#     systemd: /etc/systemd/system/panda-breath.service and its launcher
#     /usr/local/lib/panda-breath/panda-breath-service;
#     no systemd: /etc/init.d/S99panda-breath, log in printer_data/logs.
#   Overlay (--overlay DIR), for the U1 extended firmware build
#   (e.g. DIR = overlays/firmware-extended/70-panda-breath):
#     DIR/root/usr/local/bin/panda-breath                  (aarch64 only)
#     DIR/root/etc/init.d/S99panda-breath
#     DIR/root/home/lava/klipper/klippy/extras/panda_bridge.py
#     DIR/root/usr/local/share/firmware-config/extended/klipper/panda_bridge.cfg
#         the firmware's S49extended-config copies this default, at every
#         boot and without overwriting the user's copy, to
#         /home/lava/printer_data/config/extended/klipper/panda_bridge.cfg,
#         which printer.cfg already includes (extended/klipper/*.cfg) and
#         which the init script reads. No printer.cfg edit.
#     DIR/root/usr/local/share/panda-breath/installed.txt
#
# DESTDIR (--destdir DIR or $DESTDIR) prefixes every path, for staging and
# tests; services are then neither started nor stopped (unless --start) and
# Klipper is never restarted. The generated scripts honour
# PANDA_BRIDGE_ROOT=<dir> (testing only): it prefixes every path they use.
#
# POSIX sh; runs with dash, bash and BusyBox ash. See --help.

set -eu
umask 022

PROG=install.sh
SCRIPT_PATH=$0
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
MANIFEST_FORMAT=1
INCLUDE_LINE='[include panda_bridge.cfg]'
INCLUDE_RE='^\[include[[:space:]]+panda_bridge\.cfg[[:space:]]*\][[:space:]]*$'
U1_HOME=/home/lava
SEED_DIR=/usr/local/share/firmware-config/extended/klipper
EXTENDED_DIR=$U1_HOME/printer_data/config/extended/klipper
T_INIT=/etc/init.d/S99panda-breath
T_UNIT=/etc/systemd/system/panda-breath.service
T_PIDFILE=/var/run/panda-breath.pid
EX_CONFIG=78

usage() {
	cat <<'EOF'
Usage: install.sh [OPTIONS]            install or update (idempotent)
       install.sh --uninstall [OPTIONS] remove exactly what install.sh installed

Installs the Panda Breath bridge binary, the Klipper extra panda_bridge.py,
the config fragment panda_bridge.cfg (included from printer.cfg) and a
service that runs the bridge. The device address lives only in the "host:"
line of [panda_bridge] in the installed fragment; the service reads it (and
"socket:") at every start. To change it: edit the fragment (Mainsail/Fluidd),
then restart the service.

Modes:
  (default)          Live install on this machine (or under --destdir).
  --overlay DIR      Write a Snapmaker U1 extended-firmware overlay into DIR
                     (DIR/root/... is copied over / when the firmware is
                     built). The binary must be aarch64. No printer.cfg edit:
                     the fragment is seeded to
                     printer_data/config/extended/klipper/panda_bridge.cfg at
                     boot (never overwriting the user's copy), which the
                     extended firmware includes from printer.cfg.
  --uninstall        Stop and remove the service, the files listed in the
                     manifest and the printer.cfg include (printer.cfg is
                     restored from its backup when nothing else changed).
                     Pass the same --prefix/--destdir/--overlay as for install.

Options:
  --host ADDR[:PORT] Device address written into the fragment's "host:" line
                     (e.g. PandaBreath.local or 192.168.1.50).
  --socket PATH      Bridge socket written into "socket:" (default in the
                     fragment: /tmp/panda_bridge.sock; must be under /tmp,
                     /run or /var/run).
  --binary PATH      Bridge binary (default: dist/panda-breath-ARCH-linux next
                     to this script, ARCH from uname -m, aarch64 on a U1).
  --arch ARCH        Expected binary architecture: aarch64 or x86_64.
  --force            Accept a binary that is not an ELF file of the expected
                     architecture (e.g. a wrapper script).
  --prefix DIR       Where the binary and share files go: DIR/bin/panda-breath,
                     DIR/share/panda-breath/. Default: on a U1
                     /home/lava/printer_data/panda-breath (printer_data
                     survives reboots and firmware updates), in overlay mode
                     /usr/local, elsewhere /usr/local.
  --klipper-dir DIR  Klipper checkout (default ~USER/klipper; /home/lava/klipper
                     on a U1). The extra goes to DIR/klippy/extras/.
  --config-dir DIR   Klipper config dir holding printer.cfg (default
                     ~USER/printer_data/config). Live mode only.
  --klipper-src DIR  Where panda_bridge.py and panda_bridge.cfg are taken from
                     (default: klipper/ next to this script).
  --user USER        User the bridge runs as; must be Klipper's user, which
                     connects to the socket (default: lava on a U1, else the
                     owner of --config-dir, else the invoking user, $SUDO_USER
                     under sudo).
  --service KIND     systemd, sysv or none (default: systemd when
                     /run/systemd/system exists, else sysv; overlay: sysv).
  --u1               Treat the target as a Snapmaker U1 (normally detected from
                     /home/lava/printer_data plus /oem or /etc/init.d/S60klipper).
  --destdir DIR      Stage everything under DIR (also: DESTDIR=DIR). Services
                     are not started or stopped and Klipper is not restarted.
  --start            With --destdir: start/stop the service inside DIR anyway
                     (runs the init script with PANDA_BRIDGE_ROOT=DIR).
  --restart-klipper  Restart the Klipper service afterwards (needed to load a new
                     or updated panda_bridge.py; a RESTART command is not enough).
  -n, --dry-run      Print every action, change nothing.
  -h, --help         Show this help.

Layout (PREFIX as above):
  live:    PREFIX/bin/panda-breath, PREFIX/share/panda-breath/ (manifest,
           offline copy of install.sh and klipper/), KLIPPER/klippy/extras/
           panda_bridge.py, CONFIG/panda_bridge.cfg + "[include
           panda_bridge.cfg]" in CONFIG/printer.cfg, and either
           /etc/systemd/system/panda-breath.service with its launcher
           PREFIX/lib/panda-breath/panda-breath-service, or
           /etc/init.d/S99panda-breath (pidfile /var/run/panda-breath.pid,
           log printer_data/logs/panda_bridge.log + .old).
  overlay: DIR/root/usr/local/bin/panda-breath
           DIR/root/etc/init.d/S99panda-breath
           DIR/root/home/lava/klipper/klippy/extras/panda_bridge.py
           DIR/root/usr/local/share/firmware-config/extended/klipper/panda_bridge.cfg
             (the default that the firmware's S49extended-config copies to
             printer_data/config/extended/klipper/ at boot; the init script
             reads that copy)
           DIR/root/usr/local/share/panda-breath/installed.txt

Re-running is safe: unchanged files are left alone, the include is never
added twice, printer.cfg is backed up once (printer.cfg.panda-breath.bak) and
an existing fragment is kept (only its host:/socket: lines are updated, and
only when --host/--socket are given; an unedited fragment follows the new
default). The manifest is PREFIX/share/panda-breath/installed.txt.

Snapmaker U1 live install: printer_data is persistent, but /etc/init.d and
klippy/extras are on the overlay root: lost on reboot (unless /oem/.debug
exists) and on every firmware update. Re-run
  sh /home/lava/printer_data/panda-breath/share/panda-breath/install.sh
after those (it needs nothing else), or build the extended firmware with
--overlay for a permanent install.

Exit status: 0 ok, 1 error (nothing changed when detected before acting),
2 bad usage.
EOF
}

# ---------------------------------------------------------------- messages
say() { printf '%s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}
die_usage() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	printf 'Try "%s --help".\n' "$PROG" >&2
	exit 2
}

# act DESCRIPTION: announce an action. Returns false in dry-run mode, where
# the caller must then skip it.
act() {
	if [ "$DRY_RUN" = 1 ]; then
		printf '  would %s\n' "$*"
		return 1
	fi
	printf '  %s\n' "$*"
}

# ------------------------------------------------ shared with the services
# This block is copied verbatim into the generated init script and systemd
# launcher, and evaluated here, so all three read the fragment the same way.
SERVICE_LIB=$(
	cat <<'EOF'
# panda_bridge_cfg FILE KEY: print the value of KEY in the [panda_bridge]
# section of the Klipper config FILE ("key: value" or "key = value"; full-line
# and inline "#"/";" comments; the last occurrence wins, as in Klipper).
panda_bridge_cfg() {
	awk -v want="$2" '
		{ sub(/\r$/, "") }
		/^[ \t]*[#;]/ { next }
		/^\[/ {
			name = $0
			sub(/^\[[ \t]*/, "", name)
			sub(/[ \t]*\].*$/, "", name)
			insec = (name == "panda_bridge")
			next
		}
		!insec || /^[ \t]/ { next }
		{
			line = $0
			sub(/[ \t]+[#;].*$/, "", line)
			i = match(line, /[:=]/)
			if (!i) next
			k = substr(line, 1, i - 1)
			sub(/[ \t]+$/, "", k)
			if (tolower(k) != want) next
			v = substr(line, i + 1)
			sub(/^[ \t]+/, "", v)
			sub(/[ \t]+$/, "", v)
			val = v
			found = 1
		}
		END { if (found) print val }
	' "$1"
}

# read_config: set HOST and SOCKET from $FRAGMENT; on failure set
# CONFIG_ERROR and return 1.
read_config() {
	HOST='' SOCKET='' CONFIG_ERROR=''
	if [ ! -r "$FRAGMENT" ]; then
		CONFIG_ERROR="config fragment $FRAGMENT not found"
		return 1
	fi
	HOST=$(panda_bridge_cfg "$FRAGMENT" host)
	SOCKET=$(panda_bridge_cfg "$FRAGMENT" socket)
	[ -n "$SOCKET" ] || SOCKET=/tmp/panda_bridge.sock
	case $HOST in
	'')
		CONFIG_ERROR="no device address: set \"host: <address>\" in the [panda_bridge] section of $FRAGMENT (e.g. host: 192.168.1.50), then restart the service"
		return 1
		;;
	-* | *[!A-Za-z0-9._:-]*)
		CONFIG_ERROR="host \"$HOST\" in $FRAGMENT is not a device address (hostname or IP, optional :port)"
		return 1
		;;
	esac
	case $SOCKET in
	/*[!/]) ;;
	*)
		CONFIG_ERROR="socket \"$SOCKET\" in $FRAGMENT must be an absolute file path"
		return 1
		;;
	esac
	case $SOCKET in
	*[[:space:]]*)
		CONFIG_ERROR="socket \"$SOCKET\" in $FRAGMENT must not contain spaces"
		return 1
		;;
	esac
	return 0
}
EOF
)
HOST='' SOCKET='' CONFIG_ERROR=''
eval "$SERVICE_LIB"

# ------------------------------------------------------------ small helpers
# sum FILE: content checksum, tagged with the tool (BusyBox builds differ in
# which of these they have).
if command -v md5sum >/dev/null 2>&1; then
	SUM_TOOL='md5sum'
elif command -v sha256sum >/dev/null 2>&1; then
	SUM_TOOL='sha256sum'
elif command -v cksum >/dev/null 2>&1; then
	SUM_TOOL='cksum'
else
	printf '%s: error: need md5sum, sha256sum or cksum\n' "$PROG" >&2
	exit 1
fi
sum() {
	# "HASH  -" (md5sum, sha256sum) or "CRC SIZE" (cksum)
	# shellcheck disable=SC2046 # splitting the tool's output is intended
	set -- $("$SUM_TOOL" <"$1")
	case ${2:--} in
	-) printf '%s:%s\n' "$SUM_TOOL" "$1" ;;
	*) printf '%s:%s-%s\n' "$SUM_TOOL" "$1" "$2" ;;
	esac
}

# abspath PATH: PATH made absolute against the current directory (lexically).
abspath() {
	case $1 in
	/*) printf '%s\n' "$1" ;;
	*) printf '%s/%s\n' "$(pwd)" "$1" ;;
	esac
}

# strip_slash PATH: without trailing slashes ("/" stays "/").
strip_slash() {
	_p=$1
	while :; do
		case $_p in
		?*/) _p=${_p%/} ;;
		*) break ;;
		esac
	done
	printf '%s\n' "$_p"
}

# check_path NAME VALUE: a path this script writes into generated files and
# unit lines: absolute, no whitespace, no quoting or sed metacharacters.
check_path() {
	case $2 in
	/*) ;;
	*) die "$1 must be an absolute path: $2" ;;
	esac
	case $2 in
	*[!A-Za-z0-9/._+@,:=-]*)
		die "$1 may only contain letters, digits and / . _ + @ , : = - (no spaces or shell characters): $2"
		;;
	esac
}

# arch_of MACHINE: our name for a uname -m / ELF machine string.
arch_of() {
	case $1 in
	aarch64 | arm64 | armv8*) echo aarch64 ;;
	x86_64 | amd64) echo x86_64 ;;
	*) echo "$1" ;;
	esac
}

# elf_arch FILE: aarch64, x86_64, "elf:<machine hex>" or "not-elf".
elf_arch() {
	# shellcheck disable=SC2046 # word splitting of the od output is intended
	set -- $(od -An -v -tx1 -N20 "$1" 2>/dev/null)
	if [ $# -lt 20 ] || [ "$1$2$3$4" != 7f454c46 ]; then
		echo not-elf
		return
	fi
	if [ "$6" = 02 ]; then # big-endian
		_m="${19}${20}"
	else
		_m="${20}${19}"
	fi
	case $_m in
	00b7) echo aarch64 ;;
	003e) echo x86_64 ;;
	*) echo "elf:$_m" ;;
	esac
}

# user_home USER: the home directory from the password database.
user_home() {
	_h=
	if command -v getent >/dev/null 2>&1; then
		_h=$(getent passwd "$1" 2>/dev/null | cut -d: -f6) || _h=
	fi
	if [ -z "$_h" ] && [ -r /etc/passwd ]; then
		_h=$(awk -F: -v u="$1" '$1 == u { print $6; exit }' /etc/passwd)
	fi
	if [ -z "$_h" ]; then
		if [ "$1" = root ]; then _h=/root; else _h=/home/$1; fi
	fi
	printf '%s\n' "$_h"
}

# owner_of PATH: the owning user name (empty if unknown).
owner_of() {
	if [ -e "$1" ]; then
		# shellcheck disable=SC2012 # ls -ld is the portable way to get the owner
		ls -ld "$1" 2>/dev/null | awk '{ print $3 }'
	fi
}

# ----------------------------------------------------------- option parsing
ACTION=install
DRY_RUN=0
FORCE=0
FORCE_START=0
RESTART_KLIPPER=0
U1_FORCED=0
OPT_BINARY=
OPT_PREFIX=
OPT_KLIPPER_DIR=
OPT_CONFIG_DIR=
OPT_KLIPPER_SRC=
OPT_USER=
OPT_HOST=
OPT_SOCKET=
OPT_OVERLAY=
OPT_DESTDIR=
OPT_ARCH=
OPT_SERVICE=
HAVE_DESTDIR_OPT=0

while [ $# -gt 0 ]; do
	opt=$1
	has_inline=0
	val=
	case $opt in
	--*=*)
		val=${opt#*=}
		opt=${opt%%=*}
		has_inline=1
		;;
	esac
	case $opt in
	-h | --help | -n | --dry-run | --uninstall | --force | --start | --restart-klipper | --u1)
		[ "$has_inline" = 0 ] || die_usage "option $opt takes no value"
		case $opt in
		-h | --help)
			usage
			exit 0
			;;
		-n | --dry-run) DRY_RUN=1 ;;
		--uninstall) ACTION=uninstall ;;
		--force) FORCE=1 ;;
		--start) FORCE_START=1 ;;
		--restart-klipper) RESTART_KLIPPER=1 ;;
		--u1) U1_FORCED=1 ;;
		esac
		;;
	--binary | --prefix | --klipper-dir | --config-dir | --klipper-src | --user | --host | --socket | --overlay | --destdir | --arch | --service)
		if [ "$has_inline" = 0 ]; then
			[ $# -ge 2 ] || die_usage "option $opt needs a value"
			val=$2
			shift
			case $val in
			-*) die_usage "option $opt needs a value (got option \"$val\")" ;;
			esac
		fi
		[ -n "$val" ] || die_usage "option $opt needs a non-empty value"
		case $opt in
		--binary) OPT_BINARY=$val ;;
		--prefix) OPT_PREFIX=$val ;;
		--klipper-dir) OPT_KLIPPER_DIR=$val ;;
		--config-dir) OPT_CONFIG_DIR=$val ;;
		--klipper-src) OPT_KLIPPER_SRC=$val ;;
		--user) OPT_USER=$val ;;
		--host) OPT_HOST=$val ;;
		--socket) OPT_SOCKET=$val ;;
		--overlay) OPT_OVERLAY=$val ;;
		--destdir)
			OPT_DESTDIR=$val
			HAVE_DESTDIR_OPT=1
			;;
		--arch) OPT_ARCH=$val ;;
		--service) OPT_SERVICE=$val ;;
		esac
		;;
	*) die_usage "unknown option: $opt" ;;
	esac
	shift
done

# ------------------------------------------------------------ resolve setup
if [ "$HAVE_DESTDIR_OPT" = 0 ]; then
	OPT_DESTDIR=${DESTDIR:-}
fi
DEST=
if [ -n "$OPT_DESTDIR" ]; then
	DEST=$(strip_slash "$(abspath "$OPT_DESTDIR")")
	[ "$DEST" != / ] || DEST=
	[ -z "$DEST" ] || check_path "--destdir" "$DEST"
fi

MODE=live
BASE=$DEST
OVERLAY=
if [ -n "$OPT_OVERLAY" ]; then
	MODE=overlay
	[ -z "$DEST" ] || die "--overlay and --destdir/DESTDIR cannot be combined (the overlay directory is already a staging root)"
	[ -z "$OPT_CONFIG_DIR" ] || die "--config-dir does not apply to --overlay (the fragment is seeded into printer_data/config/extended/klipper/)"
	[ "$FORCE_START" = 0 ] || die "--start does not apply to --overlay"
	[ "$RESTART_KLIPPER" = 0 ] || die "--restart-klipper does not apply to --overlay"
	OVERLAY=$(strip_slash "$(abspath "$OPT_OVERLAY")")
	[ "$OVERLAY" != / ] || die "--overlay must not be /"
	check_path "--overlay" "$OVERLAY"
	BASE=$OVERLAY/root
fi

# A Snapmaker U1?
IS_U1=0
if [ "$MODE" = overlay ] || [ "$U1_FORCED" = 1 ]; then
	IS_U1=1
elif [ -d "$DEST$U1_HOME/printer_data" ] &&
	{ [ -d "$DEST/oem" ] || [ -e "$DEST/etc/init.d/S60klipper" ]; }; then
	IS_U1=1
fi

# Are we the copy that a previous install left in PREFIX/share/panda-breath?
INSTALLED_COPY=0
if [ -f "$SCRIPT_DIR/installed.txt" ] && [ "${SCRIPT_DIR##*/}" = panda-breath ]; then
	INSTALLED_COPY=1
fi

# Prefix.
if [ -n "$OPT_PREFIX" ]; then
	PREFIX=$(strip_slash "$OPT_PREFIX")
elif [ "$MODE" = overlay ]; then
	PREFIX=/usr/local
elif [ "$INSTALLED_COPY" = 1 ] && [ -z "$DEST" ]; then
	PREFIX=$(CDPATH='' cd -- "$SCRIPT_DIR/../.." && pwd)
elif [ "$IS_U1" = 1 ]; then
	PREFIX=$U1_HOME/printer_data/panda-breath
else
	PREFIX=/usr/local
fi
check_path "--prefix" "$PREFIX"
T_BIN=$PREFIX/bin/panda-breath
T_SHARE=$PREFIX/share/panda-breath
T_MANIFEST=$T_SHARE/installed.txt
T_LAUNCHER=$PREFIX/lib/panda-breath/panda-breath-service

MANIFEST_REAL=$BASE$T_MANIFEST
OLD_MANIFEST=
if [ -f "$MANIFEST_REAL" ]; then
	OLD_MANIFEST=$MANIFEST_REAL
fi

# manifest_get KIND: the values of KIND lines in the old manifest.
manifest_get() {
	[ -n "$OLD_MANIFEST" ] || return 0
	while read -r _k _v; do
		if [ "$_k" = "$1" ]; then printf '%s\n' "$_v"; fi
	done <"$OLD_MANIFEST"
}

# ================================================================ uninstall
if [ "$ACTION" = uninstall ]; then
	[ -n "$OLD_MANIFEST" ] || die "no installation found: $MANIFEST_REAL does not exist (pass the --prefix, --destdir or --overlay used for the install)"
	head -n 1 "$OLD_MANIFEST" | grep -q '^# panda-breath install manifest' ||
		die "$MANIFEST_REAL is not a panda-breath manifest"
	M_MODE=$(manifest_get mode)
	M_SERVICE=$(manifest_get service)
	case $M_MODE in live | overlay) ;; *) die "$MANIFEST_REAL: unknown mode \"$M_MODE\"" ;; esac
	if [ "$M_MODE" != "$MODE" ]; then
		die "$MANIFEST_REAL records a $M_MODE install; uninstall it in $M_MODE mode"
	fi
	if [ "$MODE" = live ] && [ -z "$DEST" ] && [ "$M_SERVICE" != none ] && [ "$(id -u)" != 0 ] && [ "$DRY_RUN" = 0 ]; then
		die "uninstalling the service needs root (run with sudo)"
	fi

	if [ "$DRY_RUN" = 1 ]; then
		say "panda-breath uninstall (dry run: nothing is changed)"
	else
		say "panda-breath uninstall"
	fi
	say "  manifest: $MANIFEST_REAL"

	# A dry run records what it would remove, so that it can tell which
	# directories would then be empty.
	GONE=$(mktemp "${TMPDIR:-/tmp}/panda-breath-uninstall.XXXXXX")
	trap 'rm -f "$GONE"' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	# remove_path TARGET [NOTE]: remove BASE+TARGET (a file).
	remove_path() {
		if act "remove $1${2:+ $2}"; then
			rm -f "$BASE$1"
		else
			printf '%s\n' "$BASE$1" >>"$GONE"
		fi
	}

	# remove_dir REAL_PATH LABEL: rmdir if it is (or a dry run would leave it) empty.
	remove_dir() {
		for _e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
			[ -e "$_e" ] || [ -L "$_e" ] || continue
			if ! grep -qxF "$_e" "$GONE"; then
				say "  keeping directory $2: not empty"
				return 0
			fi
		done
		if act "remove directory $2"; then
			rmdir "$1"
		else
			printf '%s\n' "$1" >>"$GONE"
		fi
	}

	# 1. stop the service
	if [ "$MODE" = live ]; then
		case $M_SERVICE in
		sysv)
			if [ -n "$DEST" ] && [ "$FORCE_START" = 0 ]; then
				say "  not stopping the service: DESTDIR is set (use --start to stop it inside DESTDIR)"
			elif [ -x "$BASE$T_INIT" ]; then
				if act "run: $T_INIT stop"; then
					PANDA_BRIDGE_ROOT=$DEST "$BASE$T_INIT" stop || warn "$T_INIT stop failed"
				fi
			fi
			;;
		systemd)
			if [ -n "$DEST" ]; then
				say "  not stopping the service: DESTDIR is set"
			elif act "run: systemctl disable --now panda-breath.service"; then
				systemctl disable --now panda-breath.service || warn "systemctl disable --now panda-breath.service failed"
			fi
			;;
		esac
	fi

	# 2. printer.cfg: restore the backup if nothing else changed, else drop
	#    just the include line.
	inc_line=$(manifest_get include)
	bak_t=$(manifest_get backup)
	if [ -n "$inc_line" ]; then
		inc_sum=${inc_line%% *}
		inc_t=${inc_line#* }
		inc_real=$BASE$inc_t
		if [ ! -f "$inc_real" ]; then
			say "  $inc_t is gone; nothing to undo there"
		elif [ -n "$bak_t" ] && [ -f "$BASE$bak_t" ] && [ "$(sum "$inc_real")" = "$inc_sum" ]; then
			if act "restore $inc_t from $bak_t (unchanged since the install)"; then
				cat "$BASE$bak_t" >"$inc_real"
			fi
		elif grep -Eq "$INCLUDE_RE" "$inc_real"; then
			if act "remove \"$INCLUDE_LINE\" from $inc_t (other changes since the install are kept)"; then
				tmpf=$inc_real.panda-breath.tmp
				grep -Ev "$INCLUDE_RE" "$inc_real" >"$tmpf" || true
				cat "$tmpf" >"$inc_real"
				rm -f "$tmpf"
			fi
		else
			say "  $inc_t no longer has \"$INCLUDE_LINE\"; left as it is"
		fi
	fi
	if [ -n "$bak_t" ] && [ -f "$BASE$bak_t" ]; then
		remove_path "$bak_t"
	fi

	# 3. the fragment: removed unless edited since install.sh last wrote it
	manifest_get config | while read -r c_sum c_t; do
		[ -n "$c_t" ] || continue
		if [ ! -f "$BASE$c_t" ]; then
			continue
		elif [ "$(sum "$BASE$c_t")" = "$c_sum" ]; then
			remove_path "$c_t"
		else
			say "  keeping $c_t: it was edited after the install (delete it yourself if no longer needed)"
		fi
	done

	# 4. files, logs, pidfile
	manifest_get file | while read -r f_t; do
		if [ -e "$BASE$f_t" ] || [ -L "$BASE$f_t" ]; then
			remove_path "$f_t"
		fi
	done
	manifest_get log | while read -r l_t; do
		for l in "$l_t" "$l_t.old"; do
			if [ -f "$BASE$l" ]; then
				remove_path "$l"
			fi
		done
	done
	manifest_get pidfile | while read -r p_t; do
		if [ -f "$BASE$p_t" ]; then
			p_pid=$(cat "$BASE$p_t" 2>/dev/null) || p_pid=
			case $p_pid in '' | *[!0-9]*) p_pid=0 ;; esac
			if [ "$p_pid" -gt 0 ] && kill -0 "$p_pid" 2>/dev/null; then
				say "  keeping $p_t: process $p_pid is still running"
			else
				remove_path "$p_t" "(stale pidfile)"
			fi
		fi
	done
	if [ "$M_SERVICE" = systemd ] && [ -z "$DEST" ] && [ "$MODE" = live ]; then
		if act "run: systemctl daemon-reload"; then
			systemctl daemon-reload || warn "systemctl daemon-reload failed"
		fi
	fi

	# 5. the manifest, then the directories install.sh created (newest first)
	made_dirs=$(manifest_get dir | awk '{ l[NR] = $0 } END { for (i = NR; i > 0; i--) print l[i] }')
	made_overlay=$(manifest_get overlaydir)
	remove_path "$T_MANIFEST"
	printf '%s\n' "$made_dirs" |
		while read -r d_t; do
			[ -n "$d_t" ] || continue
			if [ "$d_t" = / ]; then d_real=$BASE; else d_real=$BASE$d_t; fi
			[ -d "$d_real" ] || continue
			if [ "$d_t" = / ]; then d_t="$BASE (overlay root)"; fi
			remove_dir "$d_real" "$d_t"
		done

	if [ "$MODE" = overlay ] && [ -n "$made_overlay" ] && [ -d "$OVERLAY" ]; then
		remove_dir "$OVERLAY" "$OVERLAY"
	fi

	if [ "$MODE" = live ]; then
		if [ "$RESTART_KLIPPER" = 1 ]; then
			RESTART_KLIPPER_NOW=1
		else
			RESTART_KLIPPER_NOW=0
			say "Restart Klipper (RESTART, or --restart-klipper) so that it no longer loads panda_bridge.cfg."
		fi
	else
		RESTART_KLIPPER_NOW=0
	fi
fi

# ================================================================== install
if [ "$ACTION" = install ]; then
	# ---- architecture and binary
	HOST_ARCH=$(arch_of "$(uname -m)")
	if [ -n "$OPT_ARCH" ]; then
		ARCH=$(arch_of "$OPT_ARCH")
		case $ARCH in aarch64 | x86_64) ;; *) die "--arch must be aarch64 or x86_64, got \"$OPT_ARCH\"" ;; esac
	elif [ "$IS_U1" = 1 ]; then
		ARCH=aarch64
	else
		ARCH=$HOST_ARCH
	fi
	if [ "$MODE" = overlay ] && [ "$ARCH" != aarch64 ]; then
		die "--overlay builds for the Snapmaker U1, which is aarch64 (got --arch $OPT_ARCH)"
	fi

	if [ -n "$OPT_BINARY" ]; then
		BINARY=$OPT_BINARY
	elif [ -f "$SCRIPT_DIR/dist/panda-breath-$ARCH-linux" ] || [ "$INSTALLED_COPY" = 0 ]; then
		BINARY=$SCRIPT_DIR/dist/panda-breath-$ARCH-linux
	else
		BINARY=$SCRIPT_DIR/../../bin/panda-breath
	fi
	[ -e "$BINARY" ] || die "binary not found: $BINARY (build it with \"deno task compile\" or pass --binary PATH)"
	[ -f "$BINARY" ] || die "binary is not a regular file: $BINARY"
	[ -r "$BINARY" ] || die "binary is not readable: $BINARY"
	BIN_ARCH=$(elf_arch "$BINARY")
	if [ "$BIN_ARCH" != "$ARCH" ]; then
		case $BIN_ARCH in
		not-elf) problem="$BINARY is not an ELF executable" ;;
		*) problem="$BINARY is built for $BIN_ARCH, but the target needs $ARCH" ;;
		esac
		if [ "$FORCE" = 1 ]; then
			warn "$problem (accepted because of --force)"
		else
			die "$problem (use the panda-breath-$ARCH-linux build, or --force to install it anyway)"
		fi
	fi

	# ---- sources
	SRC_DIR=${OPT_KLIPPER_SRC:-$SCRIPT_DIR/klipper}
	SRC_EXTRA=$SRC_DIR/panda_bridge.py
	SRC_CFG=$SRC_DIR/panda_bridge.cfg
	[ -f "$SRC_EXTRA" ] || die "Klipper extra not found: $SRC_EXTRA (pass --klipper-src DIR)"
	[ -f "$SRC_CFG" ] || die "config fragment not found: $SRC_CFG (pass --klipper-src DIR)"
	grep -Eq '^\[[[:space:]]*panda_bridge[[:space:]]*\]' "$SRC_CFG" ||
		die "$SRC_CFG has no [panda_bridge] section"

	# ---- host / socket values
	if [ -n "$OPT_HOST" ]; then
		case $OPT_HOST in
		-* | *[!A-Za-z0-9._:-]*)
			die "--host \"$OPT_HOST\" is not a device address (hostname or IP address, optional :port)"
			;;
		esac
	fi
	if [ -n "$OPT_SOCKET" ]; then
		check_path "--socket" "$OPT_SOCKET"
		case $OPT_SOCKET in
		/tmp/?* | /run/?* | /var/run/?*) ;;
		*) die "--socket must be under /tmp, /run or /var/run (the only places the bridge may create its socket): $OPT_SOCKET" ;;
		esac
		case $OPT_SOCKET in */) die "--socket must name a file: $OPT_SOCKET" ;; esac
		[ "${#OPT_SOCKET}" -le 107 ] || die "--socket is longer than 107 bytes, too long for a Unix socket"
	fi

	# ---- service kind
	if [ -n "$OPT_SERVICE" ]; then
		case $OPT_SERVICE in
		systemd | sysv | none) SERVICE=$OPT_SERVICE ;;
		*) die "--service must be systemd, sysv or none, got \"$OPT_SERVICE\"" ;;
		esac
		if [ "$MODE" = overlay ] && [ "$SERVICE" = systemd ]; then
			die "the Snapmaker U1 firmware has no systemd; --overlay installs a SysV init script"
		fi
	elif [ "$MODE" = overlay ]; then
		SERVICE=sysv
	elif [ -d "$DEST/run/systemd/system" ]; then
		SERVICE=systemd
	else
		SERVICE=sysv
	fi

	# ---- user and directories
	if [ -n "$OPT_USER" ]; then
		RUN_USER=$OPT_USER
	elif [ "$IS_U1" = 1 ]; then
		RUN_USER=lava
	elif [ -n "$OPT_CONFIG_DIR" ] && [ -n "$(owner_of "$DEST$OPT_CONFIG_DIR")" ]; then
		RUN_USER=$(owner_of "$DEST$OPT_CONFIG_DIR")
	else
		RUN_USER=${SUDO_USER:-$(id -un)}
	fi
	case $RUN_USER in
	'' | -* | *[!A-Za-z0-9._-]*) die "--user \"$RUN_USER\" is not a valid user name" ;;
	esac
	if [ -z "$DEST" ] && [ "$MODE" = live ] && ! id "$RUN_USER" >/dev/null 2>&1; then
		die "user \"$RUN_USER\" does not exist (pass --user, Klipper's user)"
	fi
	if [ "$IS_U1" = 1 ]; then
		USER_HOME=$U1_HOME
	else
		USER_HOME=$(user_home "$RUN_USER")
	fi

	if [ -n "$OPT_KLIPPER_DIR" ]; then
		KLIPPER_DIR=$(strip_slash "$OPT_KLIPPER_DIR")
	else
		KLIPPER_DIR=$USER_HOME/klipper
	fi
	check_path "--klipper-dir" "$KLIPPER_DIR"
	T_EXTRA=$KLIPPER_DIR/klippy/extras/panda_bridge.py

	if [ "$MODE" = overlay ]; then
		T_FRAGMENT=$SEED_DIR/panda_bridge.cfg
		T_FRAGMENT_RUN=$EXTENDED_DIR/panda_bridge.cfg
		T_PRINTER_CFG=
		LOG_DIR=$U1_HOME/printer_data/logs
	else
		if [ -n "$OPT_CONFIG_DIR" ]; then
			CONFIG_DIR=$(strip_slash "$OPT_CONFIG_DIR")
		else
			CONFIG_DIR=$USER_HOME/printer_data/config
		fi
		check_path "--config-dir" "$CONFIG_DIR"
		T_FRAGMENT=$CONFIG_DIR/panda_bridge.cfg
		T_FRAGMENT_RUN=$T_FRAGMENT
		T_PRINTER_CFG=$CONFIG_DIR/printer.cfg
		if [ "${CONFIG_DIR##*/}" = config ]; then
			LOG_DIR=${CONFIG_DIR%/*}/logs
		else
			LOG_DIR=/var/log
		fi
		[ -f "$DEST$T_PRINTER_CFG" ] ||
			die "no printer.cfg at $DEST$T_PRINTER_CFG (pass --config-dir DIR, the directory holding printer.cfg)"
		[ -d "$DEST$KLIPPER_DIR/klippy/extras" ] ||
			die "no Klipper at $DEST$KLIPPER_DIR ($DEST$KLIPPER_DIR/klippy/extras is missing; pass --klipper-dir DIR)"
		if [ -e "$DEST$CONFIG_DIR/extended/klipper/panda_bridge.cfg" ]; then
			die "$DEST$CONFIG_DIR/extended/klipper/panda_bridge.cfg exists: this firmware already carries panda-breath (overlay install); a live install would define [panda_bridge] twice"
		fi
		if [ -z "$DEST" ] && [ "$SERVICE" != none ] && [ "$(id -u)" != 0 ] && [ "$DRY_RUN" = 0 ]; then
			die "installing the service needs root (run with sudo, or pass --service none)"
		fi
	fi
	T_LOG=$LOG_DIR/panda_bridge.log

	# An existing fragment whose host/socket we are asked to change must have
	# the section to change.
	if [ -f "$BASE$T_FRAGMENT" ] && { [ -n "$OPT_HOST" ] || [ -n "$OPT_SOCKET" ]; }; then
		grep -Eq '^\[[[:space:]]*panda_bridge[[:space:]]*\]' "$BASE$T_FRAGMENT" ||
			die "$BASE$T_FRAGMENT has no [panda_bridge] section to write host/socket into; fix or remove it"
	fi
fi

# ------------------------------------------------------------ install steps
if [ "$ACTION" = install ]; then
	TMPD=$(mktemp -d "${TMPDIR:-/tmp}/panda-breath-install.XXXXXX")
	trap 'rm -rf "$TMPD"' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	NEW_MANIFEST=$TMPD/manifest
	NEW_DIRS=$TMPD/dirs
	: >"$NEW_DIRS"
	DRY_DIRS=
	CAN_CHOWN=0
	if [ -z "$DEST" ] && [ "$MODE" = live ] && [ "$(id -u)" = 0 ]; then
		CAN_CHOWN=1
	fi

	# dry_made DIR: a dry run already announced creating DIR.
	dry_made() {
		case "$DRY_DIRS
" in *"
$1
"*) return 0 ;;
		esac
		return 1
	}

	# ensure_dir TARGET_DIR: create BASE+TARGET_DIR and any missing parents,
	# remembering each for the manifest.
	ensure_dir() {
		_missing=
		_d=$1
		while [ "$_d" != / ] && [ ! -d "$BASE$_d" ] && ! dry_made "$_d"; do
			_missing="$_d
$_missing"
			_d=${_d%/*}
			[ -n "$_d" ] || _d=/
		done
		for _d in $_missing; do
			if act "create directory $_d"; then
				mkdir "$BASE$_d"
				printf 'dir %s\n' "$_d" >>"$NEW_DIRS"
			else
				DRY_DIRS="$DRY_DIRS
$_d"
			fi
		done
	}

	# install_file SRC TARGET MODE: copy unless identical; atomic replace (a
	# running binary cannot be overwritten in place).
	install_file() {
		_real=$BASE$2
		if [ -f "$_real" ] && cmp -s "$1" "$_real"; then
			say "  unchanged $2"
			# (modes are 755 or 644: only the x bits can be off)
			if [ "$DRY_RUN" = 0 ]; then
				case $3 in
				755) [ -x "$_real" ] || chmod 755 "$_real" ;;
				*) [ ! -x "$_real" ] || chmod "$3" "$_real" ;;
				esac
			fi
		else
			_parent=${2%/*}
			ensure_dir "${_parent:-/}"
			if [ -e "$_real" ]; then _verb=update; else _verb=install; fi
			if act "$_verb $2 (mode $3)"; then
				cp "$1" "$_real.panda-breath.tmp"
				chmod "$3" "$_real.panda-breath.tmp"
				mv -f "$_real.panda-breath.tmp" "$_real"
			fi
		fi
		printf 'file %s\n' "$2" >>"$NEW_MANIFEST.files"
	}

	# write_in_place SRC TARGET: replace the contents, keeping owner and mode.
	write_in_place() {
		cat "$1" >"$BASE$2"
	}

	# cfg_set FILE KEY VALUE: FILE with KEY of [panda_bridge] set to VALUE
	# (every occurrence; inserted after the section header if absent; an
	# inline comment on the line is kept).
	cfg_set() {
		awk -v want="$2" -v repl="$2: $3" '
			function secname(s) {
				sub(/^\[[ \t]*/, "", s)
				sub(/[ \t]*\].*$/, "", s)
				return s
			}
			{ lines[NR] = $0 }
			END {
				for (n = 1; n <= NR; n++) {
					l = lines[n]
					sub(/\r$/, "", l)
					if (l ~ /^\[/) {
						insec = (secname(l) == "panda_bridge")
						if (insec && !hdr) hdr = n
						continue
					}
					if (!insec || l ~ /^[ \t]*[#;]/ || l ~ /^[ \t]/) continue
					c = l
					cm = ""
					if (match(c, /[ \t]+[#;].*$/)) {
						cm = substr(c, RSTART)
						c = substr(c, 1, RSTART - 1)
					}
					i = match(c, /[:=]/)
					if (!i) continue
					k = substr(c, 1, i - 1)
					sub(/[ \t]+$/, "", k)
					if (tolower(k) == want) {
						lines[n] = repl cm
						done = 1
					}
				}
				for (n = 1; n <= NR; n++) {
					print lines[n]
					if (n == hdr && !done) print repl
				}
			}
		' "$1"
	}

	# apply_settings IN OUT: IN with --host/--socket (or the given fallback
	# values) written in.
	apply_settings() {
		if [ -n "$3" ] && [ -n "$4" ]; then
			cfg_set "$1" host "$3" | cfg_set - socket "$4" >"$2"
		elif [ -n "$3" ]; then
			cfg_set "$1" host "$3" >"$2"
		elif [ -n "$4" ]; then
			cfg_set "$1" socket "$4" >"$2"
		else
			cp "$1" "$2"
		fi
	}

	if [ "$DRY_RUN" = 1 ]; then
		say "panda-breath install (dry run: nothing is changed)"
	else
		say "panda-breath install"
	fi
	if [ "$MODE" = overlay ]; then
		say "  mode: overlay for the Snapmaker U1 extended firmware, in $OVERLAY"
	elif [ "$IS_U1" = 1 ]; then
		say "  mode: live, Snapmaker U1${DEST:+, staged under DESTDIR $DEST}"
	else
		say "  mode: live${DEST:+, staged under DESTDIR $DEST}"
	fi
	say "  binary: $BINARY ($BIN_ARCH), service: $SERVICE, user: $RUN_USER"

	# ---- staging root
	: >"$NEW_MANIFEST.files"
	: >"$NEW_MANIFEST.state"
	if [ "$MODE" = overlay ]; then
		if [ -n "$(manifest_get overlaydir)" ]; then
			printf 'overlaydir made\n' >>"$NEW_MANIFEST.state"
		elif [ ! -d "$OVERLAY" ] && act "create directory $OVERLAY"; then
			mkdir -p "$OVERLAY"
			printf 'overlaydir made\n' >>"$NEW_MANIFEST.state"
		fi
		if [ ! -d "$BASE" ] && act "create directory $BASE"; then
			mkdir "$BASE"
			printf 'dir /\n' >>"$NEW_DIRS"
		fi
	elif [ -n "$DEST" ] && [ ! -d "$DEST" ]; then
		if act "create directory $DEST"; then mkdir -p "$DEST"; fi
	fi

	{
		printf '# panda-breath install manifest (written by install.sh, read by install.sh --uninstall)\n'
		printf 'format %s\n' "$MANIFEST_FORMAT"
		printf 'mode %s\n' "$MODE"
		printf 'service %s\n' "$SERVICE"
		printf 'user %s\n' "$RUN_USER"
	} >"$NEW_MANIFEST"

	# ---- 1. binary, extra and (live) the offline copy of the installer
	install_file "$BINARY" "$T_BIN" 755
	install_file "$SRC_EXTRA" "$T_EXTRA" 644
	if [ "$MODE" = live ]; then
		install_file "$SCRIPT_DIR/${SCRIPT_PATH##*/}" "$T_SHARE/install.sh" 755
		install_file "$SRC_EXTRA" "$T_SHARE/klipper/panda_bridge.py" 644
		install_file "$SRC_CFG" "$T_SHARE/klipper/panda_bridge.cfg" 644
	fi

	# ---- 2. the config fragment
	FRAG_REAL=$BASE$T_FRAGMENT
	old_cfg=$(manifest_get config | awk -v t="$T_FRAGMENT" '{ s = $1; sub(/^[^ ]+ /, "") } $0 == t { print s }')
	if [ ! -f "$FRAG_REAL" ]; then
		apply_settings "$SRC_CFG" "$TMPD/cfg" "$OPT_HOST" "$OPT_SOCKET"
		ensure_dir "${T_FRAGMENT%/*}"
		if act "install $T_FRAGMENT (mode 644)${OPT_HOST:+ with host: $OPT_HOST}${OPT_SOCKET:+ and socket: $OPT_SOCKET}"; then
			cp "$TMPD/cfg" "$FRAG_REAL"
			chmod 644 "$FRAG_REAL"
			if [ "$CAN_CHOWN" = 1 ]; then chown "$RUN_USER" "$FRAG_REAL"; fi
		fi
		printf 'config %s %s\n' "$(sum "$TMPD/cfg")" "$T_FRAGMENT" >>"$NEW_MANIFEST.state"
	else
		cur_sum=$(sum "$FRAG_REAL")
		if [ -n "$old_cfg" ] && [ "$old_cfg" = "$cur_sum" ]; then
			# Ours and not edited since: follow the shipped default, keeping
			# the host and socket it has now unless new ones were given.
			keep_host=${OPT_HOST:-$(panda_bridge_cfg "$FRAG_REAL" host)}
			keep_socket=${OPT_SOCKET:-$(panda_bridge_cfg "$FRAG_REAL" socket)}
			apply_settings "$SRC_CFG" "$TMPD/cfg" "$keep_host" "$keep_socket"
			why="new default, host/socket kept"
		else
			cp "$FRAG_REAL" "$TMPD/cfg.cur"
			apply_settings "$TMPD/cfg.cur" "$TMPD/cfg" "$OPT_HOST" "$OPT_SOCKET"
			why=
		fi
		if cmp -s "$TMPD/cfg" "$FRAG_REAL"; then
			if [ -n "$old_cfg" ] && [ "$old_cfg" = "$cur_sum" ]; then
				say "  unchanged $T_FRAGMENT"
			else
				say "  keeping your $T_FRAGMENT (edited or not installed by install.sh; $T_SHARE/klipper/panda_bridge.cfg is the current default)"
			fi
		elif [ -z "$why" ]; then
			if act "update host:/socket: in your $T_FRAGMENT (rest kept as you edited it)"; then
				write_in_place "$TMPD/cfg" "$T_FRAGMENT"
			fi
		elif act "update $T_FRAGMENT ($why)"; then
			write_in_place "$TMPD/cfg" "$T_FRAGMENT"
		fi
		# Still ours and unedited: record what it is now. Edited by the user:
		# keep the old checksum, so it stays "edited" (kept by --uninstall).
		if [ -n "$old_cfg" ] && [ "$old_cfg" = "$cur_sum" ]; then
			printf 'config %s %s\n' "$(sum "$TMPD/cfg")" "$T_FRAGMENT" >>"$NEW_MANIFEST.state"
		elif [ -n "$old_cfg" ]; then
			printf 'config %s %s\n' "$old_cfg" "$T_FRAGMENT" >>"$NEW_MANIFEST.state"
		fi
	fi

	# ---- 3. printer.cfg include (live mode)
	if [ "$MODE" = live ]; then
		PCFG_REAL=$DEST$T_PRINTER_CFG
		T_BACKUP=$T_PRINTER_CFG.panda-breath.bak
		old_inc=$(manifest_get include)
		old_bak=$(manifest_get backup)
		if grep -Eq "$INCLUDE_RE" "$PCFG_REAL"; then
			say "  unchanged $T_PRINTER_CFG (already has \"$INCLUDE_LINE\")"
			if [ -n "$old_bak" ]; then
				printf 'backup %s\n' "$old_bak" >>"$NEW_MANIFEST.state"
			fi
			if [ -n "$old_inc" ]; then
				printf 'include %s\n' "$old_inc" >>"$NEW_MANIFEST.state"
			fi
		else
			if [ -n "$old_bak" ] && [ -f "$DEST$old_bak" ]; then
				say "  keeping backup $T_BACKUP"
				printf 'backup %s\n' "$old_bak" >>"$NEW_MANIFEST.state"
			elif [ -e "$DEST$T_BACKUP" ]; then
				say "  not overwriting the existing $T_BACKUP (not made by install.sh)"
			elif act "back up $T_PRINTER_CFG to $T_BACKUP"; then
				cp -p "$PCFG_REAL" "$DEST$T_BACKUP"
				printf 'backup %s\n' "$T_BACKUP" >>"$NEW_MANIFEST.state"
			fi
			# Before Klipper's SAVE_CONFIG block if there is one, else at the end.
			awk -v inc="$INCLUDE_LINE" '
				!done && /^#\*# <-+ SAVE_CONFIG -+>/ { print inc; done = 1 }
				{ print }
				END { if (!done) print inc }
			' "$PCFG_REAL" >"$TMPD/printer.cfg"
			if act "add \"$INCLUDE_LINE\" to $T_PRINTER_CFG"; then
				write_in_place "$TMPD/printer.cfg" "$T_PRINTER_CFG"
			fi
			printf 'include %s %s\n' "$(sum "$TMPD/printer.cfg")" "$T_PRINTER_CFG" >>"$NEW_MANIFEST.state"
		fi
	fi

	# ---- 4. service files
	gen_header() {
		printf '#!/bin/sh\n'
		cat <<'EOF'
### BEGIN INIT INFO
# Provides:          panda-breath
# Required-Start:    $network $remote_fs
# Required-Stop:     $network $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: Panda Breath chamber heater bridge for Klipper
### END INIT INFO
EOF
	}

	gen_init_script() {
		gen_header
		cat <<EOF
#
# Generated by panda-breath install.sh ($MODE install). Re-run install.sh
# rather than editing this file.
#
# Starts the bridge as user $RUN_USER. The device address is read at every start
# from "host:" (and the socket from "socket:") in the [panda_bridge] section of
#   $T_FRAGMENT_RUN
# Edit it there (Mainsail/Fluidd), then: $T_INIT restart
# Log: $T_LOG (the previous run's in .old).
#
# PANDA_BRIDGE_ROOT=DIR (tests only) prefixes every path below.

ROOT=\${PANDA_BRIDGE_ROOT:-}
DAEMON="\$ROOT$T_BIN"
FRAGMENT="\$ROOT$T_FRAGMENT_RUN"
PIDFILE="\$ROOT$T_PIDFILE"
LOGFILE="\$ROOT$T_LOG"
RUN_USER=$RUN_USER
STOP_TIMEOUT=\${PANDA_BRIDGE_STOP_TIMEOUT:-15}
case \$STOP_TIMEOUT in '' | *[!0-9]*) STOP_TIMEOUT=15 ;; esac

EOF
		printf '%s\n' "$SERVICE_LIB"
		cat <<'EOF'

# alive PID: the process exists and is not a zombie.
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	if [ -r "/proc/$1/stat" ]; then
		case $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) in
		Z* | X*) return 1 ;;
		esac
	fi
	return 0
}

# is_running: the pidfile names a live panda-breath process (sets PID).
is_running() {
	PID=
	if [ -r "$PIDFILE" ]; then
		read -r PID <"$PIDFILE" || true
	fi
	case $PID in
	'' | *[!0-9]*)
		PID=
		return 1
		;;
	esac
	alive "$PID" || return 1
	if [ -r "/proc/$PID/cmdline" ]; then
		tr '\000' ' ' <"/proc/$PID/cmdline" | grep -q panda-breath || return 1
	fi
	return 0
}

log_line() {
	printf '%s panda-breath init: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$1" >>"$LOGFILE" 2>/dev/null || true
}

# pause: a short sleep (0.2 s where sleep takes fractions, else 1 s); sets STEP_MS.
pause() {
	if sleep 0.2 2>/dev/null; then
		STEP_MS=200
	else
		sleep 1
		STEP_MS=1000
	fi
}

start() {
	if is_running; then
		echo "panda-breath is already running (pid $PID)"
		return 0
	fi
	rm -f "$PIDFILE"
	if [ ! -x "$DAEMON" ]; then
		echo "panda-breath: $DAEMON is missing or not executable" >&2
		return 1
	fi
	mkdir -p "$(dirname "$LOGFILE")" "$(dirname "$PIDFILE")"
	# One rotated copy: the previous run's log becomes .old.
	if [ -f "$LOGFILE" ]; then
		mv -f "$LOGFILE" "$LOGFILE.old"
	fi
	: >"$LOGFILE"
	chown "$RUN_USER" "$LOGFILE" 2>/dev/null || true
	if ! read_config; then
		echo "panda-breath: not starting: $CONFIG_ERROR" >&2
		log_line "not starting: $CONFIG_ERROR"
		return 1
	fi
	log_line "starting $DAEMON run --host $HOST --socket $SOCKET (user $RUN_USER)"
	printf 'Starting panda-breath (host %s): ' "$HOST"
	# -S start, -b --background, -m --make-pidfile, -p --pidfile, -c --chuid:
	# short options, which every start-stop-daemon (Debian, BusyBox) takes.
	# The inner shell sends the daemon's stderr/stdout to the log and execs it,
	# so the pid written to the pidfile is the daemon's own.
	# shellcheck disable=SC2016 # $1 and $@ belong to the inner shell
	if ! start-stop-daemon -S -b -m -p "$PIDFILE" -c "$RUN_USER" -x /bin/sh -- \
		-c 'log=$1; shift; exec "$@" >>"$log" 2>&1' panda-breath "$LOGFILE" \
		"$DAEMON" run --host "$HOST" --socket "$SOCKET"; then
		echo "FAILED (start-stop-daemon)"
		return 1
	fi
	# A daemon that exits at once (bad option, unusable binary) is reported here.
	waited=0
	while [ "$waited" -lt 1000 ]; do
		pause
		waited=$((waited + STEP_MS))
	done
	if is_running; then
		echo "OK (pid $PID)"
		return 0
	fi
	echo "FAILED: it exited at once; see $LOGFILE"
	tail -n 5 "$LOGFILE" >&2 2>/dev/null || true
	rm -f "$PIDFILE"
	return 1
}

stop() {
	if ! is_running; then
		echo "panda-breath is not running"
		rm -f "$PIDFILE"
		return 0
	fi
	printf 'Stopping panda-breath (pid %s): ' "$PID"
	# SIGTERM: the bridge turns the heater off, then exits.
	start-stop-daemon -K -o -q -p "$PIDFILE" -s TERM || kill -TERM "$PID" 2>/dev/null || true
	waited=0
	while alive "$PID"; do
		if [ "$waited" -ge $((STOP_TIMEOUT * 1000)) ]; then
			kill -KILL "$PID" 2>/dev/null || true
			echo "killed (still running after ${STOP_TIMEOUT}s)"
			log_line "killed: still running ${STOP_TIMEOUT}s after SIGTERM"
			rm -f "$PIDFILE"
			return 0
		fi
		pause
		waited=$((waited + STEP_MS))
	done
	rm -f "$PIDFILE"
	echo "OK"
}

status() {
	if is_running; then
		echo "panda-breath is running (pid $PID)"
		return 0
	fi
	if [ -n "$PID" ]; then
		echo "panda-breath is not running (stale pidfile $PIDFILE)"
		return 1
	fi
	echo "panda-breath is not running"
	return 3
}

case ${1:-} in
start) start ;;
stop) stop ;;
restart | reload | force-reload)
	stop
	start
	;;
status) status ;;
*)
	echo "Usage: $0 {start|stop|restart|status}" >&2
	exit 2
	;;
esac
EOF
	}

	gen_launcher() {
		printf '#!/bin/sh\n'
		cat <<EOF
# Generated by panda-breath install.sh: started by panda-breath.service.
# Reads "host:" and "socket:" from the [panda_bridge] section of
#   $T_FRAGMENT_RUN
# and runs the bridge with them. Exit status $EX_CONFIG (not restarted by systemd)
# while no valid host is set: edit the fragment, then
#   systemctl restart panda-breath
#
# PANDA_BRIDGE_ROOT=DIR (tests only) prefixes every path below.

ROOT=\${PANDA_BRIDGE_ROOT:-}
DAEMON="\$ROOT$T_BIN"
FRAGMENT="\$ROOT$T_FRAGMENT_RUN"

EOF
		printf '%s\n' "$SERVICE_LIB"
		cat <<EOF

if ! read_config; then
	echo "panda-breath: not starting: \$CONFIG_ERROR" >&2
	exit $EX_CONFIG
fi
echo "panda-breath: starting \$DAEMON run --host \$HOST --socket \$SOCKET" >&2
exec "\$DAEMON" run --host "\$HOST" --socket "\$SOCKET"
EOF
	}

	gen_unit() {
		cat <<EOF
# Generated by panda-breath install.sh. The device address is the "host:" line
# of [panda_bridge] in $T_FRAGMENT_RUN;
# edit it there, then: systemctl restart panda-breath
[Unit]
Description=Panda Breath chamber heater bridge for Klipper
Documentation=file://$T_SHARE/install.sh
Wants=network-online.target
After=network-online.target
Before=klipper.service

[Service]
Type=simple
User=$RUN_USER
ExecStart=$T_LAUNCHER
Restart=always
RestartSec=5
RestartPreventExitStatus=$EX_CONFIG
TimeoutStopSec=20
SyslogIdentifier=panda-breath

[Install]
WantedBy=multi-user.target
EOF
	}

	case $SERVICE in
	sysv)
		gen_init_script >"$TMPD/init"
		install_file "$TMPD/init" "$T_INIT" 755
		# The log directory lives in printer_data, which an overlay must not
		# touch (the init script creates it at run time if needed).
		if [ "$MODE" = live ]; then
			ensure_dir "$LOG_DIR"
			printf 'log %s\n' "$T_LOG" >>"$NEW_MANIFEST.state"
			printf 'pidfile %s\n' "$T_PIDFILE" >>"$NEW_MANIFEST.state"
		fi
		;;
	systemd)
		gen_launcher >"$TMPD/launcher"
		install_file "$TMPD/launcher" "$T_LAUNCHER" 755
		gen_unit >"$TMPD/unit"
		install_file "$TMPD/unit" "$T_UNIT" 644
		;;
	none)
		say "  no service installed (--service none): run \"$T_BIN run --host ADDR\" yourself"
		;;
	esac

	# ---- 5. files from a previous install that this one no longer has
	new_files=$(cat "$NEW_MANIFEST.files")
	manifest_get file | while read -r f_t; do
		case "
$new_files
" in *"
file $f_t
"*) continue ;;
		esac
		if [ -e "$BASE$f_t" ]; then
			if act "remove $f_t (no longer part of the install)"; then rm -f "$BASE$f_t"; fi
		fi
	done

	# ---- 6. manifest: old directories first, then the ones made now
	ensure_dir "$T_SHARE"
	{
		cat "$NEW_MANIFEST.files" "$NEW_MANIFEST.state"
		{
			manifest_get dir | sed 's/^/dir /'
			cat "$NEW_DIRS"
		} | awk '!seen[$0]++'
	} >>"$NEW_MANIFEST"
	if [ -f "$MANIFEST_REAL" ] && cmp -s "$NEW_MANIFEST" "$MANIFEST_REAL"; then
		say "  unchanged $T_MANIFEST"
	else
		if act "write manifest $T_MANIFEST"; then
			cp "$NEW_MANIFEST" "$MANIFEST_REAL.panda-breath.tmp"
			chmod 644 "$MANIFEST_REAL.panda-breath.tmp"
			mv -f "$MANIFEST_REAL.panda-breath.tmp" "$MANIFEST_REAL"
		fi
	fi

	# ---- 7. start the service
	FRAGMENT=$BASE$T_FRAGMENT
	[ -f "$FRAGMENT" ] || FRAGMENT=$TMPD/cfg
	HOST_OK=0
	START_FAILED=0
	if read_config; then HOST_OK=1; fi
	RESTART_KLIPPER_NOW=0
	if [ "$MODE" = overlay ]; then
		:
	elif [ "$SERVICE" = none ]; then
		:
	elif [ -n "$DEST" ] && [ "$FORCE_START" = 0 ]; then
		say "  not starting the service: DESTDIR is set (use --start to run it inside DESTDIR)"
	elif [ "$HOST_OK" = 0 ]; then
		say "  not starting the service yet: $CONFIG_ERROR"
		if [ "$SERVICE" = systemd ] && [ -z "$DEST" ]; then
			if act "run: systemctl daemon-reload && systemctl enable panda-breath.service"; then
				if ! { systemctl daemon-reload && systemctl enable panda-breath.service; }; then
					warn "could not enable panda-breath.service"
				fi
			fi
		fi
	elif [ "$SERVICE" = systemd ]; then
		if [ -n "$DEST" ]; then
			say "  not starting the systemd unit: it cannot run inside DESTDIR"
		else
			if "$BASE$T_BIN" --version >/dev/null 2>&1; then
				:
			else
				warn "$T_BIN --version failed: the binary may not run on this system"
			fi
			if act "run: systemctl daemon-reload && systemctl enable panda-breath.service && systemctl restart panda-breath.service"; then
				if ! { systemctl daemon-reload && systemctl enable panda-breath.service &&
					systemctl restart panda-breath.service; }; then
					warn "starting panda-breath.service failed; see: journalctl -u panda-breath"
					START_FAILED=1
				fi
			fi
		fi
	else
		if [ -z "$DEST" ] && ! "$BASE$T_BIN" --version >/dev/null 2>&1; then
			warn "$T_BIN --version failed: the binary may not run on this system"
		fi
		if act "run: $T_INIT restart"; then
			if ! PANDA_BRIDGE_ROOT=$DEST "$BASE$T_INIT" restart; then
				warn "the service did not start; see $T_LOG"
				START_FAILED=1
			fi
		fi
	fi
	if [ "$MODE" = live ] && [ "$RESTART_KLIPPER" = 1 ]; then
		RESTART_KLIPPER_NOW=1
	fi

	# ---- 8. what next
	say ""
	if [ "$MODE" = overlay ]; then
		say "Overlay written to $OVERLAY; build the extended firmware with it."
		say "On the printer the fragment is seeded at boot (never overwriting the user's copy) to"
		say "  $T_FRAGMENT_RUN"
		say "  (Fluidd/Mainsail: Configuration, extended/klipper/panda_bridge.cfg)."
		if [ "$HOST_OK" = 1 ]; then
			say "Its default device address: host: $HOST (socket $SOCKET)."
		else
			say "The default has no device address: after flashing, set \"host:\" there, then run"
			say "  $T_INIT restart   (or reboot), or re-run with --host ADDR to build it in."
		fi
		say "To turn panda-breath off on the printer, empty that file rather than deleting it"
		say "(a deleted file is seeded again at boot)."
	elif [ "$HOST_OK" = 1 ]; then
		say "Device address: host: $HOST (socket $SOCKET), from $T_FRAGMENT_RUN."
	else
		say "Next: $CONFIG_ERROR."
		say "  (or re-run install.sh with --host ADDR)"
	fi
	if [ "$MODE" = overlay ]; then
		:
	elif [ "$RESTART_KLIPPER" = 0 ]; then
		say "Then restart Klipper: RESTART is enough the first time; after an update of"
		say "panda_bridge.py restart the Klipper service (RESTART keeps the old module loaded),"
		say "or re-run with --restart-klipper."
	fi
	if [ "$MODE" = live ] && [ "$IS_U1" = 1 ]; then
		say ""
		say "Snapmaker U1: what survives"
		say "  kept (printer_data is persistent):"
		say "    $T_BIN"
		say "    $T_FRAGMENT and the printer.cfg include"
		say "    $T_LOG"
		say "    $T_SHARE/ (manifest and an offline copy of this installer)"
		if [ -e "$DEST/oem/.debug" ]; then
			say "  on the overlay root, kept across reboots (/oem/.debug exists) but removed by"
			say "  every firmware update:"
		else
			say "  on the overlay root, LOST at the next reboot and at every firmware update:"
		fi
		say "    $T_INIT"
		say "    $T_EXTRA"
		say "  Without the extra, Klipper stops at startup with a config error (printer.cfg still"
		say "  includes panda_bridge.cfg). After a reboot or firmware update, re-run:"
		say "    sh $T_SHARE/install.sh --restart-klipper"
		say "  For a permanent install, use the extended firmware with the panda-breath overlay"
		say "  (install.sh --overlay DIR) instead."
	fi
fi

# ----------------------------------------------------------- restart Klipper
if [ "${RESTART_KLIPPER_NOW:-0}" = 1 ]; then
	if [ -n "$DEST" ]; then
		say "Not restarting Klipper: DESTDIR is set."
	elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		if act "run: systemctl restart klipper.service"; then
			systemctl restart klipper.service || warn "could not restart klipper.service; restart Klipper yourself"
		fi
	else
		klipper_init=
		for _s in /etc/init.d/S*klipper /etc/init.d/klipper; do
			if [ -x "$_s" ]; then
				klipper_init=$_s
				break
			fi
		done
		if [ -z "$klipper_init" ]; then
			warn "no Klipper service found in /etc/init.d; restart Klipper yourself"
		elif act "run: $klipper_init restart"; then
			"$klipper_init" restart || warn "$klipper_init restart failed"
		fi
	fi
fi
if [ "${START_FAILED:-0}" = 1 ]; then
	printf '%s: error: installed, but the service failed to start (see above)\n' "$PROG" >&2
	exit 1
fi
exit 0
