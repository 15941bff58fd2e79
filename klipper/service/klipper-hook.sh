# panda-breath hook for /etc/hooks/klipper.d/ (written by install.sh).
# /etc/init.d/S60klipper sources this file in its own shell with its action in
# $1, so it must never exit and defines nothing. It starts panda-breath
# alongside Klipper (in the background, so Klipper's start is not delayed);
# /etc/init.d/S99panda-breath still starts it at boot where hooks do not exist.
# shellcheck shell=sh
case ${1:-} in
start | restart)
	if [ -x '@INIT@' ]; then
		'@INIT@' start </dev/null >/dev/null 2>&1 &
	fi
	;;
esac
