#!/bin/sh
# Provisions the couic VM, as root: installs the couic and couic-report
# packages found in DEBS, attaches couic to the interface that holds
# ADDRESS, has it report to couic-report, and adds OPERATOR to group couic
# so that they run couicctl without root. tests/packages.sh runs this in
# its throw-away Debian root, where no systemd runs.
#
#   provision-couic.sh ADDRESS OPERATOR [DEBS]
set -eu

ADDRESS=$1
OPERATOR=$2
DEBS=${3:-/debs}

fail() {
	echo "provision-couic: $*" >&2
	exit 1
}

# Exactly one version of each package: apt is given their paths.
couic_deb=$(find "$DEBS" -maxdepth 1 -name 'couic_*.deb')
report_deb=$(find "$DEBS" -maxdepth 1 -name 'couic-report_*.deb')
[ -n "$couic_deb" ] && [ -n "$report_deb" ] ||
	fail "no couic_*.deb and couic-report_*.deb in $DEBS: run \`make deb\` on the host first"
[ "$(echo "$couic_deb" | wc -l)" = 1 ] && [ "$(echo "$report_deb" | wc -l)" = 1 ] ||
	fail "several versions in $DEBS; keep one"

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 \
	iproute2 "$couic_deb" "$report_deb" >/dev/null

IFACE=$(ip -o -4 addr show | awk -v a="$ADDRESS" '{ split($4, p, "/"); if (p[1] == a) print $2 }')
[ -n "$IFACE" ] || fail "no interface holds $ADDRESS"

# couic: the private interface, and reports to couic-report on this host.
SECRET=$(sed -n 's/^secret = "\(.*\)"$/\1/p' /etc/couic-report/config.toml)
[ -n "$SECRET" ] || fail "no secret in /etc/couic-report/config.toml"
sed -i "s/^ifaces = .*/ifaces = [\"$IFACE\"]/" /etc/couic/couic.toml
if ! grep -q '^\[reporting\]' /etc/couic/couic.toml; then
	cat >>/etc/couic/couic.toml <<CONF

[reporting]
enabled = true
webhook = "http://127.0.0.1:8000/v1/reports/$SECRET"
CONF
fi
# A summary a minute, so the demo shows one soon.
sed -i 's/^batch_interval_secs = .*/batch_interval_secs = 60/' /etc/couic-report/config.toml

usermod -aG couic "$OPERATOR"

# The packages started both services with their default configuration;
# restart them on the new one where systemd runs.
if [ -d /run/systemd/system ]; then
	systemctl restart couic-report.service couic.service
	systemctl --no-pager --lines=5 status couic.service
fi
echo "couic attached to $IFACE ($ADDRESS); $OPERATOR may run couicctl after logging in again"
