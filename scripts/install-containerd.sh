#!/bin/sh
# Installs what the benchmarks compare Corral against: Debian's containerd and runc (Debian
# 12: containerd 1.6). Idempotent: asks apt only when something is missing. Run as root.
set -eu

missing=""
for p in containerd runc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "install-containerd: installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
