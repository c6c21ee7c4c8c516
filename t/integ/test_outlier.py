"""Outlier detection (cluster outlier_detection) against the real binary:
consecutive 5xx, consecutive gateway failures, local-origin (connect
refused) ejection, return after base_ejection_time, max_ejection_percent,
success rate, stats and /clusters. Intervals are short (100-300 ms) and
every wait is bounded."""

import socket
import threading
import time

import pytest

import conftest
import helpers
import http_backends as hb


class StatusBackend:
    """A keep-alive HTTP/1.1 server answering every request with `status`
    (changeable at run time) and x-backend: name; counts requests."""

    def __init__(self, name, status=200):
        self.name = name
        self.status = status
        self.cycle = None           # a list of statuses to answer in turn, instead of status
        self.count = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(10)
        buf = b""
        try:
            while not self.stopping.is_set():
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                _, _, buf = buf.partition(b"\r\n\r\n")   # requests here carry no body
                with self.lock:
                    self.count += 1
                    st = self.cycle[self.count % len(self.cycle)] if self.cycle else self.status
                c.sendall(b"HTTP/1.1 %d X\r\nx-backend: %s\r\ncontent-length: 2\r\n\r\nok"
                          % (st, self.name.encode()))
        except OSError:
            pass
        finally:
            c.close()

    def served(self):
        with self.lock:
            return self.count

    def stop(self):
        self.stopping.set()
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(2)


def od_cluster_extra(**od):
    cfg = {"interval": "0.1s", "base_ejection_time": "1s", "max_ejection_percent": 100}
    cfg.update(od)
    return {"outlier_detection": cfg}


def backends_hit(lp, n, path="/x"):
    seen = {}
    for i in range(n):
        status, headers, body = hb.request(lp, "%s%d" % (path, i))
        b = headers.get("x-backend", "?")
        seen[b] = seen.get(b, 0) + 1
    return seen


def host_line_flags(h, cluster, port):
    status, body = h.admin_get("/clusters")
    assert status == 200
    for line in body.splitlines():
        if line.startswith("%s::127.0.0.1:%d::health_flags::" % (cluster, port)):
            return line.rsplit("::", 1)[1]
    return None


@pytest.mark.parametrize("workers", [1, 3])
def test_outlier_consecutive_5xx_ejects_and_returns(herald, upstreams, port, workers):
    good1, good2 = upstreams(StatusBackend, "good1"), upstreams(StatusBackend, "good2")
    bad = upstreams(StatusBackend, "bad", status=500)
    h, lp = hb.start_proxy(herald, port, [good1.port, bad.port, good2.port], concurrency=workers,
                           cluster_extra=od_cluster_extra(consecutive_5xx=3, base_ejection_time="1s"))
    # round robin: every third request goes to bad until it is ejected
    backends_hit(lp, 12)
    assert h.wait_stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx",
                       lambda v: v >= 1, timeout=3) == 1
    time.sleep(0.1)   # the new host set reaches the workers right after the counter
    served_at_ejection = bad.served()
    # the third 500 fires the detector; a request already on its way may still land
    assert 3 <= served_at_ejection <= 5, "ejected after consecutive_5xx (3) answers, got %d" % served_at_ejection
    st = h.stats()
    assert st["cluster.backend.outlier_detection.ejections_active"] == 1
    assert st["cluster.backend.outlier_detection.ejections_detected_consecutive_5xx"] == 1
    assert st["cluster.backend.outlier_detection.ejections_enforced_total"] == 1
    assert st["cluster.backend.outlier_detection.ejections_total"] == 1
    assert st["cluster.backend.membership_healthy"] == 2
    assert "failed_outlier_check" in (host_line_flags(h, "backend", bad.port) or "")
    # ejected: no traffic to bad, the others take it all
    seen = backends_hit(lp, 10, "/y")
    assert bad.served() == served_at_ejection
    assert seen.get("bad", 0) == 0 and seen.get("good1", 0) + seen.get("good2", 0) == 10, seen
    # back after base_ejection_time (1 s, checked every 100 ms)
    bad.status = 200
    assert h.wait_stat("cluster.backend.outlier_detection.ejections_active", lambda v: v == 0, timeout=4) == 0
    assert h.stat("cluster.backend.membership_healthy") == 3
    seen = backends_hit(lp, 9, "/z")
    assert seen.get("bad", 0) >= 2, seen
    assert "failed_outlier_check" not in (host_line_flags(h, "backend", bad.port) or "")


