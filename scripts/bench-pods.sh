#!/bin/sh
# The pod sandbox benchmark: Corral against Debian's containerd on 50 pods run, stopped and
# removed one after the other, with the same CNI configuration (Debian's bridge + host-local
# + portmap). Prints p50/p90 per step and the ratios; asserts nothing about times. Installs
# the packages it needs first. Run as root.
set -eu
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

# containerd and runc: the runtime compared against (Debian 12: containerd 1.6).
missing=""
for p in containerd runc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "bench-pods: installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

exec cargo bench --locked -p corral --bench pods "$@"
