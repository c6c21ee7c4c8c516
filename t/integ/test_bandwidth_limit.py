"""envoy.filters.http.bandwidth_limit against real clients and backends:
request and response bodies at limit_kbps, one bucket per config shared by
its streams, per-route configs, backpressure on the upstream, trailers after
the last bytes, Envoy's stats, and clear errors for bad configs.

Timing assertions are lower bounds only (a body cannot arrive faster than
the limit allows), with generous upper bounds: the bucket starts with one
second's worth, so a body of B KiB at R KiB/s takes about (B - R) / R s."""

import json
import re
import socket
import subprocess
import threading
import time

import conftest
import http_backends as hb
from http_backends import HttpBackend

BWL_TYPE = "type.googleapis.com/envoy.extensions.filters.http.bandwidth_limit.v3.BandwidthLimit"
NAME = "envoy.filters.http.bandwidth_limit"


def bwl(**cfg):
    cfg.setdefault("stat_prefix", "bw")
    return {"name": NAME, "typed_config": dict(cfg, **{"@type": BWL_TYPE})}


def stats_of(h, prefix="bw"):
    p = prefix + ".http_bandwidth_limit."
    return {k[len(p):]: v for k, v in h.stats().items() if k.startswith(p)}


def timed(lp, path, **kw):
    t0 = time.monotonic()
    r = hb.request(lp, path, timeout=20, **kw)
    return r, time.monotonic() - t0


def histogram_count(h, name):
    status, body = h.admin_get("/stats?format=json")
    assert status == 200
    hist = [x["histograms"] for x in json.loads(body)["stats"] if "histograms" in x]
    computed = {x["name"]: x["values"] for x in hist[0]["computed_quantiles"]} if hist else {}
    return computed.get(name)


def test_bandwidth_limit_response(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[bwl(enable_mode="RESPONSE", limit_kbps=16)])
    # 40 KiB at 16 KiB/s: 16 at once, 24 more in about 1.5 s
    (status, headers, body), took = timed(lp, "/big?bytes=40960")
    assert status == 200 and len(body) == 40960 and hb.sha256(body) == headers["x-body-sha256"]
    assert 1.2 <= took < 12, took
    st = stats_of(h)
    assert st["response_enabled"] == 1 and st["response_enforced"] >= 1, st
    assert st["response_incoming_total_size"] == 40960 and st["response_allowed_total_size"] == 40960, st
    assert st["response_pending"] == 0 and st["request_enabled"] == 0, st
    q = histogram_count(h, "bw.http_bandwidth_limit.response_transfer_duration")
    assert q and q[-1]["cumulative"] is not None and q[-1]["cumulative"] >= 1000, q
    # a small answer fits in the bucket's first second: no wait
    (status, _, body), took = timed(lp, "/small?bytes=1000")
    assert status == 200 and len(body) == 1000 and took < 1.0, took


def test_bandwidth_limit_response_over_http2(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[bwl(enable_mode="RESPONSE", limit_kbps=16)])
    t0 = time.monotonic()
    r = hb.curl("-s", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null", "-w", "%{size_download}",
                "http://127.0.0.1:%d/h2?bytes=40960" % lp, timeout=30)
    took = time.monotonic() - t0
    assert r.returncode == 0 and r.stdout.endswith("40960"), (r.stdout, r.stderr)
    assert re.search(r"HTTP/2 200", r.stdout), r.stdout
    assert took >= 1.2, took


def test_bandwidth_limit_request(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[bwl(enable_mode="REQUEST", limit_kbps=16)])
    body = hb.pattern_bytes(40960)
    (status, _, _), took = timed(lp, "/up", method="POST", body=body)
    assert status == 200 and took >= 1.2, (status, took)
    got = b.requests[0]
    assert got["body_len"] == len(body) and got["body_sha256"] == hb.sha256(body), got
    st = stats_of(h)
    assert (st["request_enabled"], st["response_enabled"]) == (1, 0), st
    assert st["request_allowed_total_size"] == 40960 and st["request_pending"] == 0, st


