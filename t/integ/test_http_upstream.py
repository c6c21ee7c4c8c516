"""What the router does when upstreams misbehave: retries on 5xx and on
connect failure, route timeouts (504), circuit breaker overflow (503),
upstream resets, truncated and invalid responses, and clients that leave."""

import json
import re
import socket
import struct
import threading
import time

import conftest
import http_backends as hb
from helpers import wait_lines
from http_backends import HttpBackend


def retry_route(prefix="/", cluster="backend", **policy):
    p = {"retry_back_off": {"base_interval": "0.01s", "max_interval": "0.05s"}}
    p.update(policy)
    return hb.route(prefix, cluster, retry_policy=p)


# ------------------------------------------------------------------ retries


def test_http_retry_on_5xx(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[retry_route(retry_on="5xx", num_retries=2)])
    # fails twice, then succeeds: the client sees only the success
    status, headers, body = hb.request(lp, "/r?fail=2&key=a")
    assert status == 200, body[:200]
    assert b.served() == 3
    # fails more often than the policy allows: the last 503 reaches the client
    status, headers, body = hb.request(lp, "/r?fail=5&key=b")
    assert status == 503 and headers.get("x-backend") == "b", (status, headers)
    assert b.served() == 6
    # 4xx is not retried under "5xx"
    assert hb.request(lp, "/r?status=404")[0] == 404
    assert b.served() == 7
    assert h.wait_stat("cluster.backend.upstream_rq_retry", lambda v: v >= 4) == 4
    st = h.stats()
    assert st.get("cluster.backend.upstream_rq_retry_success") == 1, {k: v for k, v in st.items() if "retry" in k}
    assert st.get("cluster.backend.upstream_rq_retry_limit_exceeded") == 1


