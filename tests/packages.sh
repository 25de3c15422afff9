#!/usr/bin/env bash
# The Debian packages, end to end. Run by `make test-packages` (part of
# `make test`) after `make deb`, as root; every step must pass, none is
# skipped.
#
#  1. Static: lintian, `systemd-analyze security` scores, the Vagrantfile,
#     the Prometheus rules, while mmdebstrap makes a throw-away Debian root
#     (minbase plus systemd, as on a real host). mmdebstrap, not
#     debootstrap: the same root from the same mirror in about 20 s
#     instead of one to two minutes.
#  2. vagrant/provision-couic.sh installs packages of a lower version into
#     the root: files, modes, the couic account, conffiles. The units pass
#     `systemd-analyze verify` there.
#  3. The installed daemon starts as couic.service would start it: its
#     user and groups, exactly its capabilities, no_new_privs, its umask,
#     and the mounts its ProtectSystem=, PrivateDevices=, ProtectProc=... make,
#     attached to a veth whose other end is in a namespace made here.
#  4. Upgrade to the packages of `make deb` while it runs: config and state
#     kept, the restart asked for. The new daemon runs under strace:
#     couicctl drives it as a member of group couic, it drops the traffic
#     of a blocked source, holds no capability, and every system call,
#     socket family and mapping it made is one the unit allows.
#  5. The hardening lines the unit leaves out, proven needed: a user
#     namespace (PrivateUsers=) or a network namespace (PrivateNetwork=)
#     stops couic, and so does the lack of either capability it needs.
#  6. remove keeps config and state; purge leaves nothing of couic.
#
# Nothing is installed on this machine: everything happens in the root,
# in a namespace, and on a veth pair made here, all removed on exit even
# on failure. COUIC_TEST_MIRROR and COUIC_TEST_SUITE choose the Debian
# mirror and release (default: deb.debian.org, this host's release).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SELF=$REPO/tests/packages.sh
DEBS=$REPO/target/debian
UNITS=(couic couic-report)
# Highest exposure allowed, in tenths as `--threshold` counts them.
declare -A MAX_EXPOSURE=([couic]=15 [couic-report]=10)
NETS=10.213.0
OPERATOR=pkgop
T0=$SECONDS

say() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - T0))"; }
fail() {
	printf 'FAIL: %s\n' "$*" >&2
	exit 1
}

# --- The sandbox: couic.service's mounts, run in a private mount namespace.
# `packages.sh --sandbox ROOT TRACE [--userns] CMD...`: CMD in ROOT, under
# strace when TRACE is a file name ("-": not traced). --userns: as root of
# a user namespace of its own, as PrivateUsers= would run it (it has to be
# made before chroot: the kernel makes none for a chrooted process).
if [ "${1:-}" = --sandbox ]; then
	root=$2 trace=$3 userns=()
	shift 3
	if [ "$1" = --userns ]; then
		userns=(unshare --user --map-root-user)
		shift
	fi
	mount --make-rprivate /
	# ProtectSystem=strict: all read-only but the unit's State-, Logs- and
	# RuntimeDirectory=.
	mount --bind "$root" "$root"
	mount -o remount,bind,ro "$root"
	for dir in var/lib/couic var/log/couic run/couic; do
		mount --bind "$root/$dir" "$root/$dir"
		mount -o remount,bind,rw "$root/$dir"
	done
	# ProtectProc=invisible, ProcSubset=pid.
	mount -t proc -o nosuid,nodev,noexec,hidepid=invisible,subset=pid proc "$root/proc"
	# ProtectKernelTunables=: /sys read-only.
	mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
	# bpffs (the test's own, BPFFS), read-only but for ReadWritePaths=.
	mount --bind "$BPFFS" "$root/sys/fs/bpf"
	mount -o remount,bind,ro "$root/sys/fs/bpf"
	mount --bind "$BPFFS/couic" "$root/sys/fs/bpf/couic"
	mount -o remount,bind,rw "$root/sys/fs/bpf/couic"
	# PrivateDevices=: the pseudo-devices only.
	mount -t tmpfs -o mode=0755,nosuid,noexec tmpfs "$root/dev"
	for dev in null zero full random urandom tty; do
		touch "$root/dev/$dev"
		mount --bind "/dev/$dev" "$root/dev/$dev"
	done
	# PrivateTmp=.
	mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
	if [ "$trace" = - ]; then
		exec "${userns[@]}" chroot "$root" "$@"
	fi
	exec strace -f -qq -e signal=none -o "$trace" chroot "$root" "$@"
fi

