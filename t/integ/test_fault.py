"""envoy.filters.http.fault against real clients and backends: aborts and
delays for a share of the requests, from the config, the runtime or the
request's x-envoy-fault-* headers, only for requests matching `headers`,
bounded by max_active_faults, with Envoy's stats and response flags."""

import json
import re
import socket
import subprocess
import threading
import time

import conftest
import http_backends as hb
from helpers import wait_lines
from http_backends import HttpBackend

FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
STATS = "http.ingress_http.fault."
LOG_FMT = "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"


def fault(**cfg):
    return {"name": "envoy.filters.http.fault", "typed_config": dict(cfg, **{"@type": FAULT_TYPE})}


def pct(n):
    return {"numerator": n, "denominator": "HUNDRED"}


def start(herald, port, b, f, log=None, **kw):
    extra = {"access_log": [hb.file_access_log(log, LOG_FMT)]} if log else {}
    return hb.start_proxy(herald, port, [b.port], http_filters=[f], **extra, **kw)


def timed(lp, path, **kw):
    t0 = time.monotonic()
    r = hb.request(lp, path, timeout=10, **kw)
    return r, time.monotonic() - t0


def test_fault_abort(herald, upstreams, port, tmp_path):
    b = upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    h, lp = start(herald, port, b, fault(abort={"http_status": 418, "percentage": pct(100)}), log)
    status, headers, body = hb.request(lp, "/a")
    assert (status, body) == (418, b"fault filter abort"), (status, body)
    assert b.served() == 0
    assert h.wait_stat(STATS + "aborts_injected", lambda v: v >= 1) == 1
    assert wait_lines(log, 1) == ["/a 418 FI fault_filter_abort"]
    r = hb.curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
                "http://127.0.0.1:%d/h2" % lp)
    assert r.stdout == "418", r.stdout


def test_fault_delay_keeps_the_request_whole(herald, upstreams, port, tmp_path):
    b = upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    h, lp = start(herald, port, b, fault(delay={"fixed_delay": "0.4s", "percentage": pct(100)}), log)
    body = hb.pattern_bytes(300000)
    (status, _, _), took = timed(lp, "/d", method="POST", body=body)
    assert status == 200 and took >= 0.35, (status, took)
    got = b.requests[0]
    assert got["body_len"] == len(body) and got["body_sha256"] == hb.sha256(body), got
    assert h.wait_stat(STATS + "delays_injected", lambda v: v >= 1) == 1
    assert wait_lines(log, 1) == ["/d 200 DI via_upstream"]
    assert h.stat(STATS + "active_faults") == 0


def test_fault_from_request_headers(herald, upstreams, port):
    """header_abort / header_delay: the request says whether and how."""
    b = upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b, fault(abort={"header_abort": {}, "percentage": pct(100)},
                                         delay={"header_delay": {}, "percentage": pct(100)}))
    (status, _, _), took = timed(lp, "/plain")
    assert status == 200 and took < 0.3, took
    assert hb.request(lp, "/ab", headers={"x-envoy-fault-abort-request": "503"})[0] == 503
    (status, _, _), took = timed(lp, "/dl", headers={"x-envoy-fault-delay-request": "300"})
    assert status == 200 and took >= 0.25, took
    # the request's percentage header can only lower the configured share
    assert hb.request(lp, "/ab0", headers={"x-envoy-fault-abort-request": "503",
                                           "x-envoy-fault-abort-request-percentage": "0"})[0] == 200
    assert b.served() == 3
    st = h.stats()
    assert (st.get(STATS + "aborts_injected"), st.get(STATS + "delays_injected")) == (1, 1)


def test_fault_only_for_matching_requests_and_runtime_override(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    f = fault(abort={"http_status": 503, "percentage": pct(0)},
              headers=[{"name": "x-chaos", "string_match": {"exact": "on"}}])
    lp = port()
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(lp, hb.hcm("ingress_http", [hb.route("/", "backend")], [f]), "proxy")],
        "clusters": [hb.http_cluster("backend", [b.port])]},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {
            "fault.http.abort.abort_percent": 100, "fault.http.abort.http_status": 429}}]}}
    h = herald(cfg)
    # percentage 0 in the config, 100 from the runtime, and the runtime's status
    assert hb.request(lp, "/x", headers={"x-chaos": "on"})[0] == 429
    assert hb.request(lp, "/y", headers={"x-chaos": "off"})[0] == 200
    assert hb.request(lp, "/z")[0] == 200
    assert b.served() == 2
    assert h.stat(STATS + "aborts_injected") == 1