def test_http_retry_replays_body_and_trailers(herald, upstreams, port):
    """A retried request goes again with its whole body and its trailers; a
    route without retries forwards them once (nothing kept for a replay)."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[
        retry_route("/r", retry_on="5xx", num_retries=1), hb.route("/", "backend")])
    body = hb.pattern_bytes(20000)
    status, _, _ = hb.request(lp, "/r?fail=1&key=body", method="POST", body=body)
    assert status == 200
    tries = [r for r in b.requests if "key=body" in r["target"]]
    assert len(tries) == 2, tries
    assert all(r["body_len"] == 20000 and r["body_sha256"] == hb.sha256(body) for r in tries), tries
    chunked = (b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n")
    assert hb.status_of(hb.raw(lp, chunked % b"/r?fail=1&key=trailers")) == 200
    tries = [r for r in b.requests if "key=trailers" in r["target"]]
    assert len(tries) == 2, tries
    for r in tries:
        assert r["body_sha256"] == hb.sha256(b"hello world"), r
        assert hb.hget(r["trailers"], "x-sum") == "42", r["trailers"]
    # no retry policy: one try, the same bytes
    assert hb.status_of(hb.raw(lp, chunked % b"/plain")) == 200
    status, _, _ = hb.request(lp, "/plain2", method="POST", body=body)
    assert status == 200
    plain = [r for r in b.requests if r["path"] in ("/plain", "/plain2")]
    assert len(plain) == 2
    assert plain[0]["body_sha256"] == hb.sha256(b"hello world") and hb.hget(plain[0]["trailers"], "x-sum") == "42"
    assert plain[1]["body_sha256"] == hb.sha256(body)


def test_http_retry_on_retriable_status_codes(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[retry_route(
        retry_on="retriable-status-codes", num_retries=1, retriable_status_codes=[409])])
    assert hb.request(lp, "/x?fail=1&key=c&status=409")[0] == 200
    assert hb.request(lp, "/x?fail=1&key=d&status=500")[0] == 500
    assert b.served() == 3


def test_http_retry_on_connect_failure(herald, upstreams, port):
    b = upstreams(HttpBackend, "live")
    dead = port()   # nothing listens there
    h, lp = hb.start_proxy(herald, port, [dead, b.port],
                           routes=[retry_route(retry_on="connect-failure", num_retries=3)])
    for i in range(8):
        status, headers, body = hb.request(lp, "/c%d" % i)
        assert status == 200 and headers.get("x-backend") == "live", (i, status, body[:200])
    assert b.served() == 8
    assert h.stat("cluster.backend.upstream_cx_connect_fail") >= 4
    assert h.stat("cluster.backend.upstream_rq_retry") >= 4


PREVIOUS_HOSTS = {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}


def test_http_retry_previous_hosts(herald, upstreams, port, tmp_path):
    """RANDOM over a dead host and a live one, one retry on connect failure:
    without a host predicate a retry picks the dead host again half the time
    (60 requests: ~15 fail); with previous_hosts (re-picking up to 30 times)
    the retry goes to the other host and none fails. The access log's
    %UPSTREAM_REQUEST_ATTEMPT_COUNT% and %UPSTREAM_HOST% show the path."""
    b = upstreams(HttpBackend, "live")
    dead = port()   # nothing listens there
    log = str(tmp_path / "access.log")
    policy = dict(retry_on="connect-failure", num_retries=1)
    routes = [retry_route("/avoid", retry_host_predicate=[PREVIOUS_HOSTS], host_selection_retry_max_attempts=30,
                          **policy),
              retry_route("/", **policy)]
    h, lp = hb.start_proxy(herald, port, [dead, b.port], routes=routes, cluster_extra={"lb_policy": "RANDOM"},
                           access_log=[hb.file_access_log(
                               log, "%REQ(:PATH)% %RESPONSE_CODE% %UPSTREAM_REQUEST_ATTEMPT_COUNT% "
                               "%UPSTREAM_HOST%\n")])
    n = 60
    plain = [hb.request(lp, "/plain%d" % i)[0] for i in range(n)]
    assert 200 in plain and 503 in plain, plain      # the control: a retry may land on the dead host
    avoid = [hb.request(lp, "/avoid%d" % i)[0] for i in range(n)]
    assert avoid == [200] * n, avoid
    lines = wait_lines(log, 2 * n)
    retried = [ln.split() for ln in lines if ln.startswith("/avoid") and ln.split()[2] == "2"]
    assert retried, lines                            # some first picks were the dead host ...
    live = "127.0.0.1:%d" % b.port
    assert all(f[1] == "200" and f[3] == live for f in retried), retried   # ... and every retry went elsewhere


def test_http_retry_host_predicate_validated(tmp_path):
    for pred, want in (({"name": "envoy.retry_host_predicates.omit_canary_hosts", "typed_config": {
                            "@type": "type.googleapis.com/"
                                     "envoy.extensions.retry.host.omit_canary_hosts.v3.OmitCanaryHostsPredicate"}},
                        r"retry_host_predicate\[0\]\.typed_config\.@type: not supported: retry host predicate "
                        r"'type.googleapis.com/envoy.extensions.retry.host.omit_canary_hosts"),
                       ({"name": "envoy.retry_host_predicates.omit_host_metadata"},
                        r"retry_host_predicate\[0\]\.name: not supported: retry host predicate "
                        r"'envoy.retry_host_predicates.omit_host_metadata'")):
        routes = [retry_route("/", retry_on="5xx", retry_host_predicate=[pred])]
        cfg = {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", routes))],
            "clusters": [hb.http_cluster("backend", [1])]}}
        path = tmp_path / "pred.json"
        path.write_text(json.dumps(cfg))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1, r.stderr
        assert re.search(r"error: .*pred.json:\d+:\d+: .*" + want, r.stderr), r.stderr


def test_http_connect_failure_without_retry_is_503(herald, upstreams, port, tmp_path):
    dead = port()
    log = str(tmp_path / "access.log")
    h, lp = hb.start_proxy(herald, port, [dead],
                           access_log=[hb.file_access_log(log, "%RESPONSE_CODE% %RESPONSE_FLAGS%\n")])
    t0 = time.monotonic()
    status, headers, body = hb.request(lp, "/")
    assert status == 503, body
    assert time.monotonic() - t0 < 3
    assert b"upstream connect error" in body, body
    assert h.wait_stat("cluster.backend.upstream_cx_connect_fail", lambda v: v >= 1) == 1
    assert hb_wait(lambda: open(log).read().strip()) == "503 UF"


def hb_wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = pred()
        except OSError:
            v = None
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


# ------------------------------------------------------------------ timeouts


def test_http_route_timeout_is_504(herald, upstreams, port, tmp_path):
    b = upstreams(HttpBackend, "slow")
    log = str(tmp_path / "access.log")
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[hb.route("/", "backend", timeout="0.3s")],
                           access_log=[hb.file_access_log(log, "%RESPONSE_CODE% %RESPONSE_FLAGS%\n")])
    t0 = time.monotonic()
    status, headers, body = hb.request(lp, "/slow?delay_ms=3000")
    took = time.monotonic() - t0
    assert status == 504, (status, body)
    assert b"upstream request timeout" in body
    assert 0.25 <= took < 2.0, took
    assert hb.request(lp, "/fast?delay_ms=50")[0] == 200
    assert h.wait_stat("cluster.backend.upstream_rq_timeout", lambda v: v >= 1) == 1
    assert h.stat("http.ingress_http.downstream_rq_5xx") == 1
    assert hb_wait(lambda: len(open(log).read().splitlines()) >= 2 and open(log).read()).splitlines()[0] == "504 UT"


def test_http_per_try_timeout_retried(herald, upstreams, port):
    slow = upstreams(HttpBackend, "slow", delay_ms=1500)
    fast = upstreams(HttpBackend, "fast")
    # round robin: slow first; its try times out and the retry goes to fast
    h, lp = hb.start_proxy(herald, port, [slow.port, fast.port], routes=[retry_route(
        retry_on="5xx", num_retries=1, per_try_timeout="0.2s")])
    t0 = time.monotonic()
    status, headers, body = hb.request(lp, "/p")
    assert status == 200 and headers.get("x-backend") == "fast", (status, headers, body[:100])
    assert time.monotonic() - t0 < 1.4


def test_http_per_try_timeouts_exhausted_flags(herald, upstreams, port, tmp_path):
    """Every try timed out and no retry is left: 504 with UT and URX, printed
    in Envoy's order ("UT,URX", as log parsers written for Envoy expect)."""
    slow = upstreams(HttpBackend, "slow", delay_ms=1500)
    log = str(tmp_path / "access.log")
    h, lp = hb.start_proxy(herald, port, [slow.port], routes=[retry_route(
        retry_on="5xx", num_retries=1, per_try_timeout="0.2s")],
        access_log=[hb.file_access_log(log, "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_FLAGS_LONG%\n")])
    status, _, body = hb.request(lp, "/p")
    assert status == 504, (status, body[:100])
    assert hb_wait(lambda: open(log).read().strip()) == \
        "504 UT,URX UpstreamRequestTimeout,UpstreamRetryLimitExceeded"


