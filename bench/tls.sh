#!/usr/bin/env bash
# tls.sh -- herald's TLS front proxy (h2 and HTTPS) against HAProxy and nginx, side by side, one run.
#
#   bench/tls.sh                                    # ~4 min: h2tls-128 tls-full tls-resume h2tls-16k
#   DUR=3 CASES=h2tls-128 bench/tls.sh              # quick
#   bench/tls.sh --herald-yaml LPORT BPORT CERT KEY # print the bench herald config
#
# WHAT: first `openssl speed -seconds 3 ecdhp256 ecdsap256` once, pinned to PROXY_CPU (the
#   crypto floor of a full handshake with peers.sh's P-256 ECDSA certificate), then
#   ../shared/bench/peers.sh (or $PEERS) once with CASES (default "h2tls-128 tls-full tls-resume
#   h2tls-16k") PROXIES="haproxy nginx" and herald as its PROXY_UNDER_TEST (PUT_NAME=herald,
#   tls listener only). Rows direct / haproxy / nginx / herald in the same minutes:
#     h2tls-128 / h2tls-16k  h2load -t1 -c10 -m10, TLS 1.3 + ALPN h2, multiplexed req/s
#     tls-full               ab: new TCP connection + full TLS 1.3 handshake per request
#                            (handshakes/s)
#     tls-resume             wrk -H 'Connection: close': new connection per request, session
#                            resumed (tickets)
#     https-ka               wrk keep-alive over TLS (HTTPS HTTP/1.1), 128 B. peers.sh has no
#                            such case: a second peers.sh run (KA=1, the default) does its
#                            tls-resume case with a `wrk` on PATH that drops exactly the
#                            "Connection: close" header, so the same proxies on the same
#                            listeners answer keep-alive requests; its rows are named https-ka.
#   Each proxy runs one worker pinned to PROXY_CPU (1); the
#   load generator and the backend nginx share LOAD_CPU (0). "direct" = the backend nginx
#   terminating TLS itself on CPU 0. See peers.sh's header for the metrics (us/op = proxy CPU
#   microseconds per request or handshake, ext% = CPU used by processes that are not ours).
#
# HERALD CONFIG (--herald-yaml): listener on PUT_TLS_PORT with transport_socket
#   envoy.transport_sockets.tls (DownstreamTlsContext: tls_certificates BENCH_CERT / BENCH_KEY,
#   alpn_protocols [h2, http/1.1]; session tickets on, herald's default), http_connection_manager
#   (codec_type AUTO, stat_prefix bench, no access log, http_protocol_options accept_http_10 true
#   because ab sends HTTP/1.0 and Envoy's default answers it 426), route prefix "/" -> cluster backend,
#   router; cluster STATIC 127.0.0.1:BACKEND_HTTP_PORT, circuit_breakers 100000; listener
#   tcp_backlog_size 4096; admin on 127.0.0.1 port 0. herald runs as `herald -c CONFIG
#   --plugin-dir PLUGIN_DIR --concurrency 1 -l warning --drain-time-s 1` under a small wrapper
#   (`tls.sh --start-herald`) that keeps its log, its /stats at shutdown and its exit status in
#   OUT, and forwards peers.sh's SIGTERM. herald and plugins are copied to OUT/bin first.
#
# OUTPUT: openssl speed figures, peers.sh's output (raw tool output, ROW lines, its table), then
#   "## tls.sh summary": per case and metric (rate, us/op, p99 ms, peak RSS MiB, errors) herald,
#   haproxy, nginx, direct, herald/haproxy, herald/nginx and the issue's targets: us/op <= 0.8 x
#   HAProxy's for h2, us/op <= nginx's for full handshakes; then "## herald health".
#   Exit status 1 if herald crashed, made errors or has no rows.
#
# KNOBS: DUR (1..10, default 10) CASES BASE_PORT (28160; peers.sh uses +0..+11, herald listens
#   on +10) LOAD_CPU PROXY_CPU PEERS HERALD (../build/herald) PLUGIN_DIR (../build/plugins)
#   OUT (default a new mktemp dir) MAX_TOTAL (s, default 470) SPEED (0 = skip openssl speed).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
HERALD=${HERALD:-$HERE/../build/herald}
PLUGIN_DIR=${PLUGIN_DIR:-$HERE/../build/plugins}

