#!/usr/bin/env bash
# tcp.sh -- new TCP connections per second through herald vs HAProxy (mode tcp), same run.
#
#   bench/tcp.sh                      # conn-rate rows (direct, haproxy, herald) + iperf3 rows
#   CASES=conn DUR=3 bench/tcp.sh     # quick run, connection rate only
#   bench/tcp.sh --herald-yaml LPORT BPORT [LPORT BPORT...]   # print the bench herald config
#
# CASES (each load run lasts DUR seconds, default 10)
#   conn        bench/conn_rate (built here with cc -O2): CONNS (default 50) connections in
#               flight, each one connect, read BYTES (16) until EOF, close. The backend
#               (`conn_rate serve`) writes BYTES and closes at once. Rows: direct (no proxy),
#               haproxy, herald.
#   iperf-splice  iperf3 -t DUR, one stream, through herald and through a HAProxy that splices:
#               `option splice-request` + `option splice-response`. peers.sh's HAProxy sets no
#               splice option, so it copies with recvfrom/sendto; `option splice-auto` alone
#               did not splice either here (HAProxy 2.6, strace -c: only recvfrom/sendto), the
#               forced options do (only splice(2) calls). This row is the stronger peer.
#
# CPU LAYOUT (as in ../shared/bench/peers.sh): the proxies run on PROXY_CPU (1), one worker /
#   one thread each (herald --concurrency 1, haproxy nbthread 1); load generator and backend
#   share LOAD_CPU (0). Idle proxies sleep in epoll while the other is measured.
#
# METRICS per row
#   rate     conn/s (completed connections / window) or Gbit/s (iperf3 receiver)
#   err      failed connections (connect error, reset, short read)
#   cpu%     proxy CPU (utime+stime from /proc/PID/stat, all threads) / wall time
#   us/op    proxy CPU microseconds per connection (iperf3: per MiB)
#   c0%/c1%  busy % of LOAD_CPU / PROXY_CPU from /proc/stat (everything on the box)
#   ext%     CPU (% of one core) NOT used by this script's processes = busy(c0+c1) - proxy -
#            backend - load generator (kernel threads land here too). Over ~10: someone else
#            ran on the box; rates are noisy then, us/op much less so.
#
# OUTPUT: "# ..." header lines, "ROW<TAB>case<TAB>target<TAB>rate<TAB>unit<TAB>err<TAB>cpu%
#   <TAB>us/op<TAB>c0%<TAB>c1%<TAB>ext%" per row, then a markdown table with the herald/haproxy ratios.
#
# KNOBS: DUR (1..10, default 10) CONNS (50) BYTES (16) CASES ("conn iperf-splice") BASE_PORT
#   (default 28100; uses +0..+5 on 127.0.0.1) LOAD_CPU PROXY_CPU HERALD (binary, default
#   ../build/herald) PLUGIN_DIR (../build/plugins) CC (cc) KEEP_TMP (1 = keep the temp dir).
# Every process started here is stopped by PID (SIGTERM, SIGKILL after 5 s). Exit status 0
# unless the setup fails.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)