def test_fault_max_active_faults(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b, fault(delay={"fixed_delay": "1s", "percentage": pct(100)},
                                         max_active_faults=1))
    results = {}

    def one(name):
        results[name] = timed(lp, "/" + name)

    first = threading.Thread(target=one, args=("first",))
    first.start()
    assert h.wait_stat(STATS + "active_faults", lambda v: v == 1) == 1
    one("second")                                   # over the limit: no delay
    first.join(10)
    assert results["first"][0][0] == 200 and results["first"][1] >= 0.9, results
    assert results["second"][0][0] == 200 and results["second"][1] < 0.8, results
    st = h.stats()
    assert (st.get(STATS + "faults_overflow"), st.get(STATS + "delays_injected")) == (1, 1)
    assert h.wait_stat(STATS + "active_faults", lambda v: v == 0) == 0


def test_fault_client_leaves_during_the_delay(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b, fault(delay={"fixed_delay": "0.5s"}))
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    s.sendall(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
    assert h.wait_stat(STATS + "active_faults", lambda v: v == 1) == 1
    s.close()
    assert h.wait_stat(STATS + "active_faults", lambda v: v == 0) == 0
    time.sleep(0.7)                                 # the delay's end finds no stream
    assert b.served() == 0
    assert hb.request(lp, "/after")[0] == 200       # and herald goes on


def test_fault_response_rate_limit(herald, upstreams, port, tmp_path):
    """fixed_limit: the body at 16 KiB/s (the first second's worth at once),
    bytes intact, the headers not held; one active fault while it lasts."""
    b = upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    h, lp = start(herald, port, b, fault(response_rate_limit={"fixed_limit": {"limit_kbps": 16},
                                                              "percentage": pct(100)}), log)
    s = socket.create_connection(("127.0.0.1", lp), timeout=10)
    t0 = time.monotonic()
    s.sendall(b"GET /slow?bytes=40960 HTTP/1.1\r\nHost: x\r\n\r\n")
    r = hb.Reader(s)
    status_line = r.readline()
    head_at = time.monotonic() - t0
    headers = hb.read_headers(r)
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    assert h.wait_stat(STATS + "active_faults", lambda v: v == 1) == 1
    body = r.read(int(hb.hget(headers, "content-length")))
    took = time.monotonic() - t0
    s.close()
    assert len(body) == 40960 and hb.sha256(body) == hb.hget(headers, "x-body-sha256")
    assert head_at < 1.0 and 1.2 <= took < 12, (head_at, took)
    st = h.stats()
    assert (st[STATS + "response_rl_injected"], st[STATS + "delays_injected"]) == (1, 0), st
    assert h.wait_stat(STATS + "active_faults", lambda v: v == 0) == 0
    assert wait_lines(log, 1) == ["/slow?bytes=40960 200 - via_upstream"]


def test_fault_response_rate_limit_from_headers(herald, upstreams, port):
    """header_limit: only requests that carry x-envoy-fault-throughput-response
    (> 0) are slowed; its percentage header can lower the share to 0."""
    b = upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b, fault(response_rate_limit={"header_limit": {}, "percentage": pct(100)}))
    (status, _, body), took = timed(lp, "/plain?bytes=40960")
    assert status == 200 and len(body) == 40960 and took < 1.0, took
    for bad in ("0", "abc"):
        (status, _, body), took = timed(lp, "/bad?bytes=40960", headers={"x-envoy-fault-throughput-response": bad})
        assert status == 200 and took < 1.0, (bad, took)
    (status, _, body), took = timed(lp, "/off?bytes=40960", headers={
        "x-envoy-fault-throughput-response": "16", "x-envoy-fault-throughput-response-percentage": "0"})
    assert status == 200 and took < 1.0, took
    (status, headers, body), took = timed(lp, "/slow?bytes=40960",
                                          headers={"x-envoy-fault-throughput-response": "16"})
    assert status == 200 and hb.sha256(body) == headers["x-body-sha256"] and took >= 1.2, took
    assert h.stat(STATS + "response_rl_injected") == 1


