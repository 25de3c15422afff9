#!/bin/sh
# On the attacker VM: `sudo flood [address]` sends ICMP echo requests as
# fast as the replies come back (at least 100 a second). ping prints a dot
# per request and removes it when the reply arrives: once couic drops this
# VM's address, the dots pile up. Ctrl-C stops it and prints the loss.
set -eu
TARGET=${1:-192.168.56.10}
if [ "$(id -u)" != 0 ]; then
	echo "flood needs root (ping -f): sudo flood $TARGET" >&2
	exit 1
fi
exec ping -f -s 1200 "$TARGET"