[ "$(id -u)" = 0 ] || fail "run as root (chroot, namespaces, XDP)"
for tool in mmdebstrap lintian strace systemd-analyze vagrant promtool ruby setpriv unshare ip ping; do
	command -v "$tool" >/dev/null || fail "$tool is missing: make deps installs it"
done
couic_deb=$(find "$DEBS" -maxdepth 1 -name 'couic_*.deb')
report_deb=$(find "$DEBS" -maxdepth 1 -name 'couic-report_*.deb')
[ -n "$couic_deb" ] && [ -n "$report_deb" ] || fail "no packages in $DEBS: run make deb"
[ "$(echo "$couic_deb" | wc -l)" = 1 ] || fail "several couic packages in $DEBS"
VERSION=$(dpkg-deb -f "$couic_deb" Version)
PREV_VERSION=${VERSION%-*}~pkgtest-1
dpkg --compare-versions "$PREV_VERSION" lt "$VERSION"

WORK=$(mktemp -d /var/tmp/couic-packages.XXXXXX)
ROOT=$WORK/root
NS=couic-pkg$$
HOST_IF=cpk$$
NS_IF=cpkn$$
DAEMON_PID=
TRACER_PID=
BOOTSTRAP_PID=

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	set +e
	if [ -n "$TRACER_PID" ] && kill -0 "$TRACER_PID" 2>/dev/null; then
		kill -TERM "${DAEMON_PID:-$TRACER_PID}"
		wait "$TRACER_PID" 2>/dev/null
	fi
	if [ -n "$BOOTSTRAP_PID" ] && kill -0 "$BOOTSTRAP_PID" 2>/dev/null; then
		kill -TERM "$BOOTSTRAP_PID"
		wait "$BOOTSTRAP_PID" 2>/dev/null
	fi
	# Deepest first; the daemon's own mounts died with its namespace.
	findmnt -rn -o TARGET | grep "^$ROOT/" | sort -r | while read -r mnt; do
		umount "$mnt" || umount -l "$mnt"
	done
	# The test's bpffs: its pins (and the links they hold) go with it.
	if [ -n "${BPFFS:-}" ] && mountpoint -q "$BPFFS"; then
		umount "$BPFFS" || umount -l "$BPFFS"
	fi
	ip link del "$HOST_IF" 2>/dev/null
	ip netns del "$NS" 2>/dev/null
	if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then
		echo "packages.sh: mounts left under $ROOT; not removing $WORK" >&2
	else
		rm -rf --one-file-system "$WORK"
	fi
	[ "$status" = 0 ] || echo "packages.sh: FAILED after $((SECONDS - T0))s" >&2
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. Static checks, while the root is made ------------------------------
say "mmdebstrap in the background"
SUITE=${COUIC_TEST_SUITE:-$(. /etc/os-release && echo "$VERSION_CODENAME")}
MIRROR=${COUIC_TEST_MIRROR:-http://deb.debian.org/debian}
mmdebstrap --variant=minbase --include=systemd "$SUITE" "$ROOT" "$MIRROR" \
	>"$WORK/mmdebstrap.log" 2>&1 &
BOOTSTRAP_PID=$!

say "lintian"
# initial-upload-closes-no-bugs asks for the ITP bug of an upload to
# Debian's archive, which these packages are not.
lintian --fail-on error,warning --suppress-tags initial-upload-closes-no-bugs \
	"$couic_deb" "$report_deb"

say "systemd-analyze security"
for unit in "${UNITS[@]}"; do
	systemd-analyze security --offline=yes --threshold="${MAX_EXPOSURE[$unit]}" \
		"$REPO/systemd/$unit.service" | tail -1
done

say "vagrant validate, ruby -c"
# vagrant-libvirt makes libvirt the provider whose settings are checked;
# VirtualBox is not in Debian, so its block is only parsed.
(cd "$REPO/vagrant" && VAGRANT_DOTFILE_PATH=$WORK/vagrant vagrant validate)
ruby -c "$REPO/vagrant/Vagrantfile"
bash -n "$REPO/vagrant/provision-couic.sh" "$REPO/vagrant/flood.sh"

say "promtool check rules"
promtool check rules "$REPO/examples/prometheus/couic.rules.yml"

say "packages of the lower version $PREV_VERSION"
mkdir "$WORK/prev" "$WORK/new"
cp "$couic_deb" "$report_deb" "$WORK/new/"
(cd "$REPO" && for pkg in couic couic-report; do
	cargo deb --no-build --fast -q -p "$pkg" --deb-version "$PREV_VERSION" -o "$WORK/prev"
done) >/dev/null
# cargo-deb deletes the other versions in target/debian: put ours back.
cp "$WORK/new/"*.deb "$DEBS/"

say "waiting for mmdebstrap ($SUITE from $MIRROR)"
wait "$BOOTSTRAP_PID" || { tail -20 "$WORK/mmdebstrap.log" >&2; fail "mmdebstrap"; }
BOOTSTRAP_PID=

# --- 2. Install the lower version with the provisioning script -------------
# In the root: `in_root CMD...`; as the operator, a member of group couic:
# `as_operator CMD...`.
in_root() {
	chroot "$ROOT" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@" </dev/null
}
as_operator() { in_root setpriv --reuid="$OPERATOR" --regid="$OPERATOR" --init-groups "$@"; }
apt_in_root() { in_root apt-get -y -qq -o Dpkg::Use-Pty=0 "$@" >>"$WORK/apt.log"; }

say "preparing the root"
mount -t proc proc "$ROOT/proc"
mkdir -p "$ROOT/pkgtest"
cp -r "$WORK/prev" "$WORK/new" "$REPO/vagrant/provision-couic.sh" "$ROOT/pkgtest/"
# systemd does not run here. The maintainer scripts believe it does, and
# what they ask of it is recorded: the test starts and stops couic itself.
# apt runs dpkg with a PATH of its own (DPkg::Path): the shims go first.
mkdir -p "$ROOT/run/systemd/system"
echo 'DPkg::Path "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin";' \
	>"$ROOT/etc/apt/apt.conf.d/99pkgtest-shims"
cat >"$ROOT/usr/local/sbin/deb-systemd-invoke" <<'SHIM'
#!/bin/sh
echo "deb-systemd-invoke $*" >>/pkgtest/service-calls
SHIM
# systemctl's work on unit files (preset, enable) is done; what needs a
# running systemd is only recorded.
cat >"$ROOT/usr/local/sbin/systemctl" <<'SHIM'
#!/bin/sh
echo "systemctl $*" >>/pkgtest/service-calls
case " $* " in
*" daemon-reload "* | *" start "* | *" stop "* | *" restart "* | *" status "*) exit 0 ;;
esac
exec /usr/bin/systemctl "$@"
SHIM
chmod 755 "$ROOT/usr/local/sbin/deb-systemd-invoke" "$ROOT/usr/local/sbin/systemctl"
: >"$ROOT/pkgtest/service-calls"
in_root useradd --no-create-home "$OPERATOR"
ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$NS_IF" netns "$NS"
ip addr add "$NETS.1/24" dev "$HOST_IF"
ip link set "$HOST_IF" up
ip -n "$NS" addr add "$NETS.2/24" dev "$NS_IF"
ip -n "$NS" link set "$NS_IF" up

