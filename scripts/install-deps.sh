#!/bin/sh
# Installs the Debian/Ubuntu host packages Corral needs to build, run and test
# (`install-deps.sh test` adds what only the tests use). Idempotent: asks apt only when
# something is missing. Run as root.
set -eu

# protobuf-compiler: the CRI API bindings are generated at build time.
# docker-registry, busybox-static: the registry fixture and the test images of the node tests.
# containernetworking-plugins, iptables: pod networking (bridge, host-local, portmap, loopback).
# iproute2, iputils-ping, procps, util-linux: namespaces, links, process and mount checks.
# libseccomp-dev, pkg-config: the container monitor links libseccomp (through libcontainer).
PACKAGES="protobuf-compiler libseccomp-dev pkg-config docker-registry busybox-static containernetworking-plugins iptables
iproute2 iputils-ping procps util-linux ca-certificates"
# prometheus: its promtool checks the metrics endpoint's output (tests only; its service is
# not started here).
if [ "${1:-}" = "test" ]; then
  PACKAGES="$PACKAGES prometheus"
fi

missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages:$missing (run as root to install them)" >&2
    exit 1
  fi
  echo "install-deps: installing$missing"
  # Services of the packages (docker-registry, prometheus) are not started: the tests run
  # their own instances on loopback. A policy-rc.d made here is removed afterwards.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  if [ -n "$policy" ]; then rm -f "$policy"; fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found: install a Rust toolchain (1.85 or newer)" >&2
  exit 1
fi
