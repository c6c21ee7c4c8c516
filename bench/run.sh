#!/usr/bin/env bash
# run.sh -- herald's tcp_proxy benchmark against HAProxy (mode tcp), side by side, one run,
#   and (parts http, tls) its HTTP/1.1 and TLS front proxy against HAProxy and nginx.
#
#   bench/run.sh                       # tcp parts, ~2.5 min
#   PARTS="conn" DUR=3 bench/run.sh    # one part, quick
#   PARTS=http bench/run.sh            # HTTP/1.1 only, ~3 min
#   PARTS=tls bench/run.sh             # TLS (h2, handshakes) only, ~4 min
#
# PARTS (default "iperf conn idle"; add http / tls for the HTTP / TLS parts), run in this order:
#   iperf  ../shared/bench/peers.sh (or $PEERS) with CASES=tcp PROXIES=haproxy and herald as its
#          PROXY_UNDER_TEST (tcp listener only): iperf3 -t DUR, one stream, direct / haproxy /
#          herald in the same run, with proxy CPU us per MiB. Note: peers.sh's HAProxy `listen l4`
#          has no `option splice-auto`, so that HAProxy copies through user space (recv/send).
#   conn   bench/tcp.sh: new connections/s (bench/conn_rate.c, CONNS in flight, connect / read
#          16 B / close) direct / haproxy / herald, proxy CPU us per connection; then iperf3
#          through a HAProxy that splices (option splice-request + splice-response; splice-auto
#          alone does not splice iperf3 in HAProxy 2.6) and through herald (the stronger peer).
#   idle   bench/idle_rss.py: herald's and HAProxy's VmRSS growth per idle proxied connection
#          (N=10000, fewer if RLIMIT_NOFILE's hard limit does not allow 2 fds per connection).
#   http   bench/http.sh: wrk HTTP/1.1 keep-alive through herald's http_connection_manager,
#          HAProxy and nginx (peers.sh, CONNS 50 and 500, 128 B and 16 KiB bodies), proxy CPU us
#          per request, req/s, p99, peak RSS as ratios to HAProxy and nginx; its summary table
#          is appended to run.sh's (see http.sh's header).
#   tls    bench/tls.sh: h2 multiplexed req/s (h2load -c10 -m10, 128 B and 16 KiB), full TLS 1.3
#          handshakes/s and resumed connections/s through herald, HAProxy and nginx (peers.sh),
#          proxy CPU us per request / handshake, req/s, p99 as ratios, plus `openssl speed
#          ecdhp256 ecdsap256`; its summary table is appended to run.sh's (see tls.sh's header).
# Layout: proxies pinned to PROXY_CPU (1) with one worker / one thread each; load generator and
#   backend on LOAD_CPU (0). Everything listens on 127.0.0.1 only; each part stops what it
#   starts, by PID.
#
# OUTPUT: each part's own output (raw rows and tables), then "## run.sh summary": one table
#   with herald, HAProxy, herald/haproxy and the issue's target per metric, and the ext%
#   (CPU used by processes that are not ours: over ~10 the rates are noisy; the us/op CPU
#   figures are the stable ones on a shared machine). Part outputs are kept in OUT.
#   Exit status 0 (a part that fails shows "-" in the summary and a warning).
#
# KNOBS: PARTS DUR (1..10, 10) CONNS (50) N (10000) LOAD_CPU PROXY_CPU PEERS HERALD
#   (../build/herald) PLUGIN_DIR (../build/plugins) OUT (directory for the part outputs,
#   default a new mktemp dir) PEERS_BASE_PORT (28080, +0..+11) TCP_BASE_PORT (28100, +0..+5)
#   IDLE_BASE_PORT (28120, +0..+2) HTTP_BASE_PORT (28140, +0..+11) TLS_BASE_PORT (28160,
#   +0..+11). Ports are away from
#   peers.sh's default 18080 so a colleague's peers.sh run on the same box does not collide.
#
# Internal: `run.sh --start-herald` is the PROXY_UNDER_TEST command: it writes the herald
#   config from PUT_TCP_PORT / BACKEND_TCP_PORT into BENCH_DIR and execs herald.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
HERALD=${HERALD:-$HERE/../build/herald}
PLUGIN_DIR=${PLUGIN_DIR:-$HERE/../build/plugins}

