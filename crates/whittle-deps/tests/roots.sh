#!/usr/bin/env bash
# Prints a value for WHITTLE_DEPS_ROOTS (the root file systems the ldd accuracy test of
# whittle-deps compares against): the nginx and python fixture images of fixtures/build.sh,
# unpacked with umoci (an implementation independent of whittle's own layer code), cached
# per fixture set.
#
#   export WHITTLE_DEPS_ROOTS=$(crates/whittle-deps/tests/roots.sh)
#
# Uses the fixture set in WHITTLE_FIXTURES when set (as scripts/test exports it), else runs
# fixtures/build.sh. Environment: WHITTLE_DEPS_ROOTS_CACHE (default
# /var/cache/whittle-deps-roots). Needs root (umoci unpack keeps owners and device nodes).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
CACHE=${WHITTLE_DEPS_ROOTS_CACHE:-/var/cache/whittle-deps-roots}
command -v umoci >/dev/null || apt-get install -y umoci >&2
FIX=${WHITTLE_FIXTURES:-}
[ -n "$FIX" ] || FIX=$("$REPO/fixtures/build.sh" nginx python)
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
SET=$CACHE/$(basename "$FIX")
mkdir -p "$SET"
roots=()
for name in nginx python; do
	dir=$SET/$name
	if [ ! -d "$dir/rootfs/usr" ]; then
		[ -d "$FIX/$name.oci" ] || { echo "roots.sh: no $FIX/$name.oci (run fixtures/build.sh nginx python)" >&2; exit 1; }
		tmp=$SET/.$name.tmp.$$
		rm -rf "$tmp"
		umoci unpack --image "$FIX/$name.oci:latest" "$tmp" >&2
		rm -rf "$dir"
		mv "$tmp" "$dir"
	fi
	roots+=("$dir/rootfs")
done
# Unpacked roots of other fixture sets are stale: drop them.
for old in "$CACHE"/bookworm-*/; do
	[ "${old%/}" = "$SET" ] || rm -rf "$old"
done
(
	IFS=:
	echo "${roots[*]}"
)
