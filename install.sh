#!/bin/sh
# install.sh - install, repair or uninstall panda-breath (bridge binary, Klipper
# extra, settings file, supervised service). POSIX sh: dash, bash, BusyBox ash.
# The service files are templates in klipper/service/, filled in by render()
# only; klipper/service/panda-breath-launch is the one reader of the settings.
# Everything installed is listed in PAYLOAD/manifest (read by --uninstall and
# --repair). Nothing is written before every check has passed.
set -eu
umask 022
PROG=install.sh
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
SVC=$HERE/klipper/service
SOURCES="install.sh klipper/panda_bridge.py klipper/panda_bridge.cfg klipper/service/S99panda-breath
klipper/service/panda-breath.service klipper/service/panda-breath-launch klipper/service/panda-breath-supervise
klipper/service/klipper-hook.sh klipper/service/moonraker.asvc klipper/service/panda_bridge_loader.cfg
klipper/service/panda_bridge_active.cfg"
NL='
'

usage() {
	cat <<'EOF'
Usage: install.sh [OPTIONS]              install or update (idempotent)
       install.sh --repair [OPTIONS]     re-create what a U1 reboot or firmware
                                         update removed; your settings are kept
       install.sh --uninstall [OPTIONS]  remove exactly what was installed
Installs the bridge binary, the Klipper extra panda_bridge.py, your settings
PRINTER_DATA/config/panda_bridge.cfg (the device address is its host:) and a
service (systemd, else /etc/init.d/S99panda-breath with a supervisor); payload
in PRINTER_DATA/panda-breath/. Snapmaker U1: after a reboot without /oem/.debug
or a firmware update Klipper still starts, and its console names the command
that restores the chamber heater:
  sh /home/lava/printer_data/panda-breath/install.sh --repair
Options:
  --host ADDR[:PORT]  device address, written into your settings' host:
  --socket PATH       default /run/panda-breath/bridge.sock (/run, /var/run, /tmp)
  --binary FILE       default panda-breath-ARCH-linux in dist/ or next to install.sh
  --sums FILE         verify it against this SHA256SUMS (default: one next to it)
  --user USER         service user, Klipper's user (U1: lava)
  --printer-data DIR  Klipper's data folder (default ~USER/printer_data)
  --klipper-dir DIR   Klipper checkout (default ~USER/klipper)
  --service KIND      systemd, sysv or none (default: detected)
  --restart-klipper   restart Klipper afterwards (--repair does)
  --overlay DIR       write a U1 extended-firmware overlay (DIR/root/) instead
  --destdir DIR       stage under DIR (tests); nothing is started
  --u1                treat the target as a Snapmaker U1 (normally detected)
  --force             accept a binary that is not an ELF file (a wrapper)
  -n, --dry-run       print every action, change nothing
Exit status: 0 ok, 1 error or refused (nothing changed), 2 bad usage.
EOF
}