# ------------------------------------------------------------------ circuit breakers


def test_http_circuit_breaker_overflow_is_503(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    cb = {"thresholds": [{"priority": "DEFAULT", "max_connections": 1, "max_pending_requests": 1,
                          "max_requests": 1}]}
    h, lp = hb.start_proxy(herald, port, [b.port], cluster_extra={"circuit_breakers": cb})
    results = []
    lock = threading.Lock()

    def one(i):
        try:
            r = hb.request(lp, "/cb%d?delay_ms=800" % i, timeout=10)
        except OSError as e:
            r = (repr(e), {}, b"")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(15)
    statuses = sorted(r[0] for r in results)
    assert len(statuses) == 6, statuses
    assert 200 in statuses and 503 in statuses, statuses
    overflowed = [r for r in results if r[0] == 503]
    assert b.accepted == 1, "max_connections: 1"
    assert h.wait_stat("cluster.backend.upstream_rq_pending_overflow", lambda v: v >= len(overflowed)) \
        == len(overflowed)
    assert all(r[1].get("x-envoy-overloaded") == "true" for r in overflowed), \
        "Envoy marks overflow replies with x-envoy-overloaded: true: %s" % [r[1] for r in overflowed]
    # once the burst is over, requests flow again
    assert hb.request(lp, "/after")[0] == 200


# ------------------------------------------------------------------ upstream resets and bad responses


def test_http_upstream_reset_before_response_is_503(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port])
    for mode in ("now", "reset"):
        status, headers, body = hb.request(lp, "/x?close=%s" % mode)
        assert status == 503, (mode, status, body)
        assert b"upstream connect error or disconnect/reset before headers" in body, body
    assert hb.request(lp, "/ok")[0] == 200
    assert h.stat("http.ingress_http.downstream_rq_5xx") == 2


def test_http_upstream_invalid_response(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port])
    status, headers, body = hb.request(lp, "/x?garbage=1")
    assert status in (502, 503), (status, body)
    assert hb.request(lp, "/ok")[0] == 200
    assert h.wait_stat("cluster.backend.upstream_cx_protocol_error", lambda v: v >= 1) >= 1


