#!/bin/sh
# Run after the node tests: fails if they left anything behind. Everything the tests create
# (temp dirs, network namespaces, cgroups, processes' config paths) carries this prefix.
set -u
prefix="corral-test-"
leaks=0

report() {
  echo "leak-check: $1:" >&2
  echo "$2" | sed 's/^/  /' >&2
  leaks=1
}

mounts=$(grep -F "$prefix" /proc/self/mountinfo || true)
[ -z "$mounts" ] || report "mounts left behind" "$mounts"

netns=$(ip netns list 2>/dev/null | grep -F "$prefix" || true)
[ -z "$netns" ] || report "network namespaces left behind" "$netns"

links=$(ip -o link show 2>/dev/null | grep -F "$prefix" || true)
[ -z "$links" ] || report "network links left behind" "$links"

cgroups=$(find /sys/fs/cgroup -maxdepth 5 -type d -name "*${prefix}*" 2>/dev/null || true)
[ -z "$cgroups" ] || report "cgroups left behind" "$cgroups"

procs=$(pgrep -a -f "$prefix" 2>/dev/null | grep -v -e "leak-check" || true)
[ -z "$procs" ] || report "processes left behind" "$procs"

dirs=$(find /tmp /var/tmp -maxdepth 1 -name "${prefix}*" 2>/dev/null || true)
[ -z "$dirs" ] || report "temp dirs left behind" "$dirs"

if [ "$leaks" -ne 0 ]; then
  echo "leak-check: FAILED" >&2
  exit 1
fi
echo "leak-check: nothing left behind"
