#!/usr/bin/env bash
# http.sh -- herald's HTTP/1.1 front proxy against HAProxy and nginx, side by side, one run.
#
#   bench/http.sh                                  # ~4 min: CONNS 50 and 500, 128 B and 16 KiB
#   DUR=3 CONNS_LIST=50 CASES=h1-128 bench/http.sh # quick
#   bench/http.sh --herald-yaml LPORT BPORT        # print the bench herald config
#
# WHAT: ../shared/bench/peers.sh (or $PEERS) once per CONNS in CONNS_LIST (default "50 500")
#   with CASES="h1-128 h1-16k" PROXIES="haproxy nginx" and herald as its PROXY_UNDER_TEST
#   (PUT_NAME=herald, http listener only): wrk -t1 -cCONNS --latency, HTTP/1.1 keep-alive,
#   128 B (nginx `return 200`) and 16 KiB (static file) bodies, rows direct / haproxy /
#   nginx / herald in the same minutes. Each proxy runs with one worker pinned to PROXY_CPU
#   (1); wrk and the backend nginx share LOAD_CPU (0). See peers.sh's header for the
#   metrics (us/op = proxy CPU microseconds per request, hwmMiB = peak RSS during the case).
#
# HERALD CONFIG (--herald-yaml): one listener, http_connection_manager (stat_prefix bench,
#   no access log, Envoy's defaults otherwise: codec AUTO, x-request-id generated), one
#   route prefix "/" -> cluster backend, router filter; cluster STATIC 127.0.0.1:BPORT with
#   circuit_breakers max_connections / max_pending_requests / max_requests 100000 (Envoy's
#   default 1024 would be near the limit at -c 500), per_connection_buffer_limit_bytes
#   default (1 MiB); listener tcp_backlog_size 4096 as tcp.sh; admin on 127.0.0.1 port 0.
#   herald runs as `herald -c CONFIG --plugin-dir PLUGIN_DIR --concurrency 1 -l warning
#   --drain-time-s 1` under a small bash wrapper (`http.sh --start-herald`) that keeps
#   herald's log, its admin /stats at shutdown and its exit status in OUT (peers.sh deletes
#   its own temp dir), and forwards peers.sh's SIGTERM to herald.
#
# OUTPUT: peers.sh's output per CONNS (raw wrk output, ROW lines, its table), then
#   "## http.sh summary": per case x CONNS and metric (req/s, us/op, p99 ms, peak RSS MiB,
#   errors) herald, haproxy, nginx, direct, herald/haproxy, herald/nginx, and the issue's
#   targets: us/op <= 0.7 x HAProxy's, p99 <= HAProxy's (and, informational, nginx's), peak
#   RSS < nginx's, 0 errors. Then "## herald health": errors, exit status, signals, the
#   5xx/reset counters from its /stats and the log lines at warning and above. A herald
#   crash or non-2xx answers are reported there (and the exit status is 1); nothing is
#   retried.
#
# KNOBS: DUR (1..10, default 10) CONNS_LIST ("50 500") CASES ("h1-128 h1-16k") PROXIES
#   ("haproxy nginx"; e.g. "haproxy" alone for a shorter run) BASE_PORT
#   (28140; peers.sh uses +0..+11, herald listens on +9) LOAD_CPU PROXY_CPU PEERS HERALD
#   (../build/herald) PLUGIN_DIR (../build/plugins) OUT (directory for outputs and herald
#   logs, default a new mktemp dir; herald and its plugins are copied to OUT/bin at start and
#   run from there, so a rebuild during the run changes nothing) MAX_TOTAL (s per peers.sh run,
#   default 470).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
HERALD=${HERALD:-$HERE/../build/herald}
PLUGIN_DIR=${PLUGIN_DIR:-$HERE/../build/plugins}

herald_yaml() {  # listen_port backend_port -> herald bootstrap YAML
    cat <<EOF
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 0 }
static_resources:
  listeners:
  - name: bench_http
    address:
      socket_address: { address: 127.0.0.1, port_value: $1 }
    tcp_backlog_size: 4096        # as HAProxy (its backlog follows maxconn)
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            name: bench_routes
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 5s
    circuit_breakers:             # Envoy's defaults (1024) are close to wrk -c 500
      thresholds:
      - max_connections: 100000
        max_pending_requests: 100000
        max_requests: 100000
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: $2 }
EOF
}