def test_bandwidth_limit_response_trailers_wait_for_the_body(herald, upstreams, port):
    """HTTP/2 response with trailers: the trailers reach the client after
    the last paced DATA frame (nghttp prints the frames in order)."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[bwl(enable_mode="RESPONSE", limit_kbps=16)])
    t0 = time.monotonic()
    r = subprocess.run(["nghttp", "-v", "http://127.0.0.1:%d/t?bytes=40960&chunks=5&trailer=1" % lp],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    took = time.monotonic() - t0
    out = r.stdout.decode("latin-1")
    assert r.returncode == 0, out + r.stderr.decode()
    assert took >= 1.2, took
    data = out.rfind("recv DATA frame")
    last = out.rfind("recv HEADERS frame")
    assert 0 < data < last, out
    assert re.match(r"recv HEADERS frame <[^>]*flags=0x05", out[last:]), "END_STREAM | END_HEADERS"
    assert "x-trailer: done" in out[data:last], out
    st = stats_of(h)
    assert st["response_allowed_total_size"] == 40960 and st["response_pending"] == 0, st


def test_bandwidth_limit_bucket_shared_by_streams(herald, upstreams, port):
    """Two downloads of 24 KiB at 16 KiB/s, one bucket: 48 KiB take ~2 s
    together, where either alone would take ~0.5 s."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], concurrency=2,
                           http_filters=[bwl(enable_mode="RESPONSE", limit_kbps=16)])
    done = {}

    def one(i):
        r = hb.request(lp, "/s%d?bytes=24576" % i, timeout=20)
        done[i] = (r[0], len(r[2]), time.monotonic())

    t0 = time.monotonic()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert all(done[i][:2] == (200, 24576) for i in range(2)), done
    last = max(done[i][2] for i in range(2)) - t0
    assert last >= 1.5, last
    assert stats_of(h)["response_allowed_total_size"] == 2 * 24576


def test_bandwidth_limit_per_route(herald, upstreams, port):
    """Filter-level DISABLED with no limit (Envoy's docs example); one route
    limits with its own config, stats prefix and bucket."""
    b = upstreams(HttpBackend, "b")
    slow = hb.route("/slow", "backend")
    slow["typed_per_filter_config"] = {NAME: {
        "@type": BWL_TYPE, "stat_prefix": "slow_route", "enable_mode": "REQUEST_AND_RESPONSE",
        "limit_kbps": 16, "fill_interval": "0.1s"}}
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[slow, hb.route("/", "backend")],
                           http_filters=[bwl(stat_prefix="default")])
    (status, _, body), took = timed(lp, "/fast?bytes=40960")
    assert status == 200 and len(body) == 40960 and took < 1.0, took
    (status, _, body), took = timed(lp, "/slow?bytes=40960")
    assert status == 200 and len(body) == 40960 and took >= 1.2, took
    st = stats_of(h, "slow_route")
    assert (st["request_enabled"], st["response_enabled"]) == (1, 1), st
    assert stats_of(h, "default").get("response_enabled", 0) == 0


def test_bandwidth_limit_stops_the_upstream(herald, upstreams, port):
    """A response far larger than the connection's buffer limit: the filter
    holds at most about the limit and stops reading the upstream meanwhile;
    every byte arrives."""
    b = upstreams(HttpBackend, "b")
    lp = port()
    listener = hb.http_listener(lp, hb.hcm("ingress_http", [hb.route("/", "backend")],
                                           [bwl(enable_mode="RESPONSE", limit_kbps=256)]), "proxy")
    listener["per_connection_buffer_limit_bytes"] = 32768
    cfg = {"static_resources": {"listeners": [listener], "clusters": [hb.http_cluster("backend", [b.port])]}}
    h = herald(cfg)
    # 768 KiB at 256 KiB/s: 256 at once, 512 in about 2 s
    (status, headers, body), took = timed(lp, "/huge?bytes=786432")
    assert status == 200 and len(body) == 786432 and hb.sha256(body) == headers["x-body-sha256"]
    assert took >= 1.5, took
    st = h.stats()
    assert st["cluster.backend.upstream_flow_control_paused_reading_total"] >= 1, st
    assert (st["cluster.backend.upstream_flow_control_resumed_reading_total"]
            >= st["cluster.backend.upstream_flow_control_paused_reading_total"] - 1)


def test_bandwidth_limit_client_leaves_mid_body(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[bwl(enable_mode="RESPONSE", limit_kbps=16)])
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    s.sendall(b"GET /gone?bytes=65536 HTTP/1.1\r\nHost: x\r\n\r\n")
    got = s.recv(4096)
    assert got.startswith(b"HTTP/1.1 200"), got[:100]
    assert h.wait_stat("bw.http_bandwidth_limit.response_pending", lambda v: v == 1) == 1
    s.close()
    assert h.wait_stat("bw.http_bandwidth_limit.response_pending", lambda v: v == 0) == 0
    time.sleep(0.3)                                 # the pacer's timer finds no stream
    assert hb.request(lp, "/after?bytes=100")[0] == 200


