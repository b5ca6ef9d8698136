#!/bin/sh
# The container lifecycle benchmark: Corral against Debian's containerd (1.6 + runc) on N pods
# (default 20) with one container each: run, create, start, then stop and remove, one request
# at a time, with the same requests, image and CNI configuration. Prints p50/p90/p99 per step,
# the ratios against the goals, CPU and memory (daemon, monitor vs shim); asserts nothing
# about times. Installs the packages it needs first. Run as root.
#
# Extra arguments go to `cargo bench`; the bench's own come after `--`:
#   scripts/bench-lifecycle.sh -- --pods 50      (or CORRAL_BENCH_PODS=50)
set -eu
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/install-containerd.sh

# Build first, then install the monitor that ships (monitor profile, non-PIE) next to the
# bench profile's `corral`, so that nothing cargo builds afterwards replaces it; the bench
# names it in the agent's config and prints its ELF type.
cargo bench --locked -p corral --bench lifecycle --no-run
./scripts/build-monitor.sh release
exec cargo bench --locked -p corral --bench lifecycle "$@"