say() { printf '%s\n' "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
bad_usage() { printf '%s: %s (see --help)\n' "$PROG" "$*" >&2; exit 2; }
# act WHAT: announce an action; false in a dry run, where the caller skips it.
act() { if [ "$DRY" = 1 ]; then say "  would $*" && return 1; fi && say "  $*"; }
# The settings file's one reader and writer (see klipper/service/panda-breath-launch).
cfg() { sh "$SVC/panda-breath-launch" "$@"; }
path_ok() {
	case $2 in /*[!/] | /) ;; *) die "$1 must be an absolute path: $2" ;; esac
	case $2 in *[!A-Za-z0-9/._+@,=-]*) die "$1 may only contain letters, digits and / . _ + @ , = -: $2" ;; esac
}
cksum_of() { md5sum <"$1" | cut -d" " -f1; }

# ------------------------------------------------------------------ options
ACTION=install DRY=0 FORCE=0 RESTART_KLIPPER=0 U1=0
O_HOST='' O_SOCKET='' O_BIN='' O_SUMS='' O_USER='' O_PD='' O_KLIPPER=''
O_SERVICE='' O_DEST=${DESTDIR:-} O_OVERLAY=''
while [ $# -gt 0 ]; do
	case $1 in
	-h | --help) usage && exit 0 ;;
	-n | --dry-run) DRY=1 ;;
	--uninstall) ACTION=uninstall ;;
	--repair) ACTION=repair RESTART_KLIPPER=1 ;;
	--force) FORCE=1 ;;
	--restart-klipper) RESTART_KLIPPER=1 ;;
	--u1) U1=1 ;;
	--host | --socket | --binary | --sums | --user | --printer-data | --klipper-dir | --service | --destdir | --overlay)
		if [ $# -lt 2 ] || [ -z "$2" ]; then bad_usage "$1 needs a value"; fi
		case $1 in
		--host) O_HOST=$2 ;; --socket) O_SOCKET=$2 ;; --binary) O_BIN=$2 ;; --sums) O_SUMS=$2 ;;
		--user) O_USER=$2 ;; --printer-data) O_PD=$2 ;; --klipper-dir) O_KLIPPER=$2 ;;
		--service) O_SERVICE=$2 ;; --destdir) O_DEST=$2 ;; --overlay) O_OVERLAY=$2 ;;
		esac
		shift
		;;
	--*=*) opt=${1%%=*} val=${1#*=} && shift && set -- "$opt" "$val" "$@" && continue ;;
	*) bad_usage "unknown option: $1" ;;
	esac
	shift
done

# ------------------------------------------------------------------ layout
absdir() { (CDPATH='' cd -- "$1" 2>/dev/null && pwd) || case $1 in /*) say "${1%/}" ;; *) say "$(pwd)/${1%/}" ;; esac; }
DEST='' && [ -z "$O_DEST" ] || DEST=$(absdir "$O_DEST")
[ "$DEST" != / ] || DEST=''
[ -z "$DEST" ] || path_ok --destdir "$DEST"
MODE=live BASE=$DEST
if [ -n "$O_OVERLAY" ]; then
	[ -z "$DEST" ] || bad_usage "--overlay and --destdir cannot be combined"
	[ "$ACTION" != repair ] || bad_usage "--repair does not apply to --overlay"
	MODE=overlay U1=1 BASE=$(absdir "$O_OVERLAY")/root
	path_ok --overlay "$BASE"
fi
if [ -d "$DEST/home/lava/printer_data" ] && { [ -d "$DEST/oem" ] || [ -f "$DEST/etc/init.d/S60klipper" ]; }; then U1=1; fi

# A previous install's manifest gives the defaults (--repair needs no options).
M=''
if [ -f "$HERE/manifest" ] && [ -f "$HERE/install.sh" ]; then M=$HERE/manifest; fi
mget() { [ -z "$M" ] || awk -v k="$1" '$1 == k { sub(/^[^ ]+ /, ""); print }' "$M"; }
home_of() { awk -F: -v u="$1" '$1 == u { print $6 }' "$DEST/etc/passwd" 2>/dev/null | grep . || say "/home/$1"; }
RUN_USER=${O_USER:-$(mget user)}
[ -n "$RUN_USER" ] || if [ "$U1" = 1 ]; then RUN_USER=lava; else RUN_USER=${SUDO_USER:-$(id -un)}; fi
case $RUN_USER in -* | *[!A-Za-z0-9._-]*) die "--user \"$RUN_USER\" is not a user name" ;; esac
if [ "$U1" = 1 ]; then UHOME=/home/lava; else UHOME=$(home_of "$RUN_USER"); fi
PD=${O_PD:-$(mget printer-data)} && PD=${PD:-$UHOME/printer_data}
KLIPPER=${O_KLIPPER:-$(mget klipper-dir)} && KLIPPER=${KLIPPER:-$UHOME/klipper}
if [ "$MODE" = overlay ]; then PAYLOAD=/usr/local/lib/panda-breath; else PAYLOAD=$PD/panda-breath; fi
[ -n "$M" ] && PAYLOAD=${HERE#"$BASE"}
for p in "$PD" "$KLIPPER" "$PAYLOAD"; do path_ok path "$p"; done
[ -n "$M" ] || [ ! -f "$BASE$PAYLOAD/manifest" ] || M=$BASE$PAYLOAD/manifest
SERVICE=${O_SERVICE:-$(mget service)}
[ -n "$SERVICE" ] || if [ "$MODE" = live ] && [ -d "$DEST/run/systemd/system" ]; then SERVICE=systemd; else SERVICE=sysv; fi
case $SERVICE in systemd | sysv | none) ;; *) bad_usage "--service must be systemd, sysv or none" ;; esac
[ "$MODE" = live ] || [ "$SERVICE" = sysv ] || die "the U1 firmware has no systemd: --overlay installs a SysV service"

CFGDIR=$PD/config
BIN=$PAYLOAD/bin/panda-breath
LAUNCHER=$PAYLOAD/libexec/panda-breath-launch SUPERVISOR=$PAYLOAD/libexec/panda-breath-supervise
LOG=$PD/logs/panda-breath.log EXTRA=$KLIPPER/klippy/extras/panda_bridge.py
INIT=/etc/init.d/S99panda-breath PIDFILE=/var/run/panda-breath.pid RUNDIR=/run/panda-breath
UNIT=/etc/systemd/system/panda-breath.service HOOK=/etc/hooks/klipper.d/panda-breath.sh
ACTDIR=/etc/panda-breath/klipper ASVC=$PD/moonraker.asvc CLI=/usr/local/bin/panda-breath
SETTINGS=$CFGDIR/panda_bridge.cfg LOADER='' INCLUDE='' HOOKS=0
SEED=/usr/local/share/firmware-config/extended
REPAIR="sh $PAYLOAD/install.sh --repair (as root, over SSH)"
if [ "$MODE" = overlay ]; then
	BIN=$CLI SETTINGS=$CFGDIR/extended/panda_bridge.cfg LOADER=$CFGDIR/extended/klipper/panda_bridge_loader.cfg HOOKS=1
	REPAIR="this firmware build has no panda-breath: flash one with it, or delete extended/klipper/panda_bridge_loader.cfg"
elif [ "$U1" = 1 ]; then
	# The extended firmware includes extended/klipper/*.cfg: no printer.cfg edit there.
	if grep -Eq '^\[include[[:space:]]+extended/klipper/' "$DEST$CFGDIR/printer.cfg" 2>/dev/null; then
		LOADER=$CFGDIR/extended/klipper/panda_bridge_loader.cfg
	else
		LOADER=$CFGDIR/panda_bridge_loader.cfg INCLUDE='[include panda_bridge_loader.cfg]'
	fi
	! grep -q hooks/klipper.d "$DEST/etc/init.d/S60klipper" 2>/dev/null || HOOKS=1
else
	INCLUDE='[include panda_bridge.cfg]'
fi
# seed_of PATH: where an overlay puts a file the firmware seeds into config/extended/.
seed_of() { if [ "$MODE" = overlay ]; then say "$SEED${1#"$CFGDIR"/extended}"; else say "$1"; fi; }

# ------------------------------------------------------------------ uninstall
if [ "$ACTION" = uninstall ]; then
	[ -n "$M" ] || die "no panda-breath installation found ($BASE$PAYLOAD/manifest does not exist; pass the --printer-data or --overlay used to install)"
	[ -n "$DEST" ] || [ "$MODE" = overlay ] || [ "$DRY" = 1 ] || [ "$(id -u)" = 0 ] || die "uninstalling needs root (sudo)"
	say "panda-breath uninstall${DEST:+ (staged in $DEST)}"
	if [ "$(mget service)" = sysv ] && [ -f "$BASE$INIT" ] && [ "$MODE" = live ] && act "run: $INIT stop"; then
		PANDA_BREATH_ROOT=$DEST sh "$BASE$INIT" stop | sed 's/^/    /'
	elif [ "$(mget service)" = systemd ] && [ -z "$DEST" ] && act "run: systemctl disable --now panda-breath"; then
		systemctl disable --now panda-breath.service || true
	fi
	mget line | while read -r f text; do
		if grep -qxF "$text" "$BASE$f" 2>/dev/null && act "remove \"$text\" from $f"; then
			{ grep -vxF "$text" "$BASE$f" || :; } >"$BASE$f.pb-tmp" && cat "$BASE$f.pb-tmp" >"$BASE$f" && rm -f "$BASE$f.pb-tmp"
		fi
	done
	mget settings | while read -r sum f; do
		if [ ! -f "$BASE$f" ]; then :; elif [ "$(cksum_of "$BASE$f")" = "$sum" ]; then
			if act "remove $f"; then rm -f "$BASE$f"; fi
		else say "  keeping your edited $f (delete it yourself when no longer needed)"; fi
	done
	{ mget file && mget log | sed 'p; s/$/.old/'; } | while read -r f; do
		if [ -e "$BASE$f" ] || [ -L "$BASE$f" ]; then if act "remove $f"; then rm -f "$BASE$f"; fi; fi
	done
	if [ "$(mget service)" = systemd ] && [ -z "$DEST" ] && act "run: systemctl daemon-reload"; then systemctl daemon-reload || true; fi
	[ "$MODE" = overlay ] || { rm -f "$BASE$PIDFILE" && rmdir "$BASE$RUNDIR" 2>/dev/null; } || true
	dirs=$(mget dir | sort -r)
	act "remove $PAYLOAD/manifest" && rm -f "$M"
	for d in $dirs; do
		if [ -d "$BASE$d" ] && [ -z "$(ls -A "$BASE$d")" ] && act "remove directory $d"; then rmdir "$BASE$d"; fi
	done
	[ "$MODE" = live ] && say "Restart Klipper (RESTART) so that it no longer looks for panda-breath."
	exit 0
fi

# ------------------------------------------------------------------ checks (nothing is written yet)
[ "$MODE" = overlay ] || [ -f "$DEST$CFGDIR/printer.cfg" ] || die "no printer.cfg in $DEST$CFGDIR (pass --printer-data DIR, Klipper's data folder)"
[ "$MODE" = overlay ] || [ -d "$DEST$KLIPPER/klippy/extras" ] || die "no Klipper at $DEST$KLIPPER (pass --klipper-dir DIR)"
[ -n "$DEST" ] || [ "$MODE" = overlay ] || [ "$DRY" = 1 ] || [ "$(id -u)" = 0 ] || die "installing the service needs root (run it with sudo, or as root on the U1)"
if [ "$MODE" = live ] && [ -f "$DEST/usr/local/lib/panda-breath/manifest" ] && [ "$PAYLOAD" != /usr/local/lib/panda-breath ]; then
	die "this firmware already carries panda-breath (built in with --overlay): edit $CFGDIR/extended/panda_bridge.cfg instead"
fi

# cfg_files FILE: FILE and every file it includes, resolved as Klipper does
# (relative to the including file; globs sorted; a glob may match nothing).
cfg_files() {
	case "$NL$_seen$NL" in *"$NL$1$NL"*) return 0 ;; esac
	_seen=$_seen$NL$1 && say "$1"
	# shellcheck disable=SC2013 # include specs are words
	for _spec in $(sed -n 's/#.*//; s/^\[include[[:space:]][[:space:]]*\([^]]*[^][:space:]]\)[[:space:]]*\].*/\1/p' "$1"); do
		case $_spec in /*) _pat=$DEST$_spec ;; *) _pat=${1%/*}/$_spec ;; esac
		for _g in $_pat; do if [ -f "$_g" ]; then cfg_files "$_g"; fi; done
	done
}
# Never two controllers for one device: refuse while another integration is enabled.
FOUND=''
for f in "$DEST$CFGDIR"/extended/klipper/panda_breath*.cfg "$DEST$CFGDIR"/extended/klipper/dragonbreath*.cfg; do
	if [ -e "$f" ]; then FOUND="$FOUND$NL  ${f#"$DEST"}: the firmware's own chamber-heater integration"; fi
done
if [ "$MODE" = live ]; then
	for f in $(_seen='' && cfg_files "$DEST$CFGDIR/printer.cfg"); do
		case ${f#"$DEST"} in "$SETTINGS" | "$LOADER" | "$ACTDIR"/*) continue ;; esac
		hits=$(sed -n 's/[#;].*//; s/^\[\([^]]*\)\].*/\1/p' "$f" | tr '[:upper:]' '[:lower:]' |
			sed 's/[[:space:]][[:space:]]*/ /g; s/^ //; s/ $//' |
			grep -xE 'panda_breath|heater_generic panda_breath|gcode_macro m1[49]1|dragonbreath.*' | tr '\n' ',') || true
		[ -z "$hits" ] || FOUND="$FOUND$NL  ${f#"$DEST"} defines [${hits%,}]"
	done
	if [ "$U1" = 0 ] && [ -f "$DEST$KLIPPER/klippy/extras/panda_breath.py" ]; then
		FOUND="$FOUND$NL  $KLIPPER/klippy/extras/panda_breath.py: another Panda Breath module for Klipper"
	fi
