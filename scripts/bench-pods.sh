#!/bin/sh
# The pod sandbox benchmark: Corral against Debian's containerd on 50 pods run, stopped and
# removed one after the other, with the same CNI configuration (Debian's bridge + host-local
# + portmap). Prints p50/p90 per step and the ratios; asserts nothing about times. Installs
# the packages it needs first. Run as root.
set -eu
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/install-containerd.sh

exec cargo bench --locked -p corral --bench pods "$@"