herald_yaml() {  # listen_port backend_port cert key -> herald bootstrap YAML
    cat <<EOF
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 0 }
static_resources:
  listeners:
  - name: bench_tls
    address:
      socket_address: { address: 127.0.0.1, port_value: $1 }
    tcp_backlog_size: 4096        # as HAProxy (its backlog follows maxconn)
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: { filename: "$3" }
              private_key: { filename: "$4" }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          codec_type: AUTO
          stat_prefix: bench
          http_protocol_options:    # ab (tls-full) speaks HTTP/1.0: Envoy's default answers 426
            accept_http_10: true
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
    circuit_breakers:
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
    [ $# -eq 5 ] || { echo "usage: $0 --herald-yaml LPORT BPORT CERT KEY" >&2; exit 2; }
    herald_yaml "$2" "$3" "$4" "$5"; exit 0
fi

# PROXY_UNDER_TEST of peers.sh (see http.sh --start-herald): herald as a child so that its exit
# status and any fatal signal get recorded. Files go to HERALD_OUT/herald.*.
if [ "${1:-}" = --start-herald ]; then
    pfx="$HERALD_OUT/herald"
    herald_yaml "$PUT_TLS_PORT" "$BACKEND_HTTP_PORT" "$BENCH_CERT" "$BENCH_KEY" > "$BENCH_DIR/herald.yaml" ||
        exit 1
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
        kill -0 "$hpid" 2>/dev/null || break
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
CASES=${CASES:-"h2tls-128 tls-full tls-resume h2tls-16k"}
BASE_PORT=${BASE_PORT:-28160}
SPEED=${SPEED:-1}
PEERS=${PEERS:-$HERE/../../shared/bench/peers.sh}
OUT=${OUT:-$(mktemp -d -t herald-tls-bench.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export DUR LOAD_CPU=${LOAD_CPU:-0} PROXY_CPU=${PROXY_CPU:-1} HERALD PLUGIN_DIR HERALD_OUT=$OUT

die() { echo "tls.sh: $*" >&2; exit 1; }
[ -x "$HERALD" ] || die "no herald at $HERALD (cd build && make)"
for p in http_connection_manager router; do
    [ -f "$PLUGIN_DIR/$p.so" ] || die "no $PLUGIN_DIR/$p.so"
done
[ -f "$PEERS" ] || die "no peers.sh at $PEERS"
for t in curl openssl taskset; do command -v $t >/dev/null 2>&1 || die "missing tool: $t"; done
mkdir -p "$OUT/bin/plugins"
HERALD_SRC=$HERALD
cp "$HERALD" "$OUT/bin/herald" && cp "$PLUGIN_DIR"/*.so "$OUT/bin/plugins/" || die "copying herald failed"
HERALD=$OUT/bin/herald PLUGIN_DIR=$OUT/bin/plugins
# validate with a throwaway P-256 certificate like peers.sh's
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -keyout "$OUT/v.key" \
    -out "$OUT/v.crt" -subj /CN=localhost >/dev/null 2>&1 || die "openssl req failed"
herald_yaml 1 2 "$OUT/v.crt" "$OUT/v.key" > "$OUT/validate.yaml"
"$HERALD" --mode validate -c "$OUT/validate.yaml" --plugin-dir "$PLUGIN_DIR" > "$OUT/validate.txt" 2>&1 ||
    die "herald rejects the bench config: $(cat "$OUT/validate.txt")"

echo "# tls.sh $(date -u +%Y-%m-%dT%H:%M:%SZ)  DUR=${DUR}s CASES=\"$CASES\""
echo "# herald: $HERALD ($("$HERALD" --version 2>&1 | head -1); $(readelf -n "$HERALD" 2>/dev/null |
    awk '/Build ID/ { print "build-id " $3 }'), copied from $HERALD_SRC)"
echo "# outputs and herald logs: $OUT"

if [ "$SPEED" = 1 ]; then
    echo; echo "################ openssl speed -seconds 3 ecdhp256 ecdsap256 (taskset -c $PROXY_CPU)"
    taskset -c "$PROXY_CPU" openssl speed -seconds 3 ecdhp256 ecdsap256 > "$OUT/speed.txt" 2>&1
    grep -E 'OpenSSL|bits ec|sign +verify|op +op/s' "$OUT/speed.txt"
fi

echo; echo "################ peers.sh"
rm -f "$OUT"/herald.*
CONNS=${CONNS:-50} CASES=$CASES PROXIES="haproxy nginx" BASE_PORT=$BASE_PORT PUT_NAME=herald \
PUT_PORTS="tls=$((BASE_PORT + 10))" PROXY_UNDER_TEST="exec bash '$HERE/tls.sh' --start-herald" \
    bash "$PEERS" 2>&1 | tee "$OUT/peers.txt"
for _ in $(seq 50); do [ -s "$OUT/herald.exit" ] && break; sleep 0.1; done

if [ "${KA:-1}" = 1 ]; then
    echo; echo "################ peers.sh again: HTTPS HTTP/1.1 keep-alive (tls-resume without Connection: close)"
    mkdir -p "$OUT/ka/shim"
    cat > "$OUT/ka/shim/wrk" <<'SHIM'
#!/usr/bin/env bash
# wrk, minus one `-H "Connection: close"` (peers.sh's tls-resume case becomes keep-alive)
args=()
while [ $# -gt 0 ]; do
    if [ "$1" = -H ] && [ "${2:-}" = "Connection: close" ]; then shift 2; continue; fi
    args+=("$1"); shift
done
exec /usr/bin/wrk "${args[@]}"
SHIM
    chmod +x "$OUT/ka/shim/wrk"
    PATH="$OUT/ka/shim:$PATH" HERALD_OUT="$OUT/ka" SPEED=0 CONNS=${CONNS:-50} CASES=tls-resume \
    PROXIES="haproxy nginx" BASE_PORT=$BASE_PORT PUT_NAME=herald PUT_PORTS="tls=$((BASE_PORT + 10))" \
    PROXY_UNDER_TEST="exec bash '$HERE/tls.sh' --start-herald" bash "$PEERS" 2>&1 | tee "$OUT/ka/peers.txt"
    # the rows join the others under their own name
    awk -F'\t' -v OFS='\t' '$1 == "ROW" && $2 == "tls-resume" { $2 = "https-ka"; print }' "$OUT/ka/peers.txt" \
        >> "$OUT/peers.txt"
    CASES="$CASES https-ka"
fi

# ---------------------------------------------------------------- summary
echo
echo "## tls.sh summary (herald vs HAProxy and nginx, one worker each on CPU $PROXY_CPU; DUR=${DUR}s)"
awk '/bits ecdh \(nistp256\)/ { ecdh = $NF }
     /bits ecdsa \(nistp256\)/ { sign = $(NF - 1); verify = $NF }
     END { if (ecdh != "" && sign != "")
             printf "openssl speed on CPU %s: ECDH P-256 %s op/s (%.1f us), ECDSA P-256 sign %s/s " \
                    "(%.1f us), verify %s/s; server crypto floor of a full handshake (1 sign + 1 ECDH)" \
                    " ~%.1f us\n\n", cpu, ecdh, 1e6 / ecdh, sign, 1e6 / sign, verify,
                    1e6 / sign + 1e6 / ecdh }' cpu="$PROXY_CPU" "$OUT/speed.txt" 2>/dev/null
grep '^# tls probe' "$OUT/peers.txt"
echo
awk -F'\t' -v cases="$CASES" '
    # ROW $2 case, $3 target, $4 rate, $5 unit, $7 p99, $8 err, $9 cpu%, $10 us/op, $11 hwmMiB, $14 ext%
    $1 == "ROW" { k = $2 SUBSEP $3; rate[k] = $4; unit[$2] = $5; p99[k] = $7; err[k] = $8; cpu[k] = $9
                  us[k] = $10; hwm[k] = $11; ext[k] = $14 }
    function num(x) { return x != "" && x != "-" && x ~ /^[0-9.]+$/ }
    function r(a, b) { return (num(a) && num(b) && b + 0 > 0) ? sprintf("%.2f", a / b) : "-" }
    # the verdict on the unrounded ratio: 648.2 / 647.1 prints 1.00 but is above 1
    function within(a, b, bound) {
        return !(num(a) && num(b) && b + 0 > 0) ? "?" : (a / b <= bound ? "MET" : "not met")
    }
    function v(x) { return (x == "") ? "-" : x }
    function row(m, a, tgt, met,   h, ha, ng, d) {
        h = a[c, "herald"]; ha = a[c, "haproxy"]; ng = a[c, "nginx"]; d = a[c, "direct"]
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c, m, v(h), v(ha), v(ng), v(d),
            r(h, ha), r(h, ng), tgt (met == "" ? "" : ": " met)
    }
    END {
        nc = split(cases, C, " ")
        print "| case | metric | herald | haproxy | nginx | direct | herald/haproxy | herald/nginx | target |"
        print "|---|---|--:|--:|--:|--:|--:|--:|---|"
        for (i = 1; i <= nc; i++) {
            c = C[i]; h = c SUBSEP "herald"; ha = c SUBSEP "haproxy"; ng = c SUBSEP "nginx"
            if (!(h in rate)) { printf "| %s | (no herald row) | | | | | | | |\n", c; continue }
            row(unit[c], rate, "(info)", "")
            if (c ~ /^h2tls/) {
                row("proxy CPU us/req", us, "<= 0.8 x haproxy", within(us[h], us[ha], 0.8))
            } else if (c == "tls-full") {
                row("proxy CPU us/handshake", us, "<= nginx", within(us[h], us[ng], 1))
            } else
                row("proxy CPU us/req", us, "(info)", "")
            row("p99 ms", p99, "(info)", "")
            row("peak RSS MiB", hwm, "(info)", "")
            row("errors", err, "herald 0", err[h] == "0" ? "MET" : "NOT MET")
            row("proxy cpu%", cpu, "ext% " v(ext[h]) ", " v(ext[ha]) ", " v(ext[ng]) \
                " (herald, haproxy, nginx; > ~10: noisy req/s)", "")
        }
    }' "$OUT/peers.txt"

echo
echo "## herald health"
status=0
pfx="$OUT/herald"
errs=$(awk -F'\t' '$1 == "ROW" && $3 == "herald" { printf "%s%s=%s", s, $2, $8; s = ", " }' "$OUT/peers.txt")
echo "- errors (tool errors + non-2xx / failed requests) ${errs:-none: no herald rows}"
echo "  $(cat "$pfx.exit" 2>/dev/null || echo "no exit record (wrapper did not finish)")"
if grep -q 'exited on its own' "$pfx.exit" 2>/dev/null || grep -q 'died' "$OUT/peers.txt" ||
   [ -z "$errs" ] || grep -qE '=([1-9]|rc=)' <<<"$errs"; then
    status=1
    echo "  PROBLEM: see $pfx.log and the raw tool output in $OUT/peers.txt"
fi
if [ -s "$pfx.stats" ]; then
    echo "  /stats at shutdown (5xx, resets, overflows, TLS/protocol errors, totals; non-zero only):"
    grep -E '^(http\.bench\.|cluster\.backend\.|listener\.)' "$pfx.stats" |
        grep -E -e '5xx|rq_error|reset|overflow|protocol_error|timeout|fail|destroy_with_active' \
            -e 'rq_total|cx_total|ssl\.|handshake|session_reused' |
        awk -F': ' '$2 != 0' | sed 's/^/    /'
fi
if [ -s "$pfx.log" ]; then
    echo "  herald log ($(wc -l < "$pfx.log") lines; first 20):"
    head -20 "$pfx.log" | sed 's/^/    /'
else
    echo "  herald log: empty"
fi
exit $status
