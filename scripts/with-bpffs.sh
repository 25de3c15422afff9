#!/bin/sh
# Runs "$@" with bpffs mounted at /sys/fs/bpf, as systemd mounts it at boot.
# On a machine that booted without it (a container, a minimal VM) it is
# mounted for the command and unmounted after, pass or fail, with what the
# kernel put in it; the emptied /sys/fs/bpf/couic the daemons pinned under
# goes too (rmdir leaves it if anything is still pinned there).
set -u
bpffs=/sys/fs/bpf
mounted=
if ! mountpoint -q "$bpffs"; then
	mount -t bpf bpf "$bpffs" || exit 1
	mounted=1
fi
# Ctrl-C stops the command, then the cleanup below runs (a handler, not an
# ignored signal: the command gets the default back).
trap ':' INT TERM
"$@"
status=$?
rmdir "$bpffs/couic" 2>/dev/null
if [ -n "$mounted" ]; then
	umount "$bpffs" || umount -l "$bpffs"
fi
exit $status