fi
if [ -n "$FOUND" ]; then
	printf '%s: refused: another Panda Breath integration is enabled, and two controllers must never drive one device. Nothing was changed.\nFound:%s\n' "$PROG" "$FOUND" >&2
	if [ -z "${FOUND##*dragonbreath*}" ]; then
		printf 'DragonBreath is enabled: that device runs the DragonBreath firmware, which panda-breath cannot drive (it speaks the stock firmware'"'"'s ws://<host>/ws protocol only). Keep the firmware'"'"'s DragonBreath integration.\n' >&2
	elif [ "$U1" = 1 ]; then
		fw_host=$(cfg --get "$DEST$CFGDIR/extended/klipper/panda_breath.cfg" panda_breath host 2>/dev/null) || fw_host=''
		printf 'To use panda-breath instead:\n  1. In the web UI open Firmware Config, set "PandaBreath / DragonBreath Chamber Heater" to "Disabled" and save\n     (that removes extended/klipper/panda_breath.cfg); remove any other section listed above from your files.\n  2. Run again: sh install.sh --host %s\n' "${fw_host:-<device address>}" >&2
	else
		printf 'To use panda-breath instead, remove that module and the sections listed above (or keep the other integration).\n' >&2
	fi
	exit 1
fi

# Architecture: 64-bit userland only; the binary must match it.
elf() {
	# shellcheck disable=SC2046 # the bytes, one word each
	set -- $(od -An -v -tx1 -N20 "$1" 2>/dev/null)
	[ $# -ge 20 ] && [ "$1$2$3$4" = 7f454c46 ] || return 0
	if [ "$6" = 02 ]; then _m=${19}${20}; else _m=${20}${19}; fi
	case $5-$_m in 02-00b7) say aarch64 ;; 02-003e) say x86_64 ;; 01-0028) say "32-bit ARM" ;; 01-0003) say "32-bit x86" ;; *) say "ELF class $5 machine 0x$_m" ;; esac
}
if [ "$MODE" = overlay ]; then ARCH=aarch64; elif [ -e "$DEST/bin/sh" ]; then ARCH=$(elf "$DEST/bin/sh"); elif [ "$U1" = 1 ] && [ -n "$DEST" ]; then ARCH=aarch64; else ARCH=$(elf /bin/sh); fi
case $ARCH in
aarch64 | x86_64) ;;
"32-bit ARM") die "this system's userland is 32-bit ARM (armhf): panda-breath runs on 64-bit systems only (aarch64, x86_64). On a Raspberry Pi install a 64-bit OS (Raspberry Pi OS 64-bit); uname -m can say aarch64 while the userland is 32-bit" ;;
*) die "unsupported system (${ARCH:-unknown userland}): panda-breath is built for aarch64 and x86_64 Linux" ;;
esac
BINARY=$O_BIN
for b in "$HERE/dist/panda-breath-$ARCH-linux" "$HERE/panda-breath-$ARCH-linux" "$HERE/bin/panda-breath"; do [ -n "$BINARY" ] || [ ! -f "$b" ] || BINARY=$b; done
[ -n "$BINARY" ] || die "no panda-breath binary for $ARCH: put panda-breath-$ARCH-linux (and SHA256SUMS) from a release next to install.sh, build it (deno task compile) or pass --binary FILE"
[ -f "$BINARY" ] || die "binary not found: $BINARY"
BIN_ARCH=$(elf "$BINARY")
if [ -z "$BIN_ARCH" ] && [ "$FORCE" = 1 ]; then say "  $BINARY is not an ELF file (accepted: --force)"; elif [ "$BIN_ARCH" != "$ARCH" ]; then
	die "$BINARY is ${BIN_ARCH:-not an ELF executable}, but this system needs $ARCH: use panda-breath-$ARCH-linux"
