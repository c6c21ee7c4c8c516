#!/usr/bin/env bash
# cpu_split.sh -- where a proxy's CPU per request goes: user space or the kernel.
#
# WHY: issue 3's target is herald's CPU per request (us/op) <= 0.7 x HAProxy's for
#   HTTP/1.1 keep-alive. Both proxies make the same system calls per request (one
#   read and one write on each side; `strace -c` shows it), so their kernel time per
#   request is about the same, and herald's us/op can never fall below its own kernel
#   time. When HAProxy's kernel time alone is over 0.7 x its total, the target cannot
#   be met by user-space work. This script measures that split in one run, for
#   herald, HAProxy and nginx alike, so the claim can be checked on any machine.
#
# WHAT: an nginx backend (128 B answer) and wrk -t1 -c CONNS on LOAD_CPU (0); each
#   proxy in turn alone on PROXY_CPU (1), one worker, the same keep-alive setup as
#   bench/http.sh; DUR seconds of load after a 2 s warm-up; utime and stime of the
#   proxy's processes from /proc/PID/stat (all threads, nginx's master and worker)
#   before and after; requests from wrk. Prints per proxy: user, kernel and total
#   us/op, and the bound the 0.7 x target would need. ROUNDS > 1 runs the whole
#   list again that many times, interleaved, and prints medians: HAProxy's own
#   us/op moves by a third from one minute to the next on this VM.
#
#   Four more "proxies" measure the floor (bench/floor_proxy.c, built here with
#   cc): floor forwards bytes between each client and its own backend connection
#   with the calls HAProxy makes and no other work; floor_batch reads every
#   ready socket before writing any; floor_splice moves the bytes with splice(2)
#   through a pipe, never copying them to user space; floor_uring does it through
#   io_uring (needs liburing-dev). What a proxy spends above floor is its
#   user-space work.
#
#   MODE=h2 measures issue 4's h2 case instead: h2load -t1 -c CONNS (10) -m STREAMS
#   (10) over TLS 1.3 + ALPN h2 to each proxy (the backend stays HTTP/1.1), and
#   one more floor, h2_floor (bench/h2_floor.c: TLS with OpenSSL, HTTP/2 with
#   nghttp2, one HTTP/1.1 request per stream, nothing else; needs libnghttp2-dev
#   and libssl-dev), against the 0.8 x target. MODE=tls-full: ab -c CONNS (50), a
#   new connection and a full TLS 1.3 handshake per request (ab never resumes),
#   us per handshake against nginx's (issue 4: herald's <= nginx's).
#
# KNOBS: PAIRED (0; 1 = all proxies loaded at once, see run_paired) MODE (h1; h2; tls-full) STREAMS (10, MODE=h2) DUR (default 10) CONNS (50; 10 for MODE=h2) BODY_BYTES (128; 16384 for http.sh's 16k rows) ROUNDS (1) PROXIES ("haproxy nginx herald",
#   also floor floor_batch floor_splice floor_uring; the summary lines need haproxy and herald)
#   BASE_PORT (28240: +0 backend, +1 haproxy, +2 nginx, +3 herald, +4..7 the
#   floors) LOAD_CPU PROXY_CPU HERALD PLUGIN_DIR OUT (kept files).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
HERALD=${HERALD:-$HERE/../build/herald}
PLUGIN_DIR=${PLUGIN_DIR:-$HERE/../build/plugins}
DUR=${DUR:-10}
PROXIES=${PROXIES:-haproxy nginx herald}
MODE=${MODE:-h1}
case $MODE in
    h1) CONNS=${CONNS:-50}; TARGET=0.7; FLOOR=floor; REF=haproxy ;;
    h2) CONNS=${CONNS:-10}; TARGET=0.8; FLOOR=h2_floor; REF=haproxy; STREAMS=${STREAMS:-10} ;;
    tls-full) CONNS=${CONNS:-50}; TARGET=1; FLOOR=none; REF=nginx ;;
    *) echo "cpu_split.sh: MODE is h1, h2 or tls-full" >&2; exit 2 ;;