def test_http_upstream_closes_mid_response(herald, upstreams, port):
    """The response started, so herald cannot send a 503: it must end the
    client connection (not hang, not pad the body)."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port])
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    try:
        s.sendall(b"GET /x?close=mid&bytes=20000 HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        data = bytearray()
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            data += d
        assert time.monotonic() - t0 < 4
    finally:
        s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert hb.status_of(head) == 200
    cl = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    assert cl == 21000 and len(body) == 10000, (cl, len(body))
    assert h.wait_stat("cluster.backend.upstream_rq_rx_reset", lambda v: v >= 1) == 1
    assert hb.request(lp, "/ok")[0] == 200


def client_leaves(herald, upstreams, port, rst, query="delay_ms=500", count=3):
    """count clients each send a request and leave 0.1 s later, before the answer."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port])
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", lp), timeout=5)
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(b"GET /x?%s HTTP/1.1\r\nHost: x\r\n\r\n" % query.encode())
        time.sleep(0.1)
        s.close()
    assert hb.wait_for_count(b, count)
    return h, lp, b


def test_http_client_resets_while_upstream_is_slow(herald, upstreams, port):
    """The clients reset with their requests sent whole: each response is still
    read to its end and dropped, and the upstream connection serves the next
    request (Envoy would close it: upstream_cx_destroy_with_active_rq)."""
    h, lp, b = client_leaves(herald, upstreams, port, rst=True)
    assert h.wait_stat("http.ingress_http.downstream_cx_destroy_remote_active_rq", lambda v: v >= 3) == 3
    assert h.wait_stat("cluster.backend.upstream_cx_drained_after_cancel", lambda v: v >= 3) == 3
    assert h.stat("cluster.backend.upstream_rq_tx_reset") == 3   # abandoned, as Envoy counts it
    status, headers, body = hb.request(lp, "/ok")
    assert status == 200
    got = json.loads(body)
    assert got["conn_req"] == 2, got          # an old connection, not a new one
    assert b.accepted == 3
    assert h.stat("cluster.backend.upstream_cx_destroy_with_active_rq") == 0
    assert h.alive()


def test_http_client_closes_while_upstream_is_slow(herald, upstreams, port):
    """A FIN with the response outstanding: Envoy's HTTP connection manager
    does not half-close; it counts a remote close with an active request and
    cancels the upstream request."""
    h, lp, b = client_leaves(herald, upstreams, port, rst=False)
    assert h.wait_stat("http.ingress_http.downstream_cx_destroy_remote_active_rq", lambda v: v >= 3) == 3
    assert h.wait_stat("cluster.backend.upstream_cx_drained_after_cancel", lambda v: v >= 3) == 3
    assert hb.request(lp, "/ok")[0] == 200
    assert b.accepted == 3


def test_http_cancelled_response_too_slow_to_drain(herald, upstreams, port):
    """An abandoned response that has not ended a second later closes its
    connection, as Envoy would at once."""
    h, lp, b = client_leaves(herald, upstreams, port, rst=True, query="delay_ms=2500", count=1)
    assert h.wait_stat("cluster.backend.upstream_cx_destroy_with_active_rq", lambda v: v >= 1, timeout=5) == 1
    assert h.stat("cluster.backend.upstream_cx_drained_after_cancel") == 0
    status, headers, body = hb.request(lp, "/ok")
    assert status == 200 and json.loads(body)["conn_req"] == 1
    assert h.alive()


def test_http_cancelled_response_too_large_to_drain(herald, upstreams, port):
    """Nor is a large abandoned response read to its end: past 256 KiB the
    connection closes."""
    h, lp, b = client_leaves(herald, upstreams, port, rst=True, query="delay_ms=300&bytes=4000000", count=1)
    assert h.wait_stat("cluster.backend.upstream_cx_destroy_with_active_rq", lambda v: v >= 1) == 1
    assert h.stat("cluster.backend.upstream_cx_drained_after_cancel") == 0
    assert hb.request(lp, "/ok")[0] == 200
    assert h.alive()


def test_http_many_concurrent_clients(herald, upstreams, port):
    h, fp, backends = hb.start_front(herald, upstreams, port, concurrency=2)
    errors = []
    counts = {}
    lock = threading.Lock()

    def client(i):
        try:
            for j in range(10):
                status, headers, body = hb.request(fp, "/cc%d/%d" % (i, j))
                with lock:
                    counts[headers.get("x-backend")] = counts.get(headers.get("x-backend"), 0) + 1
                if status != 200:
                    errors.append((i, j, status))
        except OSError as e:
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:10]
    assert sum(counts.values()) == 200 and set(counts) == {"app1", "app2", "app3", "app4"}, counts
    assert conftest.scan_log(h.log()) == []