fi
SUMS=${O_SUMS:-${BINARY%/*}/SHA256SUMS}
if [ -f "$SUMS" ]; then
	want=$(awk -v n="${BINARY##*/}" '$2 == n || $2 == "*" n { print $1; exit }' "$SUMS")
	[ -n "$want" ] || die "$SUMS lists no ${BINARY##*/}"
	got=$(sha256sum <"$BINARY") || die "sha256sum is needed to verify $SUMS"
	[ "${got%% *}" = "$want" ] || die "$BINARY does not match its SHA-256 in $SUMS: the download is damaged or not the released file; download it again"
	say "  checksum of ${BINARY##*/} matches $SUMS"
elif [ -n "$O_SUMS" ]; then die "--sums: $O_SUMS not found"; fi

# Settings: computed (and checked) now, written later.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/panda-breath.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
S_TARGET=$(seed_of "$SETTINGS")
S_REAL=$BASE$S_TARGET
S_OLD=$(mget settings | awk '{ print $1 }')
if [ ! -f "$S_REAL" ]; then S_KIND=new; elif [ "$(cksum_of "$S_REAL")" = "$S_OLD" ]; then S_KIND=ours; elif [ -n "$S_OLD" ]; then S_KIND=edited; else S_KIND=yours; fi
# Yours: only --host/--socket change it. New, or ours and unedited: the shipped default.
case $S_KIND in edited | yours) cp "$S_REAL" "$TMP/settings" ;; *) cp "$HERE/klipper/panda_bridge.cfg" "$TMP/settings" ;; esac
if [ "$S_KIND" = ours ]; then
	O_HOST=${O_HOST:-$(cfg --get "$S_REAL" panda_bridge host)} && O_SOCKET=${O_SOCKET:-$(cfg --get "$S_REAL" panda_bridge socket)}