esac
BODY_BYTES=${BODY_BYTES:-128}
ROUNDS=${ROUNDS:-1}
BASE_PORT=${BASE_PORT:-28240}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
OUT=${OUT:-$(mktemp -d /tmp/herald-cpu-split.XXXXXX)}
BE=$BASE_PORT
declare -A PORT=([haproxy]=$((BASE_PORT + 1)) [nginx]=$((BASE_PORT + 2)) [herald]=$((BASE_PORT + 3))
                 [floor]=$((BASE_PORT + 4)) [floor_uring]=$((BASE_PORT + 5)) [floor_batch]=$((BASE_PORT + 6))
                 [floor_splice]=$((BASE_PORT + 7)) [h2_floor]=$((BASE_PORT + 8)))
HZ=$(getconf CLK_TCK)
STARTED=()

die() { echo "cpu_split.sh: $*" >&2; exit 1; }
for t in haproxy nginx wrk taskset; do command -v $t >/dev/null || die "needs $t"; done
[ "$MODE" = h2 ] && ! command -v h2load >/dev/null && die "needs h2load (nghttp2-client)"
[ "$MODE" = tls-full ] && ! command -v ab >/dev/null && die "needs ab (apache2-utils)"
[ -x "$HERALD" ] || die "no herald at $HERALD (build first)"
mkdir -p "$OUT"
chmod 755 "$OUT"   # nginx's workers drop root and must reach the 16 KiB file under it
if [ "$MODE" != h1 ]; then   # as peers.sh: an ECDSA P-256 certificate
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -keyout "$OUT/key.pem" -out "$OUT/cert.pem" >/dev/null 2>&1 || die "openssl req failed"
    cat "$OUT/cert.pem" "$OUT/key.pem" > "$OUT/cert-key.pem"
fi

cleanup() {
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${STARTED[@]}"; do kill -KILL "$p" 2>/dev/null; done
}
trap cleanup EXIT

wait_port() {  # port: until something accepts there (5 s)
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listens on port $1"
}