say "vagrant/provision-couic.sh with the $PREV_VERSION packages"
in_root sh /pkgtest/provision-couic.sh "$NETS.1" "$OPERATOR" /pkgtest/prev

# `expect_stat PATH MODE OWNER:GROUP`, names as the root resolves them.
expect_stat() {
	local got
	got=$(in_root stat -c '%a %U:%G' "$1") || fail "$1 is missing"
	[ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
expect_call() {
	grep -qxF "$1" "$ROOT/pkgtest/service-calls" ||
		fail "the maintainer scripts did not ask for '$1': $(cat "$ROOT/pkgtest/service-calls")"
}
expect_log() { # FILE TEXT
	grep -qF -- "$2" "$1" || { tail -20 "$1" >&2; fail "no '$2' in $(basename "$1")"; }
}

check_installed() { # VERSION
	local pkg
	for pkg in couic couic-report; do
		[ "$(in_root dpkg-query -W -f '${Version} ${db:Status-Status}' "$pkg")" = "$1 installed" ] ||
			fail "$pkg $1 is not installed"
	done
	# The account: system ids, no shell, no home.
	local entry
	entry=$(in_root getent passwd couic) || fail "no couic user"
	IFS=: read -r _ _ uid gid _ home shell <<<"$entry"
	[ "$uid" -lt 1000 ] && [ "$home" = /nonexistent ] && [ "$shell" = /usr/sbin/nologin ] ||
		fail "couic user: $entry"
	[ "$(in_root getent group couic | cut -d: -f3)" = "$gid" ] || fail "couic is not the user's group"
	[ ! -e "$ROOT/nonexistent" ] || fail "a home was made for couic"
	in_root id -nG "$OPERATOR" | grep -qw couic || fail "$OPERATOR is not in group couic"

	expect_stat /usr/sbin/couic 755 root:root
	expect_stat /usr/bin/couicctl 755 root:root
	expect_stat /usr/bin/couic-report 755 root:root
	expect_stat /etc/couic 755 root:root
	expect_stat /etc/couic/couic.toml 640 root:couic
	expect_stat /etc/couic/couicctl.toml 640 root:couic
	# The modes couic checks at start.
	local dir
	for dir in "" /rbac /rbac/clients /sets /sets/drop /sets/ignore; do
		expect_stat "/var/lib/couic$dir" 755 couic:couic
	done
	expect_stat /var/lib/couic/rbac/clients/couicctl.toml 600 couic:couic
	expect_stat /var/lib/couic/couicctl-shared.toml 640 root:couic
	cmp -s "$ROOT/var/lib/couic/rbac/clients/couicctl.toml" "$ROOT/var/lib/couic/couicctl-shared.toml" ||
		fail "the shared client file is not the couicctl client's"
	expect_stat /var/log/couic 750 couic:couic
	expect_stat /etc/couic-report/config.toml 600 root:root
	grep -Eq '^secret = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"$' \
		"$ROOT/etc/couic-report/config.toml" || fail "couic-report has no random secret"
	for path in usr/lib/systemd/system/couic.service usr/lib/systemd/system/couic-report.service \
		usr/share/man/man8/couic.8.gz usr/share/man/man5/couic.toml.5.gz \
		usr/share/man/man1/couicctl.1.gz usr/share/man/man1/couicctl-drop-add.1.gz \
		usr/share/man/man8/couic-report.8.gz \
		usr/share/bash-completion/completions/couicctl usr/share/zsh/vendor-completions/_couicctl \
		usr/share/fish/vendor_completions.d/couicctl.fish \
		etc/fail2ban/action.d/couic.conf usr/share/doc/couic/examples/nginx.conf \
		usr/share/couic-report/config.toml; do
		expect_stat "/$path" 644 root:root
	done
	[ "$(in_root dpkg-query -W -f '${Conffiles}' couic | awk '{print $1}' | sort | tr '\n' ' ')" = \
		"/etc/couic/couic.toml /etc/couic/couicctl.toml /etc/fail2ban/action.d/couic.conf " ] ||
		fail "couic's conffiles: $(in_root dpkg-query -W -f '${Conffiles}' couic)"
	[ -z "$(in_root dpkg-query -W -f '${Conffiles}' couic-report)" ] ||
		fail "couic-report's config is generated, not a conffile"
	for unit in "${UNITS[@]}"; do
		[ -L "$ROOT/etc/systemd/system/multi-user.target.wants/$unit.service" ] ||
			fail "$unit.service is not enabled"
	done
}

say "checking the $PREV_VERSION installation"
check_installed "$PREV_VERSION"
expect_call "deb-systemd-invoke start couic.service"
expect_call "deb-systemd-invoke start couic-report.service"
expect_call "systemctl restart couic-report.service couic.service"
grep -qx "ifaces = \[\"$HOST_IF\"\]" "$ROOT/etc/couic/couic.toml" ||
	fail "provisioning did not attach couic to $HOST_IF"

say "systemd-analyze verify, in the root"
# MANPATH: the Documentation= pages are looked up where the package put them.
for unit in "${UNITS[@]}"; do
	cmp "$REPO/systemd/$unit.service" "$ROOT/usr/lib/systemd/system/$unit.service"
	MANPATH=$ROOT/usr/share/man systemd-analyze verify --root="$ROOT" "$unit.service"
done

# --- 3. The daemon as couic.service runs it ---------------------------------
UNIT_FILE=$ROOT/usr/lib/systemd/system/couic.service
unit_value() { sed -n "s/^$1=//p" "$UNIT_FILE" | tail -1; }
# The sandbox makes the mounts of these lines, and the test runs the
# ExecStartPre= ones on its own bpffs; the unit must have them.
for line in ProtectSystem=strict PrivateDevices=yes PrivateTmp=yes ProtectKernelTunables=yes \
	ProtectProc=invisible ProcSubset=pid NoNewPrivileges=yes StateDirectory=couic \
	LogsDirectory=couic RuntimeDirectory=couic ReadWritePaths=/sys/fs/bpf/couic \
	"ExecStartPre=+/bin/chmod o+x /sys/fs/bpf" \
	"ExecStartPre=+/usr/bin/install -d -m 0700 -o couic -g couic /sys/fs/bpf/couic"; do
	grep -qx "$line" "$UNIT_FILE" || fail "couic.service lacks $line, which the test emulates"
done
# A bpffs of the test's own (the machine's /sys/fs/bpf is left alone),
# prepared as the unit's ExecStartPre= lines prepare /sys/fs/bpf: mode
# 0700 as systemd mounts it, then searchable, with couic's directory.
BPFFS=$WORK/bpffs
export BPFFS
mkdir -p "$BPFFS"
mount -t bpf -o mode=0700 bpf "$BPFFS"
chmod o+x "$BPFFS"
install -d -m 0700 -o "$(in_root id -u couic)" -g "$(in_root id -g couic)" "$BPFFS/couic"
PINS=$BPFFS/couic/var-lib-couic
UNIT_USER=$(unit_value User)
UNIT_GROUP=$(unit_value Group)
UNIT_UMASK=$(unit_value UMask)
read -r -a EXEC_START <<<"$(unit_value ExecStart)"
# CAP_BPF CAP_NET_ADMIN ... as setpriv spells them: bpf net_admin ...
read -r -a UNIT_CAPS <<<"$(unit_value AmbientCapabilities | tr 'A-Z' 'a-z' | sed 's/cap_//g')"
[ "$(unit_value CapabilityBoundingSet)" = "$(unit_value AmbientCapabilities)" ] ||
	fail "couic.service: the bounding set is not the ambient set"
# The command couic.service runs, with these capabilities (setpriv's
# names): `unit_command CAPS...` sets UNIT_CMD.
unit_command() {
	local set="-all" cap
	for cap; do set+=",+$cap"; done
	UNIT_CMD=(setpriv --reuid="$UNIT_USER" --regid="$UNIT_GROUP" --init-groups
		--inh-caps="$set" --ambient-caps="$set" --bounding-set="$set" --no-new-privs
		-- "${EXEC_START[@]}")
}

# Starts a daemon in the background: `start_daemon NAME TRACE CMD...`: the
# sandbox's arguments, run with the unit's umask.
start_daemon() {
	local name=$1 trace=$2
	shift 2
	# RuntimeDirectory=: made at start with its mode, removed at stop.
	install -d -m "$(unit_value RuntimeDirectoryMode)" "$ROOT/run/couic"
	in_root chown "$UNIT_USER:$UNIT_GROUP" /run/couic
	(umask "$UNIT_UMASK" && exec unshare --mount -- "$SELF" --sandbox "$ROOT" "$trace" "$@") \
		>"$WORK/$name.out" 2>&1 &
	TRACER_PID=$!
	DAEMON_PID=
	# Under strace, couic is strace's child; otherwise the same process.
	local i pid
	for i in $(seq 100); do
		pid=$TRACER_PID
		if [ "$trace" != - ]; then
			pid=$(cat "/proc/$TRACER_PID/task/$TRACER_PID/children" 2>/dev/null || true)
			pid=${pid%% *}
		fi
		if [ -n "$pid" ] && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */usr/sbin/couic ]]; then
			DAEMON_PID=$pid
			return 0
		fi
		kill -0 "$TRACER_PID" 2>/dev/null || return 0
		sleep 0.1
	done
}
# Waits until the operator's couicctl gets an answer.
wait_ready() {
	local i
	for i in $(seq 150); do
		if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null &&
			as_operator couicctl stats global >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$TRACER_PID" 2>/dev/null || break
		sleep 0.2
	done
	tail -20 "$WORK/$1.out" >&2
	fail "couic ($1) did not come up"
}
# SIGTERM, as systemctl stop; the exit status must be 0.
stop_daemon() {
	kill -TERM "${DAEMON_PID:-$TRACER_PID}"
	wait "$TRACER_PID" || { tail -20 "$WORK/$1.out" >&2; fail "couic ($1) did not stop cleanly"; }
	TRACER_PID= DAEMON_PID=
	rm -rf "$ROOT/run/couic"
}
# The daemon must fail to start, saying so: `expect_refusal NAME TEXT CMD...`.
expect_refusal() {
	local name=$1 text=$2
	shift 2
	start_daemon "$name" - "$@"
	local i
	for i in $(seq 100); do
		kill -0 "$TRACER_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$TRACER_PID" 2>/dev/null; then
		stop_daemon "$name"
		fail "couic started anyway ($name)"
	fi
	! wait "$TRACER_PID" || fail "couic exited 0 ($name)"
	TRACER_PID= DAEMON_PID=
	expect_log "$WORK/$name.out" "$text"
	echo "$name: $(grep -m1 -F -- "$text" "$WORK/$name.out" | sed 's/\x1b\[[0-9;]*m//g')"
	rm -rf "$ROOT/run/couic"
}

