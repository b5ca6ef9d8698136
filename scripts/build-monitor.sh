#!/bin/sh
# Builds `corral-monitor`, the per-container monitor, size-first: the `monitor` profile (fat
# LTO, one codegen unit, abort on panic, opt-level s) and a static, non-PIE executable (no
# dynamic loader and no relocations at start: its read-only data stays shared, not copied
# per process, and each exec helper, the same binary, starts faster), then installs it next
# to `corral` in target/<dir> (default: release), where the agent looks for it. It has a
# target dir of its own so its RUSTFLAGS never invalidate the agent's build.
#
# Static glibc has the `files` NSS module built in, which is all the container init uses
# (the user's home directory from the container's /etc/passwd); libseccomp is linked from
# libseccomp-dev's static archive.
set -eu
cd "$(dirname "$0")/.."
dest="${1:-release}"
# An explicit --target keeps RUSTFLAGS off the build scripts and proc macros (which must
# stay position-independent).
host="$(rustc -vV | sed -n 's/^host: //p')"
CARGO_TARGET_DIR="$(pwd)/target/monitor-static" \
LIBSECCOMP_LINK_TYPE=static \
LIBSECCOMP_LIB_PATH="${LIBSECCOMP_LIB_PATH:-/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)}" \
RUSTFLAGS="${RUSTFLAGS:-} -C relocation-model=static -C target-feature=+crt-static" \
  cargo build --locked --profile monitor --target "$host" -p corral-runtime --bin corral-monitor
install -d "target/$dest"
install -m 0755 "target/monitor-static/$host/monitor/corral-monitor" "target/$dest/corral-monitor"
