"""Reload without a restart (issue 6 item 6): SIGHUP validates the config
and, when it is valid, a new herald takes the listening sockets over while
the old one drains. Every process a test starts is killed by PID at the end
(reload_util.Reloads.cleanup); the original one by the herald fixture."""

import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from helpers import (EchoServer, bootstrap, cluster, closed_by_peer, connect, connect_refused, recv_line, tcp_listener,
                     wait_for)
from http_backends import HttpBackend, hcm, http_cluster, http_listener, request, route
from reload_util import Reloads, set_subreaper


@pytest.fixture(autouse=True, scope="module")
def subreaper():
    """Reloaded heralds are re-parented to pytest when the old one exits."""
    assert set_subreaper(True)
    yield
    set_subreaper(False)


@pytest.fixture
def reloads():
    made = []

    def make(h):
        r = Reloads(h)
        made.append(r)
        return r

    yield make
    for r in made:
        r.cleanup()


def http_config(lp, routes, clusters):
    return {"static_resources": {
        "listeners": [http_listener(lp, hcm("ingress", routes), "front")],
        "clusters": clusters}}


def test_reload_under_load_loses_nothing(herald, upstreams, port, reloads, report):
    one = upstreams(HttpBackend, "one")
    two = upstreams(HttpBackend, "two")
    lp = port()
    old = http_config(lp, [route("/", "one")], [http_cluster("one", [one.port])])
    new = http_config(lp, [route("/new", "two"), route("/", "one")],
                      [http_cluster("one", [one.port]), http_cluster("two", [two.port])])
    h = herald(old, concurrency=2, drain_time=2, args=["--parent-shutdown-time-s", "10"])
    r = reloads(h)
    assert request(lp, "/new")[1]["x-backend"] == "one"

    wrk = subprocess.Popen(["wrk", "-t2", "-c8", "-d4s", "http://127.0.0.1:%d/" % lp],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.5)
        h.write_config(new)
        newpid = r.sighup()
        assert newpid, "reload failed:\n" + h.log_tail()
        out, _ = wrk.communicate(timeout=20)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait(5)
    assert wrk.returncode == 0, out
    m = re.search(r"(\d+) requests in", out)
    assert m and int(m.group(1)) > 100, out
    assert "Socket errors" not in out, "wrk saw socket errors across the reload:\n" + out
    assert "Non-2xx" not in out, "wrk saw failed responses across the reload:\n" + out
    report("reload under wrk load: %s requests, no errors" % m.group(1))

    status, headers, _ = request(lp, "/new")
    assert status == 200 and headers["x-backend"] == "two"
    assert request(lp, "/other")[1]["x-backend"] == "one"
    # /config_dump (on the new process: the old one closed its admin socket) shows the new route
    status, body = h.admin_get("/config_dump")
    assert status == 200 and '"/new"' in body.replace(" ", "")
    # the old process drains (wrk is gone) and exits 0; SIGTERM drains the new one, exit 0
    assert r.wait_old_exit(10) == 0
    assert r.stop_new() == 0


