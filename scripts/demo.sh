#!/usr/bin/env bash
# `make run` without a config: a throw-away demo of couic.
#
# Creates a network namespace `couic-demo` joined to this host by a veth pair
# (couic0 here, 10.200.0.1 / fd00:200::1; demo0 inside, 10.200.0.2 /
# fd00:200::2), a working directory and config under ./.couic-run, and runs
# couic attached to couic0. Ctrl-C stops couic and removes all of it.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
COUIC="${COUIC:-$ROOT/target/debug/couic}"
RUN="$ROOT/.couic-run"
NS=couic-demo
HOST_IF=couic0
NS_IF=demo0

if [ "$(id -u)" != 0 ]; then
	echo "make run needs root (or CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN for the namespace)" >&2
	exit 1
fi

cleanup() {
	trap - EXIT INT TERM
	if [ -n "${COUIC_PID:-}" ] && kill -0 "$COUIC_PID" 2>/dev/null; then
		kill -TERM "$COUIC_PID" 2>/dev/null || true
		wait "$COUIC_PID" 2>/dev/null || true
	fi
	# couic leaves its pinned link filtering when it stops: the demo ends it.
	if [ -f "$RUN/couic.toml" ]; then
		"$COUIC" -c "$RUN/couic.toml" --detach >/dev/null 2>&1 || true
	fi
	ip link del "$HOST_IF" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$RUN"
	echo "couic demo: stopped, its pins, namespace $NS, veth $HOST_IF and $RUN removed"
}

if ip netns list | grep -qw "$NS" || ip link show "$HOST_IF" >/dev/null 2>&1; then
	echo "a previous demo is still set up; removing it"
	ip link del "$HOST_IF" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
fi
trap cleanup EXIT INT TERM

ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$NS_IF" netns "$NS"
ip addr add 10.200.0.1/24 dev "$HOST_IF"
ip -6 addr add fd00:200::1/64 dev "$HOST_IF" nodad
ip link set "$HOST_IF" up
ip -n "$NS" addr add 10.200.0.2/24 dev "$NS_IF"
ip -n "$NS" -6 addr add fd00:200::2/64 dev "$NS_IF" nodad
ip -n "$NS" link set "$NS_IF" up
ip -n "$NS" link set lo up

rm -rf "$RUN"
mkdir -p "$RUN/work" "$RUN/logs"
cat >"$RUN/couic.toml" <<EOF
# Written by scripts/demo.sh; removed when the demo stops.
ifaces = ["$HOST_IF"]
operation_mode = "auto"
working_dir = "$RUN/work"
user = "root"
group = "root"

[logging]
dir = "$RUN/logs"
rotation = "never"

[server]
socket = "$RUN/couic.sock"
EOF
cat >"$RUN/couicctl.toml" <<EOF
mode = "local"
socket = "$RUN/couic.sock"
client_file = "$RUN/work/rbac/clients/couicctl.toml"
EOF

"$COUIC" -c "$RUN/couic.toml" &
COUIC_PID=$!

for _ in $(seq 1 100); do
	[ -S "$RUN/couic.sock" ] && break
	kill -0 "$COUIC_PID" 2>/dev/null || { echo "couic exited; see the lines above" >&2; exit 1; }
	sleep 0.1
done

CTL="$ROOT/target/debug/couicctl -c $RUN/couicctl.toml"
cat <<EOF

couic is running (pid $COUIC_PID), attached to $HOST_IF; its config is $RUN/couic.toml.
Traffic from the namespace $NS (10.200.0.2, fd00:200::2) reaches this host through $HOST_IF:

  ip netns exec $NS ping -c3 10.200.0.1            # passes
  $CTL drop add 10.200.0.2/32
  ip netns exec $NS ping -c3 -W1 10.200.0.1        # dropped by XDP
  $CTL stats global
  $CTL drop delete 10.200.0.2/32

The API listens on $RUN/couic.sock (token in $RUN/work/rbac/clients/couicctl.toml):
  curl --unix-socket $RUN/couic.sock -H "Authorization: Bearer \$(sed -n 's/^token = \"\\(.*\\)\"/\\1/p' $RUN/work/rbac/clients/couicctl.toml)" http://couic/v1/stats

Press Ctrl-C to stop couic and remove the namespace, the veth pair and $RUN.
EOF

set +e
wait "$COUIC_PID"
status=$?
COUIC_PID=
exit "$status"
