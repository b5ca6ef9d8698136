#!/bin/sh
# The pull benchmark: Corral against Debian's containerd (its CRI PullImage) on a generated
# ~1 GiB image in 6 gzip layers served by the local registry fixture. Prints seconds, MB/s
# and the ratio; asserts nothing. Installs the packages it needs first. Run as root.
set -eu
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

# containerd and runc: the runtime compared against (Debian 12: containerd 1.6).
missing=""
for p in containerd runc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "bench-pull: installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

exec cargo bench --locked -p corral --bench pull "$@"
