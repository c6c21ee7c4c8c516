"""Circuit breakers per priority (cluster circuit_breakers.thresholds[]):
max_requests / max_pending_requests answered 503 with response flag UO,
HIGH-priority routes under their own thresholds, max_retries, TCP
max_connections, the open/remaining gauges. Every wait is bounded."""

import threading
import time

import conftest
import helpers
import http_backends as hb
from http_backends import HttpBackend

FMT = "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n"


def concurrent(lp, paths, timeout=10):
    """Starts one request per path at (nearly) the same time; [(path, status, headers)]."""
    results = []
    lock = threading.Lock()

    def one(p):
        try:
            st, hd, _ = hb.request(lp, p, timeout=timeout)
        except OSError as e:
            st, hd = repr(e), {}
        with lock:
            results.append((p, st, hd))

    threads = [threading.Thread(target=one, args=(p,)) for p in paths]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join(timeout + 5)
    return results



def test_max_requests_overflow_503_uo(herald, upstreams, port, tmp_path):
    b = upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    cb = {"thresholds": [{"priority": "DEFAULT", "max_requests": 1, "max_pending_requests": 1,
                          "track_remaining": True}]}
    h, lp = hb.start_proxy(herald, port, [b.port], cluster_extra={"circuit_breakers": cb},
                           access_log=[hb.file_access_log(log, FMT)])
    st = h.stats()
    pre = "cluster.backend.circuit_breakers.default."
    assert st[pre + "rq_open"] == 0 and st[pre + "rq_pending_open"] == 0 and st[pre + "cx_open"] == 0
    assert st[pre + "rq_retry_open"] == 0 and st[pre + "cx_pool_open"] == 0
    assert st[pre + "remaining_rq"] == 1 and st[pre + "remaining_pending"] == 1
    assert st[pre + "remaining_retries"] == 3 and st[pre + "remaining_cx"] == 1024
    assert "cluster.backend.circuit_breakers.high.rq_open" in st

    # sample the gauges while a slow request holds the only slot
    t = threading.Thread(target=hb.request, args=(lp, "/hold?delay_ms=1500"), kwargs={"timeout": 10})
    t.start()
    assert h.wait_stat(pre + "rq_open", lambda v: v == 1, timeout=3) == 1
    assert h.stat(pre + "remaining_rq") == 0
    results = concurrent(lp, ["/cb%d?delay_ms=300" % i for i in range(5)])
    t.join(10)
    statuses = sorted(r[1] for r in results)
    assert 503 in statuses, statuses
    overflowed = [r for r in results if r[1] == 503]
    assert all(r[2].get("x-envoy-overloaded") == "true" for r in overflowed)
    n = len(overflowed)
    assert h.wait_stat("cluster.backend.upstream_rq_pending_overflow", lambda v: v >= n) == n
    lines = helpers.wait_lines(log, 6)
    uo = [line for line in lines if line.split()[1:] == ["503", "UO"]]
    assert len(uo) == n, lines
    # all released
    assert h.wait_stat(pre + "rq_open", lambda v: v == 0, timeout=3) == 0
    st = h.stats()
    assert st[pre + "remaining_rq"] == 1 and st[pre + "remaining_pending"] == 1 and st[pre + "rq_pending_open"] == 0
    assert hb.request(lp, "/after")[0] == 200


def test_high_priority_route_uses_high_thresholds(herald, upstreams, port, tmp_path):
    b = upstreams(HttpBackend, "b")
    cb = {"thresholds": [{"priority": "DEFAULT", "max_requests": 1, "max_pending_requests": 0},
                         {"priority": "HIGH", "max_requests": 100, "max_pending_requests": 100}]}
    routes = [hb.route("/hi", "backend", priority="HIGH"), hb.route("/", "backend")]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes, cluster_extra={"circuit_breakers": cb})
    assert h.stat("cluster.backend.circuit_breakers.default.rq_pending_open") == 1  # max 0: always open
    hi = concurrent(lp, ["/hi%d?delay_ms=300" % i for i in range(5)])
    assert sorted(r[1] for r in hi) == [200] * 5, hi
    lo = concurrent(lp, ["/lo%d?delay_ms=300" % i for i in range(5)])
    los = sorted(r[1] for r in lo)
    assert 503 in los and 200 in los, los
    assert h.wait_stat("cluster.backend.upstream_rq_pending_overflow", lambda v: v >= los.count(503)) \
        == los.count(503)