say "couic $PREV_VERSION, as couic.service runs it"
unit_command "${UNIT_CAPS[@]}"
start_daemon prev - "${UNIT_CMD[@]}"
wait_ready prev
expect_log "$WORK/prev.out" "XDP program attached to interface: $HOST_IF"
# State to keep across the upgrade: a set file and an API client.
as_operator couicctl sets create drop pkgtest 198.51.100.0/24 >/dev/null
as_operator couicctl clients add --name pkgtest --group clientro >/dev/null
expect_stat /var/lib/couic/sets/drop/pkgtest.couic 600 couic:couic
expect_stat /var/lib/couic/rbac/clients/pkgtest.toml 600 couic:couic
sha256sum "$ROOT/etc/couic/couic.toml" "$ROOT/etc/couic/couicctl.toml" \
	"$ROOT/var/lib/couic/sets/drop/pkgtest.couic" "$ROOT/var/lib/couic/rbac/clients/pkgtest.toml" \
	"$ROOT/var/lib/couic/rbac/clients/couicctl.toml" "$ROOT/etc/couic-report/config.toml" \
	>"$WORK/state.sha256"

# --- 4. Upgrade while it runs ------------------------------------------------
say "upgrade to $VERSION"
: >"$ROOT/pkgtest/service-calls"
apt_in_root install --no-install-recommends "/pkgtest/new/$(basename "$couic_deb")" \
	"/pkgtest/new/$(basename "$report_deb")"
