#!/bin/sh
# Builds `corral-monitor`, the per-container monitor, size-first: the `monitor` profile (fat
# LTO, one codegen unit, abort on panic, opt-level s) and a non-PIE executable (no
# relocations to apply at start: its read-only data stays shared, not copied per process),
# then installs it next to `corral` in target/<dir> (default: release), where the agent
# looks for it. It has a target dir of its own so its RUSTFLAGS never invalidate the
# agent's build.
set -eu
cd "$(dirname "$0")/.."
dest="${1:-release}"
# An explicit --target keeps RUSTFLAGS off the build scripts and proc macros (which must
# stay position-independent).
host="$(rustc -vV | sed -n 's/^host: //p')"
CARGO_TARGET_DIR="$(pwd)/target/monitor-nopie" \
RUSTFLAGS="${RUSTFLAGS:-} -C relocation-model=static" \
  cargo build --locked --profile monitor --target "$host" -p corral-runtime --bin corral-monitor
install -d "target/$dest"
install -m 0755 "target/monitor-nopie/$host/monitor/corral-monitor" "target/$dest/corral-monitor"