def test_max_retries_overflow(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    cb = {"thresholds": [{"priority": "DEFAULT", "max_retries": 0}, {"priority": "HIGH", "max_retries": 5}]}
    policy = {"retry_on": "5xx", "num_retries": 2,
              "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.05s"}}
    routes = [hb.route("/hi", "backend", priority="HIGH", retry_policy=policy),
              hb.route("/", "backend", retry_policy=policy)]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes, cluster_extra={"circuit_breakers": cb})
    # DEFAULT: no retry budget, the first 503 is the answer
    status, headers, body = hb.request(lp, "/r?fail=5&key=a")
    assert status == 503 and b.served() == 1, (status, b.served())
    assert h.wait_stat("cluster.backend.upstream_rq_retry_overflow", lambda v: v >= 1) == 1
    assert h.stat("cluster.backend.upstream_rq_retry") == 0
    # HIGH: retried as the policy says
    status, headers, body = hb.request(lp, "/hi?fail=1&key=b")
    assert status == 200 and b.served() == 3, (status, b.served())
    assert h.wait_stat("cluster.backend.upstream_rq_retry", lambda v: v >= 1) == 1
    assert h.stat("cluster.backend.upstream_rq_retry_overflow") == 1
    assert h.wait_stat("cluster.backend.circuit_breakers.high.rq_retry_open", lambda v: v == 0) == 0


def test_tcp_max_connections(herald, upstreams, port):
    echo = upstreams(helpers.EchoServer)
    lp = port()
    cl = helpers.cluster("svc", [("127.0.0.1", echo.port)], circuit_breakers={"thresholds": [
        {"priority": "DEFAULT", "max_connections": 1}]})
    h = herald(helpers.bootstrap([helpers.tcp_listener(lp, "svc")], [cl]))
    s1 = helpers.connect(lp)
    s1.sendall(b"one")
    s1.settimeout(3)
    assert s1.recv(16) == b"one"
    assert h.wait_stat("cluster.svc.circuit_breakers.default.cx_open", lambda v: v == 1, timeout=3) == 1
    s2 = helpers.connect(lp)
    assert helpers.closed_by_peer(s2, timeout=3)
    assert h.wait_stat("cluster.svc.upstream_cx_overflow", lambda v: v >= 1) == 1
    s1.close()
    s2.close()
    assert h.wait_stat("cluster.svc.circuit_breakers.default.cx_open", lambda v: v == 0, timeout=3) == 0
    s3 = helpers.connect(lp)
    s3.sendall(b"three")
    s3.settimeout(3)
    assert s3.recv(16) == b"three"
    s3.close()


def test_circuit_breaker_config_errors(tmp_path):
    lp = conftest.free_port()
    cases = []
    cfg = hb.front_proxy(lp, [1, 2])
    cfg["static_resources"]["clusters"][0]["circuit_breakers"] = {"thresholds": [{"priority": "MEDIUM"}]}
    cases.append((cfg, "MEDIUM"))
    cfg = hb.front_proxy(lp, [1, 2])
    vh = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]
    vh["routes"][0]["route"]["priority"] = "URGENT"
    cases.append((cfg, "URGENT"))
    for cfg, needle in cases:
        h = conftest.Herald(str(tmp_path), "v")
        path = h.write_config(cfg)
        r = conftest.run_herald(["--mode", "validate", "-c", path, "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1 and needle in r.stderr and "priority" in r.stderr, r.stderr