check_installed "$VERSION"
sha256sum --quiet -c "$WORK/state.sha256" || fail "the upgrade changed configuration or state"
expect_call "deb-systemd-invoke restart couic.service"
expect_call "deb-systemd-invoke restart couic-report.service"
if grep -q "stop" "$ROOT/pkgtest/service-calls"; then
	fail "the upgrade stopped a service instead of restarting it"
fi
# The restart the postinst asked for.
stop_daemon prev
start_daemon new "$WORK/couic.strace" "${UNIT_CMD[@]}"
wait_ready new
expect_log "$WORK/new.out" "XDP program attached to interface: $HOST_IF"

say "the upgraded daemon: state, couicctl as group couic, filtering, capabilities"
as_operator couicctl sets list drop | grep -qw pkgtest || fail "the set file did not survive the upgrade"
as_operator couicctl clients list | grep -qw pkgtest || fail "the API client did not survive the upgrade"
# Only group couic: anyone else cannot read the client file.
if in_root setpriv --reuid=nobody --regid=nogroup --clear-groups couicctl stats global >/dev/null 2>&1; then
	fail "a user outside group couic could drive couic"
fi
dropped() { # XDP_DROP packets so far
	as_operator couicctl stats global --json | tr -d ' \n' |
		sed -n 's/.*"XDP_DROP":{"rx_packets":\([0-9]*\).*/\1/p'
}
from_ns() { ip netns exec "$NS" ping -q -c 5 -i 0.2 -W 1 "$NETS.1" >/dev/null 2>&1; }
from_ns || fail "$NETS.2 cannot reach $NETS.1 before any rule"
before=$(dropped)
as_operator couicctl drop add "$NETS.2/32" -t pkgtest >/dev/null
if from_ns; then
	fail "the blocked source still gets through"