if [ "${1:-}" = --start-herald ]; then
    "$HERE/tcp.sh" --herald-yaml "$PUT_TCP_PORT" "$BACKEND_TCP_PORT" > "$BENCH_DIR/herald.yaml" || exit 1
    exec "$HERALD" -c "$BENCH_DIR/herald.yaml" --plugin-dir "$PLUGIN_DIR" --concurrency 1 -l warning
fi

PARTS=${PARTS:-"iperf conn idle"}
PEERS=${PEERS:-$HERE/../../shared/bench/peers.sh}
PEERS_BASE_PORT=${PEERS_BASE_PORT:-28080}
TCP_BASE_PORT=${TCP_BASE_PORT:-28100}
IDLE_BASE_PORT=${IDLE_BASE_PORT:-28120}
HTTP_BASE_PORT=${HTTP_BASE_PORT:-28140}
TLS_BASE_PORT=${TLS_BASE_PORT:-28160}
OUT=${OUT:-$(mktemp -d -t herald-bench.XXXXXX)}
mkdir -p "$OUT"
export DUR=${DUR:-10} CONNS=${CONNS:-50} LOAD_CPU=${LOAD_CPU:-0} PROXY_CPU=${PROXY_CPU:-1}
export HERALD PLUGIN_DIR

if [ ! -x "$HERALD" ]; then
    echo "run.sh: no herald at $HERALD (cd build && make herald plugins/tcp_proxy.so)" >&2; exit 1
fi
echo "# run.sh $(date -u +%Y-%m-%dT%H:%M:%SZ)  PARTS=\"$PARTS\" DUR=${DUR}s"
echo "# herald: $HERALD ($("$HERALD" --version 2>&1 | head -1))"
echo "# part outputs: $OUT"

for part in $PARTS; do
    echo; echo "################ $part"
    case $part in
        iperf)
            [ -x "$PEERS" ] || [ -f "$PEERS" ] || { echo "run.sh: no peers.sh at $PEERS" >&2; continue; }
            CASES=tcp PROXIES=haproxy BASE_PORT=$PEERS_BASE_PORT PUT_NAME=herald \
            PUT_PORTS="tcp=$((PEERS_BASE_PORT + 11))" PROXY_UNDER_TEST="exec '$HERE/run.sh' --start-herald" \
                bash "$PEERS" 2>&1 | tee "$OUT/peers.txt"
            ;;
        conn)
            BASE_PORT=$TCP_BASE_PORT "$HERE/tcp.sh" 2>&1 | tee "$OUT/tcp.txt" ;;
        idle)
            BASE_PORT=$IDLE_BASE_PORT python3 "$HERE/idle_rss.py" 2>&1 | tee "$OUT/idle.txt" ;;
        http)
            mkdir -p "$OUT/http"
            OUT=$OUT/http BASE_PORT=$HTTP_BASE_PORT CONNS_LIST=${CONNS_LIST:-"50 500"} \
                bash "$HERE/http.sh" 2>&1 | tee "$OUT/http.txt" ;;
        tls)
            mkdir -p "$OUT/tls"
            OUT=$OUT/tls BASE_PORT=$TLS_BASE_PORT bash "$HERE/tls.sh" 2>&1 | tee "$OUT/tls.txt" ;;
        *) echo "run.sh: unknown part '$part'" >&2 ;;
    esac
done

