#!/usr/bin/env bash
# sizes.sh -- how big herald is: the core binary and each plugin, as built and
# stripped (what a package installs), and the shared libraries the core needs.
#
#   bench/sizes.sh                # from ../build
#   BUILD=/path/to/build bench/sizes.sh
#
# WHY: Envoy's users complain of a 20-55 MB stripped binary that grows with
#   every extension (envoy-user-asks.md, item 10); herald's answer is a small
#   core and a .so per filter that is only loaded when a config names it.
#   The numbers are printed, not asserted: they are facts to publish.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-$HERE/../build}
[ -x "$BUILD/herald" ] || { echo "sizes.sh: no herald in $BUILD (build first)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/herald-sizes.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

kib() { echo $(( ($(stat -c %s "$1") + 1023) / 1024 )); }

echo "| file | built KiB | stripped KiB |"
echo "|---|--:|--:|"
total=0
for f in "$BUILD/herald" "$BUILD"/plugins/*.so; do
    cp "$f" "$tmp/x"
    strip --strip-unneeded "$tmp/x"
    s=$(kib "$tmp/x")
    [ "$f" = "$BUILD/herald" ] && core=$s || total=$((total + s))
    echo "| ${f#"$BUILD"/} | $(kib "$f") | $s |"
done
echo
echo "core (herald, stripped): ${core} KiB; all $(ls "$BUILD"/plugins/*.so | wc -l) plugins together: ${total} KiB"
echo "shared libraries the core links (Debian packages): $(ldd "$BUILD/herald" | awk '/=>/ {print $1}' |
    grep -v -E '^(linux-vdso|libc\.|libm\.|ld-linux)' | tr '\n' ' ')"