def test_fault_response_rate_limit_over_http2_with_trailers(herald, upstreams, port):
    """HTTP/2: the paced body, then the upstream's trailers after its last byte."""
    b = upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b, fault(response_rate_limit={"fixed_limit": {"limit_kbps": 16}}))
    t0 = time.monotonic()
    r = subprocess.run(["nghttp", "-v", "http://127.0.0.1:%d/t?bytes=40960&chunks=4&trailer=1" % lp],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    took = time.monotonic() - t0
    out = r.stdout.decode("latin-1")
    assert r.returncode == 0 and took >= 1.2, (took, out[-500:])
    data, last = out.rfind("recv DATA frame"), out.rfind("recv HEADERS frame")
    assert 0 < data < last and "x-trailer: done" in out[data:last], out
    assert h.stat(STATS + "response_rl_injected") == 1


def grpc_call(lp, path, headers=()):
    # nghttp, not curl (see test_local_reply.grpc_call)
    from test_local_reply import grpc_call as call
    return call(lp, path, headers)


def test_fault_grpc_abort(herald, upstreams, port):
    """abort.grpc_status: a gRPC request gets HTTP 200 with that grpc-status;
    any other request gets Envoy's 200 with the abort body."""
    b = upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b, fault(abort={"grpc_status": 4, "percentage": pct(100)}))
    status, hd = grpc_call(lp, "/Svc/Call")
    assert (status, hd.get("grpc-status"), hd.get("grpc-message")) == ("200", "4", "fault filter abort"), hd
    assert hb.request(lp, "/plain")[::2] == (200, b"fault filter abort")
    assert b.served() == 0 and h.stat(STATS + "aborts_injected") == 2


def test_fault_grpc_abort_from_header(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b, fault(abort={"header_abort": {}, "percentage": pct(100)}))
    status, hd = grpc_call(lp, "/Svc/A", ["x-envoy-fault-abort-grpc-request: 14"])
    assert (status, hd.get("grpc-status")) == ("200", "14"), hd
    # the HTTP status header wins over the gRPC one, as in Envoy; a gRPC client sees it mapped
    status, hd = grpc_call(lp, "/Svc/B", ["x-envoy-fault-abort-grpc-request: 14", "x-envoy-fault-abort-request: 403"])
    assert (status, hd.get("grpc-status")) == ("200", "7"), hd
    status, hd = grpc_call(lp, "/Svc/C")
    assert status == "200" and "grpc-status" not in hd, hd   # no header: no abort, the backend answers
    assert b.served() == 1


def test_fault_bad_configs(tmp_path):
    cases = [
        (fault(abort={"http_status": 700}), r"abort\.http_status: http_status must be from 200 to 599"),
        (fault(delay={"percentage": pct(10)}), r"delay: a delay needs fixed_delay or header_delay"),
        (fault(abort={"percentage": pct(5)}), r"abort: an abort needs http_status, grpc_status or header_abort"),
        (fault(upstream_cluster="x"), r"upstream_cluster: not supported"),
        (fault(response_rate_limit={"percentage": pct(5)}),
         r"response_rate_limit: a response_rate_limit needs fixed_limit or header_limit"),
        (fault(response_rate_limit={"fixed_limit": {"limit_kbps": 0}}),
         r"response_rate_limit\.fixed_limit\.limit_kbps: limit_kbps must be at least 1"),
        (fault(response_rate_limit={"fixed_limit": {}}), r"limit_kbps"),
        (fault(abort={"http_status": 503}, headers=[{"name": "x", "string_match": {"safe_regex": {"regex": "("}}}]),
         r"regex"),
    ]
    for f, want in cases:
        cfg = {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "backend")], [f]))],
            "clusters": [hb.http_cluster("backend", [1])]}}
        path = tmp_path / "fault.json"
        path.write_text(json.dumps(cfg))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*fault.json:\d+:\d+: .*" + want, r.stderr), (want, r.stderr)


def test_fault_per_route(herald, upstreams, port):
    """typed_per_filter_config: a route's own HTTPFault replaces the filter's."""
    b = upstreams(HttpBackend, "b")
    chaos = hb.route("/chaos", "backend")
    chaos["typed_per_filter_config"] = {"envoy.filters.http.fault": {
        "@type": FAULT_TYPE, "abort": {"http_status": 502, "percentage": pct(100)}}}
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[chaos, hb.route("/", "backend")],
                           http_filters=[fault(abort={"http_status": 503, "percentage": pct(0)})])
    assert [hb.request(lp, "/chaos/%d" % i)[0] for i in range(3)] == [502] * 3
    assert [hb.request(lp, "/calm/%d" % i)[0] for i in range(3)] == [200] * 3
    assert h.wait_stat(STATS + "aborts_injected", lambda v: v >= 3) == 3