def test_invalid_config_is_rejected(herald, upstreams, port, reloads):
    one = upstreams(HttpBackend, "one")
    lp = port()
    good = http_config(lp, [route("/", "one")], [http_cluster("one", [one.port])])
    h = herald(good)
    r = reloads(h)
    path = h.config_path
    text = open(path).read()

    # a YAML syntax error
    with open(path, "w") as f:
        f.write(text + "\nstatic_resources: [\n  - : :\n")
    assert r.sighup() is None
    log = h.log()
    assert re.search(re.escape(path) + r":\d+:\d+: ", log), h.log_tail()
    assert "still serving the old configuration" in log
    assert h.alive() and r.pid == h.pid
    assert request(lp, "/")[0] == 200

    # a semantic error; and a second SIGHUP while the first is in progress is refused
    with open(path, "w") as f:
        f.write(text.replace("ROUND_ROBIN", "ROUND_ROBBIN"))
    refused = "SIGHUP ignored: a reload is already in progress"
    for attempt in range(3):  # the second must land while the validation (~20 ms) runs
        before = r.started()
        os.kill(h.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while r.started() == before and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(h.pid, signal.SIGHUP)
        r.settle(before)
        if refused in h.log():
            break
    log = h.log()
    assert re.search(re.escape(path) + r":\d+:\d+: .*lb_policy: unknown value 'ROUND_ROBBIN'", log), h.log_tail()
    assert refused in log, h.log_tail()
    assert h.alive()
    assert request(lp, "/")[0] == 200
    status, body = h.admin_get("/config_dump")
    assert "ROUND_ROBBIN" not in body

    # valid, but the new process cannot bind a new listener: it fails, the old one serves on
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        bad = http_config(lp, [route("/", "one")], [http_cluster("one", [one.port])])
        bad["static_resources"]["listeners"].append(
            http_listener(busy.getsockname()[1], hcm("busy", [route("/", "one")]), "busy"))
        h.write_config(bad)
        assert r.sighup() is None
    finally:
        busy.close()
    assert re.search(r"reload failed: the new process \d+ stopped before it was ready \(exit status 1\)", h.log())
    assert h.alive() and request(lp, "/")[0] == 200

    # a valid config afterwards reloads
    with open(path, "w") as f:
        f.write(text)
    assert r.sighup()
    assert r.wait_old_exit(10) == 0
    assert request(lp, "/")[0] == 200
    assert r.stop_new() == 0


def test_listeners_and_clusters_change(herald, upstreams, port, reloads):
    e1 = upstreams(EchoServer, tag="one")
    e2 = upstreams(EchoServer, tag="two")
    p1, p2, p3 = port(), port(), port()
    old = bootstrap([tcp_listener(p1, "c"), tcp_listener(p2, "c")], [cluster("c", [e1.addr])])
    new = bootstrap([tcp_listener(p1, "c"), tcp_listener(p3, "c")], [cluster("c", [e2.addr])])
    h = herald(old, concurrency=2, drain_time=1, args=["--parent-shutdown-time-s", "3"])
    r = reloads(h)

    long_lived = connect(p1)
    assert recv_line(long_lived) == b"one"
    h.write_config(new)
    t0 = time.monotonic()
    assert r.sighup()

    # the new config: the cluster change and the added listener
    s = connect(p1)
    assert recv_line(s) == b"two"
    s.close()
    s = connect(p3)
    assert recv_line(s) == b"two"
    s.close()
    # the old process's tcp_proxy connection keeps flowing while it drains
    for i in range(6):
        long_lived.sendall(b"ping %d\n" % i)
        assert recv_line(long_lived) == b"ping %d" % i
        time.sleep(0.2)
    assert h.alive(), "the old process left before --parent-shutdown-time-s with a connection open"
    # ... until --parent-shutdown-time-s: then it is closed and the old process exits 0
    assert closed_by_peer(long_lived, timeout=5)
    long_lived.close()
    assert r.wait_old_exit(5) == 0
    assert time.monotonic() - t0 >= 2.5
    # the removed listener's port refuses connections
    with pytest.raises(ConnectionRefusedError):
        connect(p2)
    assert r.stop_new() == 0


def test_a_connection_still_in_listener_filters_survives_the_handover(herald, upstreams, port, reloads):
    """A client the old process accepted but whose PROXY header has not come
    yet (the proxy_protocol listener filter waits for it) is not a
    connection yet; the drain must still wait for it: the header sent after
    the new process took over gets the old process's tcp_proxy and the
    echo server's greeting, not a close."""
    echo = upstreams(EchoServer, tag="echo")
    lp = port()
    listener = tcp_listener(lp, "c")
    listener["listener_filters"] = [{"name": "envoy.filters.listener.proxy_protocol", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"}}]
    h = herald(bootstrap([listener], [cluster("c", [echo.addr])]), concurrency=2, drain_time=1,
               args=["--parent-shutdown-time-s", "5"])
    r = reloads(h)
    early = connect(lp)
    assert h.wait_stat("listener.127.0.0.1_%d.downstream_pre_cx_active" % lp, lambda v: v == 1) == 1
    oldpid = h.pid
    assert r.sighup() != oldpid
    time.sleep(0.3)   # the old process has handed over and stopped accepting
    early.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 %d\r\n" % lp)
    assert recv_line(early) == b"echo", "the old process closed a connection it had accepted"
    early.sendall(b"still there\n")
    assert recv_line(early) == b"still there"
    early.close()
    assert r.wait_old_exit(10) == 0
    assert r.stop_new() == 0


def test_reload_after_drain_listeners_binds_afresh(herald, upstreams, port, reloads):
    """Listeners closed by POST /drain_listeners are not handed over at the
    next reload (their descriptors are gone): the new process binds the
    address again and serves it."""
    echo = upstreams(EchoServer, tag="echo")
    lp = port()
    h = herald(bootstrap([tcp_listener(lp, "c")], [cluster("c", [echo.addr])]), concurrency=2, drain_time=1,
               args=["--parent-shutdown-time-s", "2"])
    r = reloads(h)
    assert h.admin_post("/drain_listeners") == (200, "OK\n")
    assert wait_for(lambda: connect_refused(lp), 3), "the listener still accepts after /drain_listeners"
    oldpid = h.pid
    assert r.sighup() != oldpid, h.log_tail()
    s = connect(lp)
    assert recv_line(s) == b"echo"
    s.close()
    assert h.log().count("(2 sockets, 0 inherited)") == 2, h.log_tail()   # the old one at its start, the new one
    # the closed descriptors' numbers were not handed over (nor whatever reuses them)
    assert "not a listening socket" not in h.log(), h.log_tail()
    assert r.wait_old_exit(10) == 0
    assert r.stop_new() == 0


def test_counters_carry_over_a_reload(herald, upstreams, port, reloads):
    """As across Envoy's hot restart, counters go on from the old process's
    values: it sends them when the new one is ready, and what it counted
    while draining when it exits. Gauges are the new process's own."""
    one = upstreams(HttpBackend, "one")
    lp = port()
    cfg = http_config(lp, [route("/", "one")], [http_cluster("one", [one.port])])
    h = herald(cfg, concurrency=2, drain_time=1, args=["--parent-shutdown-time-s", "5"])
    r = reloads(h)
    for _ in range(25):
        assert request(lp, "/")[0] == 200
    before = h.stats()
    rq, up = before["http.ingress.downstream_rq_total"], before["cluster.one.upstream_rq_total"]
    assert rq == 25 and up == 25 and before["http.ingress.downstream_rq_2xx"] == 25

    # a slow request the old process answers while it drains: counted there after the hand-over
    slow = {}
    t = threading.Thread(target=lambda: slow.update(status=request(lp, "/?delay_ms=1500", timeout=10)[0]))
    t.start()
    assert h.wait_stat("http.ingress.downstream_rq_active", lambda v: v == 1) == 1
    oldpid = h.pid
    assert r.sighup() != oldpid
    assert h.wait_stat("http.ingress.downstream_rq_total", lambda v: v >= rq + 1) == rq + 1, h.log_tail()
    assert h.stat("cluster.one.upstream_rq_total") == up + 1
    assert h.stat("http.ingress.downstream_rq_active") == 0   # gauges: the new process's own
    for _ in range(5):
        assert request(lp, "/")[0] == 200
    t.join(10)
    assert slow.get("status") == 200
    assert r.wait_old_exit(10) == 0
    # the old process's 2xx for the slow request came with its exit
    assert h.wait_stat("http.ingress.downstream_rq_2xx", lambda v: v == 31) == 31, h.log_tail()
    assert h.stat("http.ingress.downstream_rq_total") == 31
    assert re.search(r"took \d+ counters over from the old process\n", h.log())
    assert re.search(r"took \d+ counters? over from the old process \(what it counted while draining\)", h.log())
    assert r.stop_new() == 0