fi
after=$(dropped)
[ "$((after - before))" -ge 5 ] || fail "couic counted $((after - before)) drops, expected 5 or more"
echo "dropped $((after - before)) packets from $NETS.2"
# No thread holds a capability, and none can regain one.
for task in /proc/"$DAEMON_PID"/task/*; do
	for set in CapEff CapPrm CapInh CapAmb; do
		grep -qx "$set:	0000000000000000" "$task/status" ||
			fail "thread $task: $(grep "^$set" "$task/status")"
	done
	grep -qx "NoNewPrivs:	1" "$task/status" || fail "thread $task can gain privileges"
done
expect_stat /run/couic/couic.sock 660 couic:couic
# The log file gets the unit's umask (group couic may read it).
log_file=$(find "$ROOT/var/log/couic" -name 'couic.*log' | head -1)
[ -n "$log_file" ] || fail "no log file in /var/log/couic"
expect_stat "${log_file#"$ROOT"}" 640 couic:couic
# Reports are enabled by the provisioning and couic-report does not run
# here: couic keeps retrying, which exercises its AF_INET sockets.
expect_log "$WORK/new.out" "reports go to http://127.0.0.1:8000"
stop_daemon new
# Stopped, it leaves its pinned link filtering (README "Restarts").
expect_log "$WORK/new.out" "XDP program left attached with the last rules"
ls "$PINS" | grep -q "_$HOST_IF\$" || fail "no pinned link of $HOST_IF in $PINS"
ip link show "$HOST_IF" | grep -q "prog/xdp" || fail "the pinned link of $HOST_IF detached"

say "every system call, socket family and mapping is one couic.service allows"
# The unit's SystemCallFilter= lines, applied in order as systemd does:
# the first allows a list, a later ~ line removes from it, a later plain
# line adds to it. Groups are expanded with systemd-analyze.
declare -A SC_GROUPS ALLOWED
current=
while IFS= read -r line; do
	case $line in
	@*) current=${line%% *} SC_GROUPS[$current]= ;;
	"    #"*) ;;
	"    "*) [ -z "$current" ] || SC_GROUPS[$current]+=" ${line#    }" ;;
	*) current= ;;
	esac
done < <(systemd-analyze syscall-filter --no-pager 2>/dev/null)
expand() {
	local item
	for item; do
		if [[ $item == @* ]]; then
			[ -n "${SC_GROUPS[$item]+x}" ] || fail "unknown system call group $item"
			expand ${SC_GROUPS[$item]}
		else
			echo "$item"
		fi
	done
}
# The evaluation itself: bpf is outside @system-service, read is in it.
calls=$(expand @system-service)
grep -qx read <<<"$calls" && ! grep -qx bpf <<<"$calls" ||
	fail "cannot read systemd's system call groups"
first=1
while IFS= read -r value; do
	if [[ $value == "~"* ]]; then
		[ "$first" = 0 ] || fail "couic.service's first SystemCallFilter= is a deny list"
		calls=$(expand ${value#"~"})
		for call in $calls; do unset "ALLOWED[$call]"; done
	else
		calls=$(expand $value)
		for call in $calls; do ALLOWED[$call]=1; done
	fi
	first=0
done < <(sed -n "s/^SystemCallFilter=//p" "$UNIT_FILE")
[ "$first" = 0 ] || fail "couic.service has no SystemCallFilter="
# couic's own calls: from its execve on (setpriv's and chroot's come before).
start=$(grep -n 'execve("/usr/sbin/couic"' "$WORK/couic.strace" | head -1 | cut -d: -f1)
[ -n "$start" ] || fail "no execve of couic in the trace"
tail -n +"$start" "$WORK/couic.strace" | grep -v ' resumed>' | sed -E 's/^[0-9]+ +//' >"$WORK/calls"
denied=
for call in $(grep -oE '^[a-z0-9_]+\(' "$WORK/calls" | tr -d '(' | sort -u); do
	[ -n "${ALLOWED[$call]+x}" ] || denied+=" $call"
done
[ -z "$denied" ] || fail "couic made system calls couic.service denies:$denied"
for call in bpf capset; do
	grep -q "^$call(" "$WORK/calls" || fail "couic never called $call(): the filter need not allow it"
done
# RestrictAddressFamilies=
families=$(grep -oE '^socket(pair)?\(AF_[A-Z0-9]+' "$WORK/calls" | sed 's/.*(//' | sort -u | tr '\n' ' ')
for family in $families; do
	unit_value RestrictAddressFamilies | grep -qw "$family" ||
		fail "couic opened an $family socket, which couic.service forbids"
done
echo "socket families used: $families"
case " $families" in *" AF_INET "*) ;; *) fail "no AF_INET socket: reporting was not exercised" ;; esac
# MemoryDenyWriteExecute=: no writable and executable mapping, no mprotect
# adding PROT_EXEC.
if grep -E '^mmap\(.*PROT_WRITE\|PROT_EXEC|^mmap\(.*PROT_EXEC\|.*PROT_WRITE|^(pkey_)?mprotect\(.*PROT_EXEC' "$WORK/calls"; then
	fail "couic maps memory MemoryDenyWriteExecute= would refuse"
fi
# RestrictNamespaces=, RestrictSUIDSGID=, LockPersonality=.
if grep -E '^(unshare|setns|personality)\(|CLONE_NEW' "$WORK/calls"; then
	fail "couic makes or joins namespaces, or changes its personality"
fi
if grep -E '^(f?chmod|fchmodat)\(.*, 0[2-7][0-7]{3}[,)]' "$WORK/calls"; then
	fail "couic sets a setuid or setgid bit"
fi
# The sandbox's read-only or hidden paths: nothing was refused.
if grep -E '= -1 (EROFS|EACCES|EPERM) ' "$WORK/calls"; then
	fail "a call was refused under couic.service's sandbox"
fi
echo "$(grep -oE '^[a-z0-9_]+\(' "$WORK/calls" | sort -u | wc -l) distinct system calls, all allowed"

# --- 5. What the unit leaves out, and why ------------------------------------
say "the lines couic.service leaves out stop couic"
for line in PrivateUsers= PrivateNetwork=; do
	! grep -q "^$line" "$UNIT_FILE" || fail "couic.service sets $line"
done
# PrivateUsers=: capabilities in a user namespace of its own do not let
# bpf() load the program. couic runs as that namespace's root, with every
# capability there, on a working directory root owns.
# (Under /run/couic: the sandbox lets nothing else be written.)
mkdir -p "$ROOT/run/couic/userns/work"
cat >"$ROOT/run/couic/userns/couic.toml" <<CONF
ifaces = []
working_dir = "/run/couic/userns/work"
user = "root"
group = "root"
[server]
socket = "/run/couic/userns/couic.sock"
CONF
expect_refusal userns "cannot load the XDP program: Operation not permitted" \
	--userns /usr/sbin/couic -c /run/couic/userns/couic.toml
# PrivateNetwork=: the interface to attach to is the host's.
expect_refusal netns "interface '$HOST_IF' does not exist" unshare --net "${UNIT_CMD[@]}"
# Each capability the unit grants: without CAP_BPF or CAP_NET_ADMIN couic
# cannot load; without CAP_PERFMON it runs, slower, and says so.
for cap in "${UNIT_CAPS[@]}"; do
	others=()
	for other in "${UNIT_CAPS[@]}"; do [ "$other" = "$cap" ] || others+=("$other"); done
	unit_command "${others[@]}"
	if [ "$cap" = perfmon ]; then
		start_daemon "no-$cap" - "${UNIT_CMD[@]}"
		wait_ready "no-$cap"
		stop_daemon "no-$cap"
		expect_log "$WORK/no-$cap.out" "CAP_PERFMON is missing"
		echo "no-$cap: couic warned that CAP_PERFMON is missing"
		# It took over the link the previous couic left pinned.
		expect_log "$WORK/no-$cap.out" "filtering was not interrupted"
	else
		expect_refusal "no-$cap" "cannot load the XDP program" "${UNIT_CMD[@]}"
	fi
done

# --- 6. Remove, then purge ---------------------------------------------------
say "remove keeps configuration and state, and stops filtering"
: >"$ROOT/pkgtest/service-calls"
# The prerm's `couic --detach` sees the test's bpffs where the unit's is.
mkdir -p "$ROOT/sys/fs/bpf"
mount --bind "$BPFFS" "$ROOT/sys/fs/bpf"
apt_in_root remove couic couic-report
expect_call "deb-systemd-invoke stop couic.service"
expect_call "deb-systemd-invoke stop couic-report.service"
[ -z "$(ls -A "$PINS" 2>/dev/null)" ] || fail "remove left pins: $(ls "$PINS")"
if ip link show "$HOST_IF" | grep -q "prog/xdp"; then
	fail "remove left the program attached to $HOST_IF"
fi
umount "$ROOT/sys/fs/bpf"
rmdir "$ROOT/sys/fs/bpf" "$ROOT/sys/fs" 2>/dev/null || true
for path in /etc/couic/couic.toml /var/lib/couic/sets/drop/pkgtest.couic \
	/var/lib/couic/rbac/clients/couicctl.toml /etc/couic-report/config.toml; do
	[ -e "$ROOT$path" ] || fail "remove deleted $path"
done
in_root getent passwd couic >/dev/null || fail "remove deleted the couic user"

say "purge leaves nothing of couic"
apt_in_root purge couic couic-report
rm -rf "$ROOT/pkgtest" "$ROOT/usr/local/sbin/systemctl" "$ROOT/usr/local/sbin/deb-systemd-invoke" \
	"$ROOT/run/systemd/system" "$ROOT/etc/apt/apt.conf.d/99pkgtest-shims"
! in_root getent passwd couic >/dev/null || fail "purge left the couic user"
! in_root getent group couic >/dev/null || fail "purge left the couic group"
# dpkg's and apt's own logs name the packages they handled, and the shadow
# tools keep the previous account files as *-: neither is couic's.
left=$(find "$ROOT" -xdev \( -path "$ROOT/proc" -o -path "$ROOT/var/log/apt" \) -prune -o \
	-iname '*couic*' -print)
[ -z "$left" ] || fail "purge left: $left"
left=$(grep -rlI couic "$ROOT/etc" "$ROOT/var/lib" --exclude='*-' 2>/dev/null || true)
[ -z "$left" ] || fail "purge left files naming couic: $left"

say "all package checks passed"