fi
for kv in "host $O_HOST" "socket $O_SOCKET"; do
	[ -z "${kv#* }" ] || { cfg --set "$TMP/settings" "${kv%% *}" "${kv#* }" >"$TMP/s" && mv "$TMP/s" "$TMP/settings"; }
done
if ! cfg --check "$TMP/settings" >/dev/null 2>"$TMP/err"; then
	[ -z "$(cfg --get "$TMP/settings" panda_bridge host)" ] || die "$(sed "s|$TMP/settings|$SETTINGS|; s/^panda-breath: //" "$TMP/err")"
fi
HOST=$(cfg --get "$TMP/settings" panda_bridge host)

# ------------------------------------------------------------------ install
CHANGED=0 CAN_CHOWN=0
[ -n "$DEST" ] || [ "$MODE" = overlay ] || [ "$(id -u)" != 0 ] || CAN_CHOWN=1
: >"$TMP/m"
say "panda-breath $ACTION ($MODE${DEST:+, staged in $DEST}${MODE:+, }$(if [ "$U1" = 1 ]; then say "Snapmaker U1"; else say "Klipper host"; fi); service $SERVICE, user $RUN_USER)"
ensure_dir() {
	[ -n "$1" ] && [ ! -d "$BASE$1" ] || return 0
	! grep -qxF "dir $1" "$TMP/m" || return 0
	ensure_dir "${1%/*}"
	if act "create directory $1"; then mkdir "$BASE$1"; fi
	say "dir $1" >>"$TMP/m"
}
# put SRC TARGET MODE: copy unless identical; a running binary is replaced, never overwritten.
put() {
	say "file $2" >>"$TMP/m"
	if [ -f "$BASE$2" ] && cmp -s "$1" "$BASE$2"; then
		[ "$DRY" = 1 ] || chmod "$3" "$BASE$2"
		return 0
	fi
	ensure_dir "${2%/*}" && CHANGED=1
	if act "install $2"; then cp "$1" "$BASE$2.pb-tmp" && chmod "$3" "$BASE$2.pb-tmp" && mv -f "$BASE$2.pb-tmp" "$BASE$2"; fi
}
# render TEMPLATE TARGET MODE: the one place install-time values are filled in.
render() {
	sed -e "s|@BIN@|$BIN|g; s|@SETTINGS@|$SETTINGS|g; s|@LOG@|$LOG|g; s|@USER@|$RUN_USER|g" \
		-e "s|@LAUNCHER@|$LAUNCHER|g; s|@SUPERVISOR@|$SUPERVISOR|g; s|@RUNDIR@|$RUNDIR|g" \
		-e "s|@PIDFILE@|$PIDFILE|g; s|@INIT@|$INIT|g; s|@ACTDIR@|$ACTDIR|g; s|@REPAIR@|$REPAIR|g" \
		"$SVC/$1" >"$TMP/r"
	put "$TMP/r" "$2" "$3"
}
# add_line FILE TEXT: add TEXT to FILE once (before Klipper's SAVE_CONFIG block).
add_line() {
	say "line $1 $2" >>"$TMP/m"
	! grep -qxF "$2" "$BASE$1" || return 0
	awk -v l="$2" '!d && /^#\*# <-+ SAVE_CONFIG -+>/ { print l; d = 1 } { print } END { if (!d) print l }' "$BASE$1" >"$TMP/l"
	if act "add \"$2\" to $1"; then cat "$TMP/l" >"$BASE$1"; fi
}
own() { [ "$CAN_CHOWN" = 0 ] || [ "$DRY" = 1 ] || chown "$RUN_USER" "$BASE$1"; }
if [ "$MODE" = overlay ] && [ ! -d "$BASE" ] && say "dir /" >>"$TMP/m" && act "create directory $BASE"; then mkdir -p "$BASE"; fi