def test_outlier_gateway_failure_enforced(herald, upstreams, port):
    good = upstreams(StatusBackend, "good")
    gw = upstreams(StatusBackend, "gw", status=503)
    # consecutive_5xx high and not enforcing: only the gateway-failure detector may eject
    h, lp = hb.start_proxy(herald, port, [good.port, gw.port], cluster_extra=od_cluster_extra(
        consecutive_5xx=100, consecutive_gateway_failure=2, enforcing_consecutive_gateway_failure=100,
        base_ejection_time="30s"))
    backends_hit(lp, 8)
    assert h.wait_stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_gateway_failure",
                       lambda v: v >= 1, timeout=3) == 1
    time.sleep(0.1)
    # ejection happens on the main thread: on a busy machine one more round-robin
    # turn (two requests later) may still reach gw before the new host set does
    assert 2 <= gw.served() <= 4
    st = h.stats()
    assert st["cluster.backend.outlier_detection.ejections_detected_consecutive_gateway_failure"] == 1
    assert st.get("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx", 0) == 0
    seen = backends_hit(lp, 6, "/y")
    assert seen == {"good": 6}, seen


def test_outlier_gateway_failure_default_not_enforced(herald, upstreams, port):
    """enforcing_consecutive_gateway_failure defaults to 0: detected, counted, not ejected."""
    good = upstreams(StatusBackend, "good")
    gw = upstreams(StatusBackend, "gw", status=502)
    h, lp = hb.start_proxy(herald, port, [good.port, gw.port], cluster_extra=od_cluster_extra(
        consecutive_5xx=100, consecutive_gateway_failure=2))
    backends_hit(lp, 8)
    assert h.wait_stat("cluster.backend.outlier_detection.ejections_detected_consecutive_gateway_failure",
                       lambda v: v >= 1, timeout=3) >= 1
    st = h.stats()
    assert st.get("cluster.backend.outlier_detection.ejections_enforced_total", 0) == 0
    assert st["cluster.backend.outlier_detection.ejections_active"] == 0
    assert gw.served() == 4, "not ejected: it keeps its share"


def test_outlier_local_origin_connect_refused(herald, upstreams, port):
    """HTTP: a refused connect is a local-origin failure; without
    split_external_local_origin_errors it counts as a 503 (consecutive_5xx)."""
    good = upstreams(StatusBackend, "good")
    dead = port()
    h, lp = hb.start_proxy(herald, port, [good.port, dead], cluster_extra=od_cluster_extra(consecutive_5xx=2))
    statuses = [hb.request(lp, "/c%d" % i)[0] for i in range(6)]
    assert statuses.count(503) >= 1, statuses
    assert h.wait_stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx",
                       lambda v: v >= 1, timeout=3) == 1
    time.sleep(0.1)
    statuses = [hb.request(lp, "/d%d" % i)[0] for i in range(6)]
    assert statuses == [200] * 6, statuses


def test_outlier_local_origin_split_tcp_proxy(herald, upstreams, port):
    """tcp_proxy, split_external_local_origin_errors: refused connects eject
    through consecutive_local_origin_failure."""
    echo = upstreams(helpers.EchoServer, tag="e")
    dead = port()
    lp = port()
    cl = helpers.cluster("svc", [("127.0.0.1", echo.port), ("127.0.0.1", dead)], outlier_detection={
        "interval": "0.1s", "base_ejection_time": "30s", "max_ejection_percent": 100,
        "split_external_local_origin_errors": True, "consecutive_local_origin_failure": 2})
    h = herald(helpers.bootstrap([helpers.tcp_listener(lp, "svc")], [cl]))
    for _ in range(6):
        try:
            s = helpers.connect(lp, timeout=2)
            s.sendall(b"ping")
            s.settimeout(1)
            try:
                s.recv(16)
            except OSError:
                pass
            s.close()
        except OSError:
            pass
    assert h.wait_stat("cluster.svc.outlier_detection.ejections_enforced_consecutive_local_origin_failure",
                       lambda v: v >= 1, timeout=3) == 1
    assert h.stat("cluster.svc.outlier_detection.ejections_active") == 1
    time.sleep(0.1)
    for _ in range(4):
        s = helpers.connect(lp, timeout=2)
        s.sendall(b"hello")
        s.settimeout(2)
        assert s.recv(16) != b""
        s.close()