tree() {  # pid -> it and its descendants
    local q=("$1") p out=()
    while [ ${#q[@]} -gt 0 ]; do
        p=${q[0]}; q=("${q[@]:1}")
        [ -r "/proc/$p/stat" ] || continue
        out+=("$p")
        for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do q+=("$c"); done
    done
    echo "${out[@]}"
}

ticks() {  # pid -> "utime stime" summed over its tree (clock ticks)
    local u=0 s=0 st f
    for p in $(tree "$1"); do
        read -r st < "/proc/$p/stat" || continue
        f=(${st##*) })   # fields from 3 on: state is f[0], utime f[11], stime f[12]
        u=$((u + f[11])); s=$((s + f[12]))
    done
    echo "$u $s"
}

nginx_conf() {  # dir; the http block's own lines on stdin -> nginx.conf on stdout
    local d=$1
    cat <<EOF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_timeout 65s;
  keepalive_requests 1000000;
  client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d; uwsgi_temp_path $d; scgi_temp_path $d;
$(cat)
}
EOF
}

# ------------------------------------------------------------------ backend
mkdir -p "$OUT/backend/www"
if [ "$BODY_BYTES" -le 1024 ]; then   # as peers.sh: small answers from `return`, large from a file
    BODY=$(head -c "$BODY_BYTES" /dev/zero | tr '\0' 'x')
    ANSWER="default_type text/plain; return 200 \"$BODY\";"
else
    head -c "$BODY_BYTES" /dev/zero | tr '\0' 'a' > "$OUT/backend/www/body.bin"
    ANSWER="root $OUT/backend/www; try_files /body.bin =404;"
fi
nginx_conf "$OUT/backend" > "$OUT/backend/nginx.conf" <<EOF
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  server {
    listen 127.0.0.1:$BE;
    location / { $ANSWER }
  }
EOF
taskset -c "$LOAD_CPU" nginx -p "$OUT/backend" -c "$OUT/backend/nginx.conf" -g 'daemon off;' \
    > "$OUT/backend/out.log" 2>&1 &
STARTED+=($!)
wait_port "$BE"

# ------------------------------------------------------------------ proxies
start_haproxy() {
    cat > "$OUT/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}$([ "$MODE" != h1 ] && echo " ssl crt $OUT/cert-key.pem alpn h2,http/1.1")
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$BE
EOF
    taskset -c "$PROXY_CPU" haproxy -db -f "$OUT/haproxy.cfg" > "$OUT/haproxy.log" 2>&1 &
    echo $!
}

start_nginx() {
    mkdir -p "$OUT/nginx"
    nginx_conf "$OUT/nginx" > "$OUT/nginx/nginx.conf" <<EOF
  upstream be { server 127.0.0.1:$BE; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${PORT[nginx]}$([ "$MODE" != h1 ] && echo " ssl http2");
$([ "$MODE" != h1 ] && echo "    ssl_certificate $OUT/cert.pem; ssl_certificate_key $OUT/key.pem;")
$([ "$MODE" != h1 ] && echo "    ssl_protocols TLSv1.2 TLSv1.3;   # nginx 1.22 leaves TLS 1.3 off by default")
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
EOF
    taskset -c "$PROXY_CPU" nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -g 'daemon off;' \
        > "$OUT/nginx/out.log" 2>&1 &
    echo $!
}

start_herald() {
    if [ "$MODE" != h1 ]; then
        bash "$HERE/tls.sh" --herald-yaml "${PORT[herald]}" "$BE" "$OUT/cert.pem" "$OUT/key.pem" > "$OUT/herald.yaml"
    else
        bash "$HERE/http.sh" --herald-yaml "${PORT[herald]}" "$BE" > "$OUT/herald.yaml"
    fi || die "no herald config"
    taskset -c "$PROXY_CPU" "$HERALD" -c "$OUT/herald.yaml" --plugin-dir "$PLUGIN_DIR" --concurrency 1 \
        -l warning > "$OUT/herald.log" 2>&1 &
    echo $!
}

# floor_proxy.c: the same system calls as HAProxy and nothing else (see its comment);
# floor_uring: the same forwarding through io_uring (needs liburing-dev)
floor_bin() {
    local flags=() libs=()
    if [ -e /usr/include/liburing.h ]; then flags=(-DHAVE_URING); libs=(-luring); fi
    cc -O2 "${flags[@]}" -o "$OUT/floor_proxy" "$HERE/floor_proxy.c" "${libs[@]}" || die "cannot build floor_proxy"
}
start_floor() {
    floor_bin
    taskset -c "$PROXY_CPU" "$OUT/floor_proxy" epoll "${PORT[floor]}" "$BE" > "$OUT/floor.log" 2>&1 &
    echo $!
}
start_floor_batch() {
    floor_bin
    taskset -c "$PROXY_CPU" "$OUT/floor_proxy" epoll-batch "${PORT[floor_batch]}" "$BE" > "$OUT/floor_batch.log" 2>&1 &
    echo $!
}
start_floor_splice() {
    floor_bin
    taskset -c "$PROXY_CPU" "$OUT/floor_proxy" splice "${PORT[floor_splice]}" "$BE" > "$OUT/floor_splice.log" 2>&1 &
    echo $!
}
start_floor_uring() {
    floor_bin
    [ -e /usr/include/liburing.h ] || die "floor_uring needs liburing-dev"
    taskset -c "$PROXY_CPU" "$OUT/floor_proxy" io_uring "${PORT[floor_uring]}" "$BE" > "$OUT/floor_uring.log" 2>&1 &
    echo $!
}

start_h2_floor() {
    cc -O2 -o "$OUT/h2_floor" "$HERE/h2_floor.c" -lnghttp2 -lssl -lcrypto || die "cannot build h2_floor"
    taskset -c "$PROXY_CPU" "$OUT/h2_floor" "${PORT[h2_floor]}" "$BE" "$OUT/cert.pem" "$OUT/key.pem" \
        > "$OUT/h2_floor.log" 2>&1 &
    echo $!
}

load() {  # port seconds out: wrk (h1), h2load (h2) or ab (tls-full) on LOAD_CPU; prints the requests answered
    local port=$1 secs=$2 out=$3
    if [ "$MODE" = tls-full ]; then
        taskset -c "$LOAD_CPU" timeout $((secs + 10)) ab -q -r -t "$secs" -n 1000000 -c "$CONNS" \
            "https://127.0.0.1:$port/" > "$out" 2>&1
        awk '/^Complete requests:/ { print $3 }' "$out"
    elif [ "$MODE" = h2 ]; then
        taskset -c "$LOAD_CPU" timeout $((secs + 10)) h2load -t1 -c"$CONNS" -m"$STREAMS" -D "$secs" \
            "https://127.0.0.1:$port/" > "$out" 2>&1
        awk '/^requests:/ { print $8 }' "$out"
    else
        taskset -c "$LOAD_CPU" timeout $((secs + 10)) wrk -t1 -c"$CONNS" -d"${secs}s" --latency \
            "http://127.0.0.1:$port/" > "$out" 2>&1
        awk '/requests in/ { print $1 }' "$out"
    fi
}

declare -A USER SYS TOTAL RATE
# name pid u0 s0 u1 s1: checks the load's answers and records the proxy's us/op
account() {
    local name=$1 pid=$2 u0=$3 s0=$4 u1=$5 s1=$6 reqs
    reqs=$(cat "$OUT/reqs-$name")
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    [ -n "$reqs" ] && [ "$reqs" -gt 0 ] || die "$name: the load generator made no requests (see $OUT/load-$name.txt)"
    # an error answer is cheaper than the real one: a run with any is no measurement
    if grep -qE 'Non-2xx|Socket errors' "$OUT/load-$name.txt" ||
        grep -E '^Failed requests:' "$OUT/load-$name.txt" | grep -qv ' 0$' ||
        grep -E '^status codes:' "$OUT/load-$name.txt" | grep -qv ' 0 3xx, 0 4xx, 0 5xx'; then
        die "$name: answers that are not 200 (see $OUT/load-$name.txt)"
    fi
    USER[$name]=$(awk -v t=$((u1 - u0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    SYS[$name]=$(awk -v t=$((s1 - s0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    TOTAL[$name]=$(awk -v a="${USER[$name]}" -v b="${SYS[$name]}" 'BEGIN { printf "%.2f", a + b }')
    RATE[$name]=$(awk -v n="$reqs" -v d="$DUR" 'BEGIN { printf "%.0f", n / d }')
}

# TLS modes: every proxy must be measured on TLS 1.3 (nginx 1.22 without
# ssl_protocols answered ab with TLS 1.2, a cheaper handshake)
check_tls13() {  # name
    [ "$MODE" = h1 ] && return 0
    local got
    got=$(timeout 5 taskset -c "$LOAD_CPU" openssl s_client -connect "127.0.0.1:${PORT[$1]}" < /dev/null 2>/dev/null |
        awk '/^New, / { print $2 }' | tr -d ,)
    [ "$got" = TLSv1.3 ] || die "$1 negotiated ${got:-nothing}, not TLSv1.3"
}

run() {  # name: alone on PROXY_CPU
    local name=$1 pid u0 s0 u1 s1
    pid=$(start_"$name")
    STARTED+=("$pid")
    wait_port "${PORT[$name]}"
    check_tls13 "$name"
    load "${PORT[$name]}" 2 "$OUT/warmup-$name.txt" > /dev/null
    read -r u0 s0 < <(ticks "$pid")
    load "${PORT[$name]}" "$DUR" "$OUT/load-$name.txt" > "$OUT/reqs-$name"
    read -r u1 s1 < <(ticks "$pid")
    account "$name" "$pid" "$u0" "$s0" "$u1" "$s1"
}

# PAIRED=1: every proxy of the list at once on PROXY_CPU, each with its own load
# generator on LOAD_CPU, so that all are measured in the same seconds: what the
# host does meanwhile (its CPU steal moved one proxy's solo us/op by a third
# between rounds here) then weighs on all of them alike.
run_paired() {
    local name pids=() loads=()
    declare -A pid u0 s0
    for name in $PROXIES; do pid[$name]=$(start_"$name"); STARTED+=("${pid[$name]}"); done
    for name in $PROXIES; do wait_port "${PORT[$name]}"; check_tls13 "$name"; done
    for name in $PROXIES; do load "${PORT[$name]}" 2 "$OUT/warmup-$name.txt" > /dev/null & loads+=($!); done
    wait "${loads[@]}"
    loads=()
    for name in $PROXIES; do read -r "u0[$name]" "s0[$name]" < <(ticks "${pid[$name]}"); done
    for name in $PROXIES; do load "${PORT[$name]}" "$DUR" "$OUT/load-$name.txt" > "$OUT/reqs-$name" & loads+=($!); done
    wait "${loads[@]}"
    for name in $PROXIES; do
        read -r u1 s1 < <(ticks "${pid[$name]}")
        account "$name" "${pid[$name]}" "${u0[$name]}" "${s0[$name]}" "$u1" "$s1"
    done
}

if [ "$MODE" = tls-full ]; then LOADGEN="ab -c$CONNS -t $DUR, a full TLS handshake per request"
elif [ "$MODE" = h2 ]; then LOADGEN="h2load -t1 -c$CONNS -m$STREAMS -D $DUR over TLS"; else LOADGEN="wrk -t1 -c$CONNS -d${DUR}s"; fi
[ "${PAIRED:-0}" = 1 ] && WHERE="proxies together" || WHERE="proxy alone"
echo "# cpu_split.sh: $LOADGEN, $BODY_BYTES B answers; $WHERE on CPU $PROXY_CPU; $ROUNDS round(s); $(date -u +%FT%TZ)"
declare -A ALL   # name -> the round totals, space-separated
RATIOS=()        # herald / REF per round
FLOOR_RATIOS=()  # floor / REF per round
for round in $(seq "$ROUNDS"); do
    if [ "${PAIRED:-0}" = 1 ]; then run_paired; else for name in $PROXIES; do run "$name"; done; fi
    [ "$ROUNDS" -gt 1 ] && echo "## round $round"
    printf '| proxy | req/s | user us/op | kernel us/op | total us/op | kernel share |\n|---|---|---|---|---|---|\n'
    for name in $PROXIES; do
        awk -v n="$name" -v r="${RATE[$name]}" -v u="${USER[$name]}" -v s="${SYS[$name]}" -v t="${TOTAL[$name]}" \
            'BEGIN { printf "| %s | %s | %s | %s | %s | %.0f%% |\n", n, r, u, s, t, (t > 0 ? s / t * 100 : 0) }'
        ALL[$name]="${ALL[$name]:-} ${TOTAL[$name]}"
    done
    if [ -n "${TOTAL[$REF]:-}" ] && [ -n "${TOTAL[herald]:-}" ]; then
        RATIOS+=("$(awk -v a="${TOTAL[herald]}" -v b="${TOTAL[$REF]}" 'BEGIN { printf "%.2f", a / b }')")
        [ -n "${TOTAL[$FLOOR]:-}" ] &&
            FLOOR_RATIOS+=("$(awk -v a="${TOTAL[$FLOOR]}" -v b="${TOTAL[$REF]}" 'BEGIN { printf "%.2f", a / b }')")
        awk -v ht="${TOTAL[$REF]}" -v hs="${SYS[$REF]}" -v ks="${SYS[herald]}" -v kt="${TOTAL[herald]}" \
            -v ft="${TOTAL[$FLOOR]:-}" -v x="$TARGET" -v fl="$FLOOR" -v ref="$REF" 'BEGIN {
            printf "%s x %s total = %.2f us/op; %s kernel alone = %.2f, herald kernel alone = %.2f\n", x, ref, x * ht, ref, hs, ks
            printf "herald total / %s total = %.2f; herald user / %s user = %.2f\n", ref, kt / ht, ref, (kt - ks) / (ht - hs)
            if (ft != "") {
                printf "%s / %s = %.2f; the target leaves herald %.2f us/op above the floor\n", fl, ref, ft / ht, x * ht - ft
                if (ft >= x * ht)
                    printf "the %s x target is below the floor (%s) this round\n", x, fl
            } else if (ks >= x * ht)
                printf "the %s x target is below herald'"'"'s kernel time alone: no user-space change can reach it\n", x
        }'
    fi
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
if [ "$ROUNDS" -gt 1 ]; then
    echo "## medians over $ROUNDS rounds (total us/op)"
    for name in $PROXIES; do echo "$name: $(echo "${ALL[$name]}" | median)  (rounds:${ALL[$name]})"; done
    [ ${#RATIOS[@]} -gt 0 ] && echo "herald / $REF: median $(echo "${RATIOS[*]}" | median) (rounds: ${RATIOS[*]})"
    [ ${#FLOOR_RATIOS[@]} -gt 0 ] &&
        echo "$FLOOR / $REF: median $(echo "${FLOOR_RATIOS[*]}" | median) (rounds: ${FLOOR_RATIOS[*]}; the $TARGET x target is below the floor in $(printf '%s\n' "${FLOOR_RATIOS[@]}" | awk -v x="$TARGET" '$1 > x' | wc -l) of ${#FLOOR_RATIOS[@]})"
fi
echo "# files: $OUT"