put "$BINARY" "$BIN" 755
for f in $SOURCES; do # the payload's master copies, for --repair
	case $f in install.sh | */panda-breath-*) m=755 ;; *) m=644 ;; esac
	if [ "$MODE" = live ]; then put "$HERE/$f" "$PAYLOAD/$f" $m; fi
done
render panda-breath-launch "$LAUNCHER" 755
put "$HERE/klipper/panda_bridge.py" "$EXTRA" 644
if [ "$SERVICE" = sysv ]; then render panda-breath-supervise "$SUPERVISOR" 755 && render S99panda-breath "$INIT" 755; fi
if [ "$SERVICE" = sysv ] && [ "$HOOKS" = 1 ]; then render klipper-hook.sh "$HOOK" 644; fi
if [ "$SERVICE" = systemd ]; then render panda-breath.service "$UNIT" 644; fi
if [ -n "$LOADER" ]; then
	render panda_bridge_active.cfg "$ACTDIR/panda_bridge.cfg" 644
	render panda_bridge_loader.cfg "$(seed_of "$LOADER")" 644
	own "$(seed_of "$LOADER")"
fi
ensure_dir "${S_TARGET%/*}"
if [ "$S_KIND" = new ]; then
	act "install $S_TARGET${HOST:+ (host: $HOST)}" && cp "$TMP/settings" "$S_REAL" && chmod 644 "$S_REAL" && own "$S_TARGET"
	CHANGED=1