herald_yaml() {  # listen_port backend_port [listen_port backend_port ...] -> herald bootstrap YAML
    # (tcp_proxy listeners only, no access log; listener i -> cluster i -> 127.0.0.1:backend_port)
    local i=0 args=("$@")
    printf 'admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 0 }\n'
    printf 'static_resources:\n  listeners:\n'
    for ((i = 0; i < ${#args[@]}; i += 2)); do
        cat <<EOF
  - name: bench_tcp$i
    address:
      socket_address: { address: 127.0.0.1, port_value: ${args[i]} }
    tcp_backlog_size: 4096        # as HAProxy (its backlog follows maxconn)
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bench_tcp$i
          cluster: bench_backend$i
EOF
    done
    printf '  clusters:\n'
    for ((i = 0; i < ${#args[@]}; i += 2)); do
        cat <<EOF
  - name: bench_backend$i
    type: STATIC
    connect_timeout: 5s
    circuit_breakers:             # Envoy's default max_connections (1024) would cap idle_rss.py
      thresholds:
      - max_connections: 1000000
    load_assignment:
      cluster_name: bench_backend$i
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: ${args[i + 1]} }
EOF
    done
}
if [ "${1:-}" = --herald-yaml ]; then
    shift
    if [ $# -lt 2 ] || [ $(($# % 2)) -ne 0 ]; then
        echo "usage: $0 --herald-yaml LPORT BPORT [LPORT BPORT...]" >&2; exit 2
    fi
    herald_yaml "$@"; exit 0
fi

DUR=${DUR:-10}
CONNS=${CONNS:-50}
BYTES=${BYTES:-16}
CASES=${CASES:-"conn iperf-splice"}
BASE_PORT=${BASE_PORT:-28100}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
HERALD=${HERALD:-$HERE/../build/herald}
PLUGIN_DIR=${PLUGIN_DIR:-$HERE/../build/plugins}
CC=${CC:-cc}
KEEP_TMP=${KEEP_TMP:-0}
CLK_TCK=$(getconf CLK_TCK)

die() { echo "tcp.sh: $*" >&2; exit 1; }
[ "$DUR" -ge 1 ] && [ "$DUR" -le 10 ] 2>/dev/null || die "DUR must be 1..10 seconds"
for t in haproxy iperf3 taskset timeout awk "$CC"; do
    command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
done
[ -x "$HERALD" ] || die "no herald binary at $HERALD (cd build && make herald plugins/tcp_proxy.so)"
[ -f "$PLUGIN_DIR/tcp_proxy.so" ] || die "no $PLUGIN_DIR/tcp_proxy.so"

BE_CONN=$BASE_PORT; BE_IPERF=$((BASE_PORT + 1))
HA_CONN=$((BASE_PORT + 2)); HA_SPLICE=$((BASE_PORT + 3))
HE_CONN=$((BASE_PORT + 4)); HE_IPERF=$((BASE_PORT + 5))

STARTED=()
TMP=$(mktemp -d -t herald-tcp-bench.XXXXXX) || die "mktemp failed"

alive() {  # pid -> true if running and not a zombie
    local s
    [ -r "/proc/$1/stat" ] || return 1
    read -r s < "/proc/$1/stat" 2>/dev/null || return 1
    s=${s##*) }; [ "${s%% *}" != Z ]
}
cleanup() {
    local p i any
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for i in $(seq 50); do
        any=0
        for p in "${STARTED[@]}"; do alive "$p" && any=1; done
        [ $any = 0 ] && break
        sleep 0.1
    done
    for p in "${STARTED[@]}"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$KEEP_TMP" = 1 ]; then echo "# temp dir kept: $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

listening() {  # port -> true if something LISTENs on it
    local hex; hex=$(printf '%04X' "$1")
    awk -v h=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
wait_listen() {  # name pid port... -> wait (bounded, 10 s) until all ports listen
    local name=$1 pid=$2 p i; shift 2
    for p in "$@"; do
        for i in $(seq 100); do
            listening "$p" && break
            alive "$pid" || die "$name (pid $pid) exited at startup: $(tail -5 "$TMP/$name.log" 2>/dev/null)"
            sleep 0.1
        done
        listening "$p" || die "$name: port $p not listening after 10 s"
    done
}
for p in $(seq "$BASE_PORT" $((BASE_PORT + 5))); do
    listening "$p" && die "port $p already in use (set BASE_PORT)"
done

# ---------------------------------------------------------------- build and start
"$CC" -O2 -o "$TMP/conn_rate" "$HERE/conn_rate.c" || die "building conn_rate.c failed"

taskset -c "$LOAD_CPU" "$TMP/conn_rate" serve "$BE_CONN" "$BYTES" > "$TMP/backend.log" 2>&1 &
BE_PID=$!; STARTED+=($!)
taskset -c "$LOAD_CPU" iperf3 -s -B 127.0.0.1 -p "$BE_IPERF" > "$TMP/iperf3-server.log" 2>&1 &
IPERF_PID=$!; STARTED+=($!)
wait_listen backend "$BE_PID" "$BE_CONN"
wait_listen iperf3-server "$IPERF_PID" "$BE_IPERF"

cat > "$TMP/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
listen conn
  bind 127.0.0.1:$HA_CONN
  server s1 127.0.0.1:$BE_CONN
listen iperf_splice
  bind 127.0.0.1:$HA_SPLICE
  option splice-request
  option splice-response
  server s1 127.0.0.1:$BE_IPERF
EOF
haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy config check failed"
taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg" > "$TMP/haproxy.log" 2>&1 &
HA_PID=$!; STARTED+=($!)
wait_listen haproxy "$HA_PID" "$HA_CONN" "$HA_SPLICE"

herald_yaml "$HE_CONN" "$BE_CONN" "$HE_IPERF" "$BE_IPERF" > "$TMP/herald.yaml"
taskset -c "$PROXY_CPU" "$HERALD" -c "$TMP/herald.yaml" --plugin-dir "$PLUGIN_DIR" --concurrency 1 \
    -l warning > "$TMP/herald.log" 2>&1 &
HE_PID=$!; STARTED+=($!)
wait_listen herald "$HE_PID" "$HE_CONN" "$HE_IPERF"

# ---------------------------------------------------------------- measurement
ticks() {  # pid -> utime+stime of the process (all threads)
    local s f
    read -r s < "/proc/$1/stat" 2>/dev/null || { echo 0; return; }
    s=${s##*) }; read -r -a f <<<"$s"
    echo $((f[11] + f[12]))
}
cpu_snap() {  # -> "busy_load busy_proxy" ticks from /proc/stat
    local n u ni sy irq sirq st rest b0=0 b1=0
    while read -r n u ni sy _ _ irq sirq st rest; do
        [ "$n" = "cpu$LOAD_CPU" ] && b0=$((u + ni + sy + irq + sirq + st))
        [ "$n" = "cpu$PROXY_CPU" ] && b1=$((u + ni + sy + irq + sirq + st))
    done < /proc/stat
    echo "$b0 $b1"
}
children_cpu_s() {  # cumulative CPU seconds of waited-for children (bash `times`, 2nd line)
    awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
                   printf "%.3f", t }' "$1"
}

LIM=$((DUR + 20))
ROWS="$TMP/rows.tsv"
: > "$ROWS"
run_one() {  # case target pid(or -) unit command...
    local case=$1 target=$2 pid=$3 unit=$4; shift 4
    local raw="$TMP/raw.$case.$target" rc pt0=0 pt1=0 bt0 bt1 lg c0 c1 t0 t1 rate ops err
    for p in "${STARTED[@]}"; do alive "$p" || die "a started process (pid $p) died; see $TMP"; done
    [ "$pid" != - ] && pt0=$(ticks "$pid")
    bt0=$(($(ticks "$BE_PID") + $(ticks "$IPERF_PID")))
    c0=$(cpu_snap); times > "$TMP/times0"; t0=$(date +%s%N)
    timeout -k 5 "$LIM" taskset -c "$LOAD_CPU" "$@" > "$raw" 2>&1; rc=$?
    t1=$(date +%s%N); times > "$TMP/times1"; c1=$(cpu_snap)
    [ "$pid" != - ] && pt1=$(ticks "$pid")
    bt1=$(($(ticks "$BE_PID") + $(ticks "$IPERF_PID")))
    lg=$(awk -v a="$(children_cpu_s "$TMP/times0")" -v b="$(children_cpu_s "$TMP/times1")" 'BEGIN { print b - a }')
    if [ "$unit" = conn/s ]; then
        rate=$(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' "$raw")
        ops=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' "$raw")
        err=$(awk '{ for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == "errors" || a[1] == "short") e += a[2] } }
                   END { print e + 0 }' "$raw")
    else
        rate=$(awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i - 1) }' "$raw" | tail -1)
        ops=$(awk -v g="${rate:-0}" -v d="$DUR" 'BEGIN { printf "%.0f", g * 1e9 / 8 * d / 1048576 }')
        err=0
    fi
    [ "$rc" -ne 0 ] && err="rc=$rc"
    sed 's/^/    /' "$raw" | grep -v '^    \[ *[0-9]*\] *[0-9.]*-[0-9.]* *sec.*[^r]$' | tail -8
    awk -v c="$case" -v t="$target" -v rate="${rate:-0}" -v unit="$unit" -v err="$err" -v ops="${ops:-0}" \
        -v pt=$((pt1 - pt0)) -v bt=$((bt1 - bt0)) -v lg="$lg" -v hz="$CLK_TCK" -v c0="$c0" -v c1="$c1" \
        -v wall=$(((t1 - t0) / 1000000)) \
        -v direct="$([ "$pid" = - ] && echo 1 || echo 0)" '
        BEGIN {
            w = wall / 1000; split(c0, a, " "); split(c1, b, " ")
            if (direct) { cpu = "-"; usop = "-" }
            else {
                cpu = sprintf("%.0f", pt / hz / w * 100)
                usop = (ops > 0) ? sprintf("%.1f", pt / hz * 1e6 / ops) : "-"
            }
            busy0 = (b[1] - a[1]) / hz; busy1 = (b[2] - a[2]) / hz
            ext = (busy0 + busy1 - pt / hz - bt / hz - lg) / w * 100; if (ext < 0) ext = 0
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%.0f\t%.0f\n", c, t, rate, unit, err, cpu, usop,
                busy0 / w * 100, busy1 / w * 100, ext
        }' >> "$ROWS"
    printf 'ROW\t%s\n' "$(tail -1 "$ROWS")"
}

echo "# tcp.sh  $(date -u +%Y-%m-%dT%H:%M:%SZ)  DUR=${DUR}s CONNS=$CONNS BYTES=$BYTES LOAD_CPU=$LOAD_CPU PROXY_CPU=$PROXY_CPU"
echo "# $(haproxy -v | head -1) | herald $("$HERALD" --version 2>&1 | head -1) | $(iperf3 --version | head -1 | cut -d' ' -f1-2)"
echo "# pids: backend=$BE_PID iperf3s=$IPERF_PID haproxy=$HA_PID herald=$HE_PID   loadavg: $(cat /proc/loadavg)"
for case in $CASES; do
    case $case in
        conn)
            run_one conn direct - conn/s "$TMP/conn_rate" client "$BE_CONN" "$DUR" "$CONNS" "$BYTES"
            run_one conn haproxy "$HA_PID" conn/s "$TMP/conn_rate" client "$HA_CONN" "$DUR" "$CONNS" "$BYTES"
            run_one conn herald "$HE_PID" conn/s "$TMP/conn_rate" client "$HE_CONN" "$DUR" "$CONNS" "$BYTES"
            ;;
        iperf-splice)
            run_one iperf-splice haproxy+splice "$HA_PID" Gbit/s \
                iperf3 -c 127.0.0.1 -p "$HA_SPLICE" -t "$DUR" -f g --connect-timeout 3000
            run_one iperf-splice herald "$HE_PID" Gbit/s \
                iperf3 -c 127.0.0.1 -p "$HE_IPERF" -t "$DUR" -f g --connect-timeout 3000
            ;;
        *) die "unknown case '$case'" ;;
    esac
done
echo "# loadavg at end: $(cat /proc/loadavg)   elapsed: ${SECONDS}s"

echo
echo "## tcp.sh summary (x_haproxy = herald / haproxy in the same case; us/op: lower is better)"
awk -F'\t' '
    { n++; for (i = 1; i <= NF; i++) r[n, i] = $i
      if ($2 ~ /^haproxy/) { hr[$1] = $3; hu[$1] = $7 } }
    function ratio(a, b) { return (a + 0 > 0 && b + 0 > 0) ? sprintf("%.2f", a / b) : "-" }
    END {
        print "| case | target | rate | unit | err | proxy cpu% | us/op | c0% | c1% | ext% | rate x_haproxy | us/op x_haproxy |"
        print "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"
        for (k = 1; k <= n; k++) {
            line = "|"; for (i = 1; i <= 10; i++) line = line " " r[k, i] " |"
            c = r[k, 1]
            print line " " ratio(r[k, 3], hr[c]) " | " ratio(r[k, 7], hu[c]) " |"
        }
    }' "$ROWS"
exit 0