def test_bandwidth_limit_bad_configs(tmp_path):
    per_route = hb.route("/", "backend")
    per_route["typed_per_filter_config"] = {NAME: {"@type": BWL_TYPE, "stat_prefix": "r",
                                                   "enable_mode": "RESPONSE"}}
    cases = [
        ([hb.route("/", "backend")], bwl(limit_kbps=0), r"limit_kbps: limit_kbps must be at least 1"),
        ([hb.route("/", "backend")], bwl(limit_kbps=8, fill_interval="0.01s"),
         r"fill_interval: fill_interval must be from 20ms to 1s"),
        ([hb.route("/", "backend")], bwl(enable_response_trailers=True),
         r"enable_response_trailers: enable_response_trailers is not supported"),
        ([hb.route("/", "backend")], bwl(named_bucket_selector={"explicit_bucket": "x"}),
         r"named_bucket_selector: not supported"),
        ([hb.route("/", "backend")], bwl(enable_mode="SOMETIMES"), r"enable_mode"),
        ([per_route], bwl(), r"limit_kbps must be set in a per-route BandwidthLimit"),
    ]
    for routes, f, want in cases:
        cfg = {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", routes, [f]))],
            "clusters": [hb.http_cluster("backend", [1])]}}
        path = tmp_path / "bwl.json"
        path.write_text(json.dumps(cfg))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*bwl.json:\d+:\d+: .*" + want, r.stderr), (want, r.stderr)


def test_bandwidth_limit_with_a_slow_reader(herald, upstreams, port):
    """Both reasons to stop the upstream at once: the filter holds more than
    the buffer limit, and the client reads nothing for a second while its
    socket buffers fill. The upstream resumes only when neither holds, every
    byte arrives, and nothing stalls."""
    b = upstreams(HttpBackend, "b")
    lp = port()
    listener = hb.http_listener(lp, hb.hcm("ingress_http", [hb.route("/", "backend")],
                                           [bwl(enable_mode="RESPONSE", limit_kbps=8192)]), "proxy")
    listener["per_connection_buffer_limit_bytes"] = 32768
    cfg = {"static_resources": {"listeners": [listener], "clusters": [hb.http_cluster("backend", [b.port])]}}
    h = herald(cfg)
    n = 12 << 20                                    # 8 MiB at once (the bucket's second), 4 more at 8 MiB/s
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)   # no autotuning: the kernel holds less
    s.settimeout(20)
    s.connect(("127.0.0.1", lp))
    s.sendall(b"GET /big?bytes=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
    # not reading: the kernel's buffers fill, then herald's (waited for, not
    # slept on: a loaded machine or a sanitizer build may take longer)
    paused = "http.ingress_http.downstream_flow_control_paused_reading_total"
    assert h.wait_stat(paused, lambda v: v >= 1, timeout=15) >= 1
    time.sleep(0.2)
    r = hb.Reader(s)
    assert r.readline().startswith(b"HTTP/1.1 200")
    headers = hb.read_headers(r)
    body = r.read(n)
    s.close()
    assert len(body) == n and hb.sha256(body) == hb.hget(headers, "x-body-sha256"), len(body)
    st = h.stats()
    assert st["http.ingress_http.downstream_flow_control_paused_reading_total"] >= 1, st
    assert st["cluster.backend.upstream_flow_control_paused_reading_total"] >= 1, st
    assert (st["cluster.backend.upstream_flow_control_resumed_reading_total"]
            == st["cluster.backend.upstream_flow_control_paused_reading_total"]), st


def test_bandwidth_limit_large_request_body(herald, upstreams, port):
    """A request body far over the buffer limit, paced: the filter stops
    reading the client while it holds more than the limit (its own reason,
    apart from the router's), and every byte reaches the backend."""
    b = upstreams(HttpBackend, "b")
    lp = port()
    listener = hb.http_listener(lp, hb.hcm("ingress_http", [hb.route("/", "backend")],
                                           [bwl(enable_mode="REQUEST", limit_kbps=512)]), "proxy")
    listener["per_connection_buffer_limit_bytes"] = 32768
    cfg = {"static_resources": {"listeners": [listener], "clusters": [hb.http_cluster("backend", [b.port])]}}
    h = herald(cfg)
    body = hb.pattern_bytes(1536 << 10)             # 512 KiB at once, 1 MiB more at 512 KiB/s
    (status, _, _), took = timed(lp, "/upload", method="POST", body=body)
    assert status == 200 and took >= 1.6, (status, took)
    got = b.requests[0]
    assert got["body_len"] == len(body) and got["body_sha256"] == hb.sha256(body), got
    assert stats_of(h)["request_allowed_total_size"] == len(body)