if [ "${1:-}" = --herald-yaml ]; then
    [ $# -eq 3 ] || { echo "usage: $0 --herald-yaml LPORT BPORT" >&2; exit 2; }
    herald_yaml "$2" "$3"; exit 0
fi

# PROXY_UNDER_TEST of peers.sh: config from PUT_HTTP_PORT / BACKEND_HTTP_PORT, herald as a
# child (not exec'd) so that its exit status and any fatal signal get recorded; SIGTERM from
# peers.sh is forwarded after a last /stats snapshot. Files go to HERALD_OUT/herald-cN.*.
if [ "${1:-}" = --start-herald ]; then
    pfx="$HERALD_OUT/herald-c$CONNS"
    herald_yaml "$PUT_HTTP_PORT" "$BACKEND_HTTP_PORT" > "$BENCH_DIR/herald.yaml" || exit 1
    cp "$BENCH_DIR/herald.yaml" "$pfx.yaml"
    rm -f "$BENCH_DIR/admin.addr"
    "$HERALD" -c "$BENCH_DIR/herald.yaml" --plugin-dir "$PLUGIN_DIR" --concurrency 1 -l warning \
        --drain-time-s 1 --admin-address-path "$BENCH_DIR/admin.addr" > "$pfx.log" 2>&1 &
    hpid=$!
    echo "$hpid" > "$pfx.pid"
    stopping=0
    on_term() {
        stopping=1
        if [ -s "$BENCH_DIR/admin.addr" ]; then
            timeout 3 curl -s "http://$(cat "$BENCH_DIR/admin.addr")/stats" > "$pfx.stats" 2>/dev/null
        fi
        kill -TERM "$hpid" 2>/dev/null
    }
    trap on_term TERM INT
    while :; do
        wait "$hpid"; rc=$?
        kill -0 "$hpid" 2>/dev/null || break    # wait returned for the trap, herald still runs
    done
    if [ "$stopping" = 0 ]; then
        msg="herald (pid $hpid) exited on its own during the run, status $rc"
    else
        msg="herald (pid $hpid) exited after SIGTERM, status $rc"
    fi
    [ "$rc" -gt 128 ] && msg="$msg (signal $((rc - 128)): $(kill -l $((rc - 128)) 2>/dev/null))"
    echo "$msg" > "$pfx.exit"
    exit "$rc"
fi

DUR=${DUR:-10}
CONNS_LIST=${CONNS_LIST:-"50 500"}
CASES=${CASES:-"h1-128 h1-16k"}
BASE_PORT=${BASE_PORT:-28140}
PEERS=${PEERS:-$HERE/../../shared/bench/peers.sh}
OUT=${OUT:-$(mktemp -d -t herald-http-bench.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export DUR LOAD_CPU=${LOAD_CPU:-0} PROXY_CPU=${PROXY_CPU:-1} HERALD PLUGIN_DIR HERALD_OUT=$OUT

die() { echo "http.sh: $*" >&2; exit 1; }
[ -x "$HERALD" ] || die "no herald at $HERALD (cd build && make)"
for p in http_connection_manager router; do
    [ -f "$PLUGIN_DIR/$p.so" ] || die "no $PLUGIN_DIR/$p.so"
done
[ -f "$PEERS" ] || die "no peers.sh at $PEERS"
command -v curl >/dev/null 2>&1 || die "missing tool: curl"
# Snapshot the binary and plugins: build/ may be rebuilt during the run, and both CONNS runs
# (and any later perf of OUT/bin/herald) must measure the same code.
mkdir -p "$OUT/bin/plugins"
HERALD_SRC=$HERALD
cp "$HERALD" "$OUT/bin/herald" && cp "$PLUGIN_DIR"/*.so "$OUT/bin/plugins/" || die "copying herald failed"
HERALD=$OUT/bin/herald PLUGIN_DIR=$OUT/bin/plugins
herald_yaml 1 2 > "$OUT/validate.yaml"
"$HERALD" --mode validate -c "$OUT/validate.yaml" --plugin-dir "$PLUGIN_DIR" > "$OUT/validate.txt" 2>&1 ||
    die "herald rejects the bench config: $(cat "$OUT/validate.txt")"

echo "# http.sh $(date -u +%Y-%m-%dT%H:%M:%SZ)  DUR=${DUR}s CONNS_LIST=\"$CONNS_LIST\" CASES=\"$CASES\""
echo "# herald: $HERALD ($("$HERALD" --version 2>&1 | head -1); $(readelf -n "$HERALD" 2>/dev/null |
    awk '/Build ID/ { print "build-id " $3 }'), copied from $HERALD_SRC)"
echo "# outputs and herald logs: $OUT"

for c in $CONNS_LIST; do
    echo; echo "################ CONNS=$c"
    rm -f "$OUT/herald-c$c".*
    CONNS=$c CASES=$CASES PROXIES="${PROXIES-haproxy nginx}" BASE_PORT=$BASE_PORT PUT_NAME=herald \
    PUT_PORTS="http=$((BASE_PORT + 9))" PROXY_UNDER_TEST="exec bash '$HERE/http.sh' --start-herald" \
        bash "$PEERS" 2>&1 | tee "$OUT/peers-c$c.txt"
    # the wrapper writes .exit once herald is gone; peers.sh's cleanup waits for it
    for _ in $(seq 50); do [ -s "$OUT/herald-c$c.exit" ] && break; sleep 0.1; done
done

# ---------------------------------------------------------------- summary
echo
echo "## http.sh summary (herald vs HAProxy and nginx, one worker each on CPU $PROXY_CPU; DUR=${DUR}s)"
for c in $CONNS_LIST; do
    awk -F'\t' -v conns="$c" '$1 == "ROW" { print conns "\t" $0 }' "$OUT/peers-c$c.txt"
done | awk -F'\t' -v cases="$CASES" -v conns_list="$CONNS_LIST" '
    # $1 conns, $2 ROW, $3 case, $4 target, $5 rate, $7 p50, $8 p99, $9 err, $10 cpu%, $11 us/op,
    # $12 hwmMiB, $15 ext%
    { k = $3 SUBSEP $1 SUBSEP $4; rate[k] = $5; p99[k] = $8; err[k] = $9; cpu[k] = $10; us[k] = $11
      hwm[k] = $12; ext[k] = $15 }
    function num(x) { return x != "" && x != "-" && x ~ /^[0-9.]+$/ }
    function r(a, b) { return (num(a) && num(b) && b + 0 > 0) ? sprintf("%.2f", a / b) : "-" }
    function v(x) { return (x == "") ? "-" : x }
    function row(m, a, tgt, met,   h, ha, ng, d) {
        h = a[c, n, "herald"]; ha = a[c, n, "haproxy"]; ng = a[c, n, "nginx"]; d = a[c, n, "direct"]
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c, n, m, v(h), v(ha), v(ng), v(d),
            r(h, ha), r(h, ng), tgt (met == "" ? "" : ": " met)
    }
    END {
        nc = split(cases, C, " "); nn = split(conns_list, N, " ")
        printf "| case | conns | metric | herald | haproxy | nginx | direct | herald/haproxy | herald/nginx"
        print " | target |"
        print "|---|--:|---|--:|--:|--:|--:|--:|--:|---|"
        for (i = 1; i <= nc; i++) for (j = 1; j <= nn; j++) {
            c = C[i]; n = N[j]; h = c SUBSEP n SUBSEP "herald"
            ha = c SUBSEP n SUBSEP "haproxy"; ng = c SUBSEP n SUBSEP "nginx"
            if (!(h in rate)) { printf "| %s | %s | (no herald row) | | | | | | | |\n", c, n; continue }
            row("req/s", rate, "(info)", "")
            x = r(us[h], us[ha])
            row("proxy CPU us/req", us, "<= 0.7 x haproxy",
                x == "-" ? "?" : (x + 0 <= 0.7 ? "MET" : "not met"))
            x = r(p99[h], p99[ha]); y = r(p99[h], p99[ng])
            row("p99 ms", p99, "<= haproxy", (x == "-" ? "?" : (x + 0 <= 1 ? "MET" : "not met")) \
                " (vs nginx: " (y == "-" ? "?" : (y + 0 <= 1 ? "no worse" : "worse")) ")")
            x = r(hwm[h], hwm[ng])
            row("peak RSS MiB", hwm, "< nginx", x == "-" ? "?" : (x + 0 < 1 ? "MET" : "not met"))
            row("errors", err, "herald 0", err[h] == "0" ? "MET" : "NOT MET")
            row("proxy cpu% / ext%", cpu, "ext% " v(ext[h]) ", " v(ext[ha]) ", " v(ext[ng]) \
                " (herald, haproxy, nginx; > ~10: noisy req/s)", "")
        }
    }'

echo
echo "## herald health"
status=0
for c in $CONNS_LIST; do
    pfx="$OUT/herald-c$c"
    errs=$(awk -F'\t' '$1 == "ROW" && $3 == "herald" { printf "%s%s=%s", s, $2, $8; s = ", " }' \
        "$OUT/peers-c$c.txt")
    echo "- CONNS=$c: wrk errors (socket errors + non-2xx) ${errs:-none: no herald rows}"
    echo "  $(cat "$pfx.exit" 2>/dev/null || echo "no exit record (wrapper did not finish)")"
    if grep -q 'exited on its own' "$pfx.exit" 2>/dev/null || grep -q 'died' "$OUT/peers-c$c.txt" ||
       [ -z "$errs" ] || grep -qE '=([1-9]|rc=)' <<<"$errs"; then
        status=1
        echo "  PROBLEM: see $pfx.log and the raw wrk output in $OUT/peers-c$c.txt"
    fi
    if [ -s "$pfx.stats" ]; then
        echo "  /stats at shutdown (5xx, resets, overflows, protocol errors, non-zero only):"
        grep -E '^(http\.bench\.|cluster\.backend\.)' "$pfx.stats" |
            grep -E -e '5xx|rq_error|reset|overflow|protocol_error|timeout|fail|destroy_with_active' \
                -e 'rq_total|cx_total' |
            awk -F': ' '$2 != 0' | sed 's/^/    /'
    fi
    if [ -s "$pfx.log" ]; then
        echo "  herald log ($(wc -l < "$pfx.log") lines; first 20):"
        head -20 "$pfx.log" | sed 's/^/    /'
    else
        echo "  herald log: empty"
    fi
done
exit $status