elif ! cmp -s "$TMP/settings" "$S_REAL"; then
	act "update $S_TARGET (${S_KIND}: host:/socket: set, the rest kept)" && cat "$TMP/settings" >"$S_REAL"
	CHANGED=1
fi
case $S_KIND in # uninstall removes it only while unedited
new | ours) say "settings $(cksum_of "$TMP/settings") $S_TARGET" >>"$TMP/m" ;;
edited) say "settings $S_OLD $S_TARGET" >>"$TMP/m" ;;
esac
if [ "$MODE" = live ]; then
	[ -z "$INCLUDE" ] || add_line "$CFGDIR/printer.cfg" "$INCLUDE"
	if [ -f "$BASE$ASVC" ]; then while read -r l; do add_line "$ASVC" "$l"; done <"$SVC/moonraker.asvc"; fi
	ensure_dir "${LOG%/*}" && own "${LOG%/*}"
	say "log $LOG" >>"$TMP/m"
	if [ "$BIN" != "$CLI" ] && [ "$(readlink "$BASE$CLI" 2>/dev/null)" != "$BIN" ]; then
		ensure_dir "${CLI%/*}"
		act "link $CLI -> $BIN" && ln -sfn "$BIN" "$BASE$CLI"
	fi
	[ "$BIN" = "$CLI" ] || say "file $CLI" >>"$TMP/m"
