#!/bin/bash
# tls-grade.sh: the SSL Labs grade of a TLS listener, offline, with testssl.sh.
#
#   bench/tls-grade.sh                     # herald with etc/examples/https-front-proxy.yaml on
#                                          # throwaway certificates (t/integ/test_tls_grade.py)
#   bench/tls-grade.sh https://127.0.0.1:8443 /etc/herald/certs/ca.crt
#                                          # any running listener; the CA file makes testssl trust
#                                          # a private CA (an untrusted chain caps the grade at T)
#
# Debian's testssl.sh 3.0.x does not rate by itself: the grade is computed from
# its findings by t/integ/test_tls_grade.py (SSL Labs's SSL Server Rating Guide,
# as testssl 3.2 implements it). Exit status 0 for A+.
set -euo pipefail
PY=${PYTHON:-/usr/bin/python3}   # the python3 that has python3-pytest
SRC=$(cd "$(dirname "$0")/.." && pwd)
TESTSSL=$(command -v testssl || command -v testssl.sh || true)
[ -n "$TESTSSL" ] || { echo "needs testssl.sh (apt-get install testssl.sh)" >&2; exit 2; }

if [ $# -eq 0 ]; then
    cd "$SRC/t/integ"
    exec "$PY" -m pytest -q -rs -k testssl test_tls_grade.py
fi

url=$1
ca=${2:-}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
args=(--quiet --color 0 --warnings off --nodns none --connect-timeout 5 --openssl-timeout 10
      -p -s -f -P -S -h -U -e --jsonfile-pretty "$out/testssl.json")
[ -n "$ca" ] && args+=(--add-ca "$ca")
timeout 400 "$TESTSSL" "${args[@]}" "$url" | tee "$out/testssl.txt" >/dev/null || true
"$PY" "$SRC/t/integ/test_tls_grade.py" "$out/testssl.json"
