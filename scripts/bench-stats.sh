#!/bin/sh
# The stats benchmark: Corral against Debian's containerd (1.6 + runc) with N pods (default
# 100) of one running container each: ListContainerStats, ListPodSandboxStats and Corral's
# Prometheus scrape, timed one request at a time, then the runtimes' CPU idle and under a
# kubelet-like steady load; everything is removed again. Prints p50/p90/max per call, the
# ratios, the CPU in cores and the goals; asserts nothing about times. Installs the packages
# it needs first. Run as root.
#
# Extra arguments go to `cargo bench`; the bench's own come after `--`:
#   scripts/bench-stats.sh -- --pods 50 --load-seconds 30 --repetitions 20 --idle-seconds 10
#   (or CORRAL_BENCH_PODS=50)
set -eu
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/install-containerd.sh

# Build first, then install the monitor that ships (monitor profile, non-PIE) next to the
# bench profile's `corral`, so that nothing cargo builds afterwards replaces it; the bench
# names it in the agent's config and prints its ELF type.
cargo bench --locked -p corral --bench stats --no-run
./scripts/build-monitor.sh release
exec cargo bench --locked -p corral --bench stats "$@"