fi

# What an earlier install had and this one no longer has.
mget file | while read -r f; do
	if ! grep -qxF "file $f" "$TMP/m" && [ -e "$BASE$f" ] && act "remove $f (no longer installed)"; then rm -f "$BASE$f"; fi
done
{
	say "# panda-breath manifest: written by install.sh, read by --uninstall and --repair"
	printf 'mode %s\nuser %s\nprinter-data %s\nklipper-dir %s\nservice %s\n' "$MODE" "$RUN_USER" "$PD" "$KLIPPER" "$SERVICE"
	{ mget dir | sed 's/^/dir /' && grep '^dir ' "$TMP/m"; } | awk '!s[$0]++'
	grep -v '^dir ' "$TMP/m"
} >"$TMP/manifest"
ensure_dir "$PAYLOAD"
if ! cmp -s "$TMP/manifest" "$BASE$PAYLOAD/manifest"; then
	act "write $PAYLOAD/manifest" && cp "$TMP/manifest" "$BASE$PAYLOAD/manifest"
fi

# ------------------------------------------------------------------ start
[ "$MODE" = live ] || { say "Overlay written to ${BASE%/root}; the printer seeds your settings to $SETTINGS (never overwriting them)." && exit 0; }
started=0 verb=start
[ "$CHANGED" = 0 ] || verb=restart
if [ -n "$DEST" ] || [ "$SERVICE" = none ] || [ "$DRY" = 1 ] || [ -z "$HOST" ]; then
	say "  not starting the service${DEST:+ (staged)}$([ -n "$HOST" ] || say " until host: is set in $SETTINGS")"
elif [ "$SERVICE" = systemd ]; then
	act "run: systemctl enable panda-breath && systemctl $verb panda-breath" && systemctl daemon-reload &&
		systemctl enable panda-breath.service && systemctl "$verb" panda-breath.service && started=1
elif act "run: $INIT $verb" && "$INIT" "$verb"; then started=1; fi
if [ "$RESTART_KLIPPER" = 1 ] && [ -z "$DEST" ] && [ "$DRY" = 0 ]; then
	if [ "$SERVICE" = systemd ]; then set -- systemctl restart klipper; else set -- /etc/init.d/S*klipper restart; fi
	say "  run: $*" && { "$@" || say "  could not restart Klipper: restart it yourself"; }
else say "Then restart Klipper's service (or use --restart-klipper): Klipper loads panda_bridge.py only at a restart."; fi
say "Settings: $SETTINGS (${HOST:+host: $HOST; }edit it in Mainsail/Fluidd, then restart panda-breath)."
[ "$U1" = 0 ] || say "Snapmaker U1: after a reboot without /oem/.debug or a firmware update, restore it with: sh $PAYLOAD/install.sh --repair"
[ -n "$DEST" ] || [ "$started" = 1 ] || [ -z "$HOST" ] || [ "$SERVICE" = none ] || [ "$DRY" = 1 ] || die "installed, but the service did not start (see $LOG)"
exit 0