# ---------------------------------------------------------------- summary
has_part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
touch "$OUT/peers.txt" "$OUT/tcp.txt" "$OUT/idle.txt"
if has_part iperf || has_part conn || has_part idle; then
echo
echo "## run.sh summary (herald vs HAProxy mode tcp, one worker each, proxy on CPU $PROXY_CPU)"
awk -F'\t' '
    FILENAME ~ /peers.txt$/ && $1 == "ROW" && $2 == "tcp" {
        p_rate[$3] = $4; p_us[$3] = $10; p_ext[$3] = $14; p_cpu[$3] = $9 }
    FILENAME ~ /tcp.txt$/ && $1 == "ROW" {
        k = $2 SUBSEP $3; t_rate[k] = $4; t_cpu[k] = $7; t_us[k] = $8; t_err[k] = $6; t_ext[k] = $11 }
    FILENAME ~ /idle.txt$/ && $1 == "RESULT" { i_kib[$3] = $4; i_n = $5 }
    FILENAME ~ /idle.txt$/ && /^# note:/ { sub(/^# note: /, ""); i_note = $0 }
    function r(a, b) { return (a != "" && b != "" && a + 0 > 0 && b + 0 > 0) ? sprintf("%.2f", a / b) : "-" }
    function v(x) { return (x == "") ? "-" : x }
    function row(m, h, a, tgt, ok, ext) {
        printf "| %s | %s | %s | %s | %s | %s | %s |\n", m, v(h), v(a), r(h, a), tgt, ok, ext
    }
    function ge(x, t) { return (x == "-") ? "?" : (x + 0 >= t ? "yes" : "no") }
    function le(x, t) { return (x == "-") ? "?" : (x + 0 <= t ? "yes" : "no") }
    END {
        print "| metric | herald | haproxy | herald/haproxy | target | met | ext% (herald, haproxy) |"
        print "|---|--:|--:|--:|---|---|---|"
        x = r(p_rate["herald"], p_rate["haproxy"])
        row("iperf3 Gbit/s (peers.sh; HAProxy without splice)", p_rate["herald"], p_rate["haproxy"],
            ">= 1", ge(x, 1),
            v(p_ext["herald"]) ", " v(p_ext["haproxy"]))
        x = r(p_us["herald"], p_us["haproxy"])
        row("proxy CPU us/MiB (peers.sh)", p_us["herald"], p_us["haproxy"], "<= 0.5", le(x, 0.5),
            "cpu% " v(p_cpu["herald"]) ", " v(p_cpu["haproxy"]))
        h = "iperf-splice" SUBSEP "herald"; a = "iperf-splice" SUBSEP "haproxy+splice"
        x = r(t_rate[h], t_rate[a])
        row("iperf3 Gbit/s vs HAProxy + splice (tcp.sh)", t_rate[h], t_rate[a], "(info)", ge(x, 1),
            v(t_ext[h]) ", " v(t_ext[a]))
        x = r(t_us[h], t_us[a])
        row("proxy CPU us/MiB vs HAProxy + splice", t_us[h], t_us[a], "(info)", le(x, 0.5), "")
        h = "conn" SUBSEP "herald"; a = "conn" SUBSEP "haproxy"
        x = r(t_rate[h], t_rate[a])
        row("new connections/s (tcp.sh; direct " v(t_rate["conn" SUBSEP "direct"]) "/s)",
            t_rate[h], t_rate[a], ">= 1", ge(x, 1), v(t_ext[h]) ", " v(t_ext[a]))
        row("proxy CPU us/connection", t_us[h], t_us[a], "(lower is better)", "",
            "errors " v(t_err[h]) ", " v(t_err[a]))
        row("VmRSS KiB per idle proxied connection (N=" v(i_n) ")", i_kib["herald"], i_kib["haproxy"],
            "herald < 4 KiB", (i_kib["herald"] == "") ? "?" : (i_kib["herald"] + 0 < 4 ? "yes" : "no"), "")
        print ""
        print "HAProxy reference from the issue: ~585 us of CPU per MiB (peers.sh tcp row)."
        if (i_note != "") print "idle: " i_note
    }' "$OUT/peers.txt" "$OUT/tcp.txt" "$OUT/idle.txt"
fi
if has_part http; then
    echo
    echo "## run.sh http summary (from bench/http.sh; full output in $OUT/http.txt)"
    if grep -q '^## http.sh summary' "$OUT/http.txt" 2>/dev/null; then
        sed -n '/^## http.sh summary/,$p' "$OUT/http.txt" | sed 1d
    else
        echo "http part failed: $(tail -3 "$OUT/http.txt" 2>/dev/null)"
    fi
fi
if has_part tls; then
    echo
    echo "## run.sh tls summary (from bench/tls.sh; full output in $OUT/tls.txt)"
    if grep -q '^## tls.sh summary' "$OUT/tls.txt" 2>/dev/null; then
        sed -n '/^## tls.sh summary/,$p' "$OUT/tls.txt" | sed 1d
    else
        echo "tls part failed: $(tail -3 "$OUT/tls.txt" 2>/dev/null)"
    fi
fi
exit 0
