#!/bin/sh
# The streaming benchmark: Corral against Debian's containerd (1.6 + runc) with one running
# busybox pod each, driven through CRI Exec and PortForward by the project's SPDY/3.1 client:
# the exec round trip of `true` (RPC, connect and upgrade, run, exit status) and ExecSync,
# the port-forward setup and its throughput both ways; everything is removed again. Prints
# p50/p90 per measure, MB/s per direction, the ratios and the goals; asserts nothing about
# times. Installs the packages it needs first. Run as root.
#
# Extra arguments go to `cargo bench`; the bench's own come after `--`:
#   scripts/bench-streaming.sh -- --execs 50 --connects 20 --transfers 5 --mb 256
set -eu
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/install-containerd.sh

# Build first, then install the monitor that ships (monitor profile, non-PIE) next to the
# bench profile's `corral`, so that nothing cargo builds afterwards replaces it; the bench
# names it in the agent's config and prints its ELF type. The monitor is also the exec
# helper (`corral-monitor exec --stream`).
cargo bench --locked -p corral --bench streaming --no-run
./scripts/build-monitor.sh release
exec cargo bench --locked -p corral --bench streaming "$@"