def test_outlier_max_ejection_percent(herald, upstreams, port):
    goods = [upstreams(StatusBackend, "g%d" % i) for i in range(2)]
    bads = [upstreams(StatusBackend, "b%d" % i, status=500) for i in range(2)]
    # 4 hosts, 25 %: one ejection fits, the second overflows
    h, lp = hb.start_proxy(herald, port, [b.port for b in goods + bads], cluster_extra=od_cluster_extra(
        consecutive_5xx=2, max_ejection_percent=25, base_ejection_time="30s"))
    backends_hit(lp, 16)
    assert h.wait_stat("cluster.backend.outlier_detection.ejections_overflow", lambda v: v >= 1, timeout=3) >= 1
    st = h.stats()
    assert st["cluster.backend.outlier_detection.ejections_active"] == 1
    assert st["cluster.backend.outlier_detection.ejections_enforced_total"] == 1


def test_outlier_success_rate(herald, upstreams, port):
    """Success-rate ejection on the interval: 5 hosts, one failing half its
    requests (never consecutive enough for consecutive_5xx)."""
    backends = [upstreams(StatusBackend, "s%d" % i) for i in range(5)]
    h, lp = hb.start_proxy(herald, port, [b.port for b in backends], cluster_extra=od_cluster_extra(
        interval="0.3s", consecutive_5xx=1000, success_rate_request_volume=5, success_rate_minimum_hosts=5,
        base_ejection_time="30s"))
    flaky = backends[2]
    flaky.cycle = [500, 200]      # 50 % success, never two 5xx in a row
    deadline = time.monotonic() + 6
    ejected = 0
    while time.monotonic() < deadline and not ejected:
        for i in range(25):
            hb.request(lp, "/sr%d" % i)
        ejected = h.stat("cluster.backend.outlier_detection.ejections_enforced_success_rate")
    assert ejected == 1, h.stats()
    assert h.stat("cluster.backend.outlier_detection.ejections_detected_success_rate") == 1
    status, body = h.admin_get("/clusters")
    assert "backend::127.0.0.1:%d::health_flags::/failed_outlier_check" % flaky.port in body, body


def test_outlier_config_errors(tmp_path):
    import os
    lp = conftest.free_port()
    for od, needle in (({"max_ejection_percent": 101}, "out of range"),
                       ({"consecutive_5xxx": 3}, "consecutive_5xxx"),
                       ({"interval": "0s"}, "interval must be more than 0s"),
                       ({"monitors": []}, "monitors")):
        cfg = hb.front_proxy(lp, [1, 2])
        cfg["static_resources"]["clusters"][0]["outlier_detection"] = od
        h = conftest.Herald(str(tmp_path), "v")
        path = h.write_config(cfg)
        r = conftest.run_herald(["--mode", "validate", "-c", path, "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1, (od, r.stderr)
        assert needle in r.stderr and "outlier_detection" in r.stderr, (od, r.stderr)
        assert os.path.exists(path)


def test_outlier_http2_upstream_resets(herald, upstreams, port):
    """HTTP/2 upstream: stream resets are local-origin failures (503s for consecutive_5xx)."""
    import test_http2_upstream as h2t
    b = upstreams(h2t.H2Backend, "h2")
    extra = h2t.h2_options("explicit")
    extra.update(od_cluster_extra(consecutive_5xx=2, base_ejection_time="30s"))
    h, lp = hb.start_proxy(herald, port, [b.port], cluster_extra=extra)
    assert hb.request(lp, "/ok")[0] == 200
    for i in range(2):
        assert hb.request(lp, "/r%d?rst=1" % i)[0] in (502, 503)
    assert h.wait_stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx",
                       lambda v: v >= 1, timeout=3) == 1
    assert "failed_outlier_check" in (host_line_flags(h, "backend", b.port) or "")
