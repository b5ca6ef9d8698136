#!/bin/sh
# The pull benchmark: Corral against Debian's containerd (its CRI PullImage) on a generated
# ~1 GiB image in 6 gzip layers served by the local registry fixture. Prints seconds, MB/s
# and the ratio; asserts nothing. Installs the packages it needs first. Run as root.
set -eu
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/install-containerd.sh

exec cargo bench --locked -p corral --bench pull "$@"
