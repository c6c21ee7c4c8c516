"""The admin interface as an operator reads it, and clean shutdown (signals,
/quitquitquit) with traffic in flight."""

import json
import socket
import re
import signal
import time

import pytest

from conftest import PLUGIN_DIR, run_herald

from helpers import (EchoServer, bootstrap, closed_by_peer, cluster, connect, connect_refused, recv_line, rss_kb,
                     tcp_listener, wait_for)

PROM_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? '
                         r'(-?[0-9.]+([eE][-+]?[0-9]+)?|NaN|[-+]Inf)$')


@pytest.fixture
def proxy(herald, upstreams, port, tmp_path):
    """herald with a listener in front of a ROUND_ROBIN cluster of 4 backends,
    after one proxied connection."""
    backends = [upstreams(EchoServer, tag="backend-%d" % i) for i in range(4)]
    lport = port()
    addr_file = tmp_path / "admin.addr"
    h = herald(bootstrap([tcp_listener(lport, "rr", stat_prefix="front", name="front")],
                         [cluster("rr", [b.addr for b in backends])]),
               args=["--admin-address-path", str(addr_file)])
    s = connect(lport)
    assert recv_line(s).startswith(b"backend-")
    s.close()
    h.wait_stat("cluster.rr.upstream_cx_total", lambda v: v >= 1)
    h.lport, h.backends, h.addr_file = lport, backends, addr_file
    return h


def test_admin_address_path(proxy):
    assert proxy.addr_file.read_text().strip() == "127.0.0.1:%d" % proxy.admin_port


def test_ready(proxy):
    status, body = proxy.admin_get("/ready")
    assert (status, body.strip()) == (200, "LIVE")


def test_stats_text(proxy):
    status, body = proxy.admin_get("/stats")
    assert status == 200
    lines = [line for line in body.splitlines() if line.strip()]
    bad = [line for line in lines if not re.match(r"^\S+: \S", line)]
    assert not bad, "lines not 'name: value': %r" % bad[:5]
    stats = proxy.stats()
    assert stats["cluster.rr.upstream_cx_total"] == 1
    assert stats["tcp.front.downstream_cx_total"] == 1
    listener = [v for k, v in stats.items()
                if k.startswith("listener.") and k.endswith("_%d.downstream_cx_total" % proxy.lport)]
    assert listener == [1], "listener.<addr>.downstream_cx_total for port %d: %r" % (proxy.lport, listener)


def test_stats_json(proxy):
    status, body = proxy.admin_get("/stats?format=json")
    assert status == 200
    doc = json.loads(body)
    values = {s["name"]: s["value"] for s in doc["stats"] if "name" in s and "value" in s}
    assert values["cluster.rr.upstream_cx_total"] == 1
    assert values["tcp.front.downstream_cx_total"] == 1


def test_stats_prometheus(proxy):
    status, body = proxy.admin_get("/stats/prometheus")
    assert status == 200
    samples = []
    for line in body.splitlines():
        if not line or line.startswith("#"):
            assert not line or re.match(r"^# (TYPE|HELP) [a-zA-Z_:][a-zA-Z0-9_:]* ", line), line
            continue
        assert PROM_SAMPLE.match(line), "not a Prometheus sample: %r" % line
        samples.append(line)
    assert samples
    assert any(line.startswith("envoy_") for line in samples)
    cx = [line for line in samples if "upstream_cx_total" in line and "rr" in line]
    assert cx and cx[0].endswith(" 1"), "cluster rr upstream_cx_total missing or wrong: %r" % cx
    status2, body2 = proxy.admin_get("/stats?format=prometheus")
    assert status2 == 200 and body2.splitlines()[:3] == body.splitlines()[:3]


def test_clusters_lists_hosts(proxy):
    status, body = proxy.admin_get("/clusters")
    assert status == 200
    for b in proxy.backends:
        assert "rr::127.0.0.1:%d::" % b.port in body, "host %d missing from /clusters:\n%s" % (b.port, body[:2000])


def test_server_info(proxy):
    status, body = proxy.admin_get("/server_info")
    assert status == 200
    info = json.loads(body)
    assert info["state"] == "LIVE"
    assert "version" in info


def test_memory(herald, upstreams, port):
    """/memory: Envoy's six figures, as decimal strings; herald's per-thread
    lists of freed blocks show as total_thread_cache once HTTP traffic has
    gone through (nothing is kept in sanitizer builds)."""
    import http_backends as hb
    b = upstreams(hb.HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port])
    for i in range(50):
        assert hb.request(lp, "/m%d" % i)[0] == 200
    status, body = h.admin_get("/memory")
    assert status == 200, body
    mem = json.loads(body)
    keys = ("allocated", "heap_size", "pageheap_unmapped", "pageheap_free", "total_thread_cache",
            "total_physical_bytes")
    assert sorted(mem) == sorted(keys), mem
    assert all(isinstance(mem[k], str) and mem[k].isdigit() for k in keys), mem
    v = {k: int(mem[k]) for k in keys}
    rss = rss_kb(h.pid) * 1024
    assert abs(v["total_physical_bytes"] - rss) < max(rss // 4, 1 << 20), (v, rss)
    with open("/proc/%d/maps" % h.pid) as f:
        sanitized = "libasan" in f.read()
    if sanitized:
        # ASan's allocator replaces glibc's: mallinfo2 has nothing to say, and nothing is kept
        assert v["allocated"] == v["heap_size"] == v["total_thread_cache"] == 0, v
    else:
        assert 0 < v["allocated"] <= v["heap_size"], v
        assert 0 < v["total_thread_cache"] <= 3 << 20, "a worker keeps up to 3 MiB: %r" % v
    assert "/memory" in h.admin_get("/help")[1]


def test_listeners(proxy):
    status, body = proxy.admin_get("/listeners")
    assert status == 200
    assert "front" in body and "127.0.0.1:%d" % proxy.lport in body, body


def test_help_and_config_dump(proxy):
    status, body = proxy.admin_get("/help")
    assert status == 200
    for ep in ("/stats", "/clusters", "/ready", "/quitquitquit"):
        assert ep in body
    status, body = proxy.admin_get("/config_dump")
    assert status == 200
    json.loads(body)


def test_quitquitquit(proxy):
    status, _ = proxy.admin_get("/quitquitquit")
    assert status == 400, "GET /quitquitquit must not shut herald down"
    assert proxy.alive()
    status, _ = proxy.admin_post("/quitquitquit")
    assert status == 200
    assert proxy.wait_exit(10) == 0, "herald did not exit 0 after POST /quitquitquit"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_active_connection_exits_within_drain_time(herald, upstreams, port, sig):
    backend = upstreams(EchoServer, tag="b")
    lport = port()
    drain = 2
    h = herald(bootstrap([tcp_listener(lport, "c")], [cluster("c", [backend.addr])]), drain_time=drain)
    s = connect(lport)
    assert recv_line(s) == b"b"
    s.sendall(b"in flight\n")
    assert recv_line(s) == b"in flight"
    assert wait_for(lambda: h.stat("cluster.c.upstream_cx_active") == 1, 5)
    t0 = time.monotonic()
    h.signal(sig)
    rc = h.wait_exit(drain + 5)
    elapsed = time.monotonic() - t0
    assert rc is not None, "herald still running %d s after %s with drain time %d s" % (drain + 5, sig.name, drain)
    assert rc == 0
    assert elapsed < drain + 3, "exit took %.1f s with drain time %d s" % (elapsed, drain)
    assert closed_by_peer(s, 2), "the proxied connection was not closed"
    s.close()


def test_admin_allow_paths(herald):
    """admin.allow_paths: only the paths a matcher accepts are served (here
    /ready and the /stats family); the rest, /quitquitquit included, get 403."""
    h = herald("admin:\n"
               "  address: {socket_address: {address: 127.0.0.1, port_value: $admin_port}}\n"
               "  allow_paths: [{exact: /ready}, {prefix: /stats}]\n")
    assert h.admin_get("/ready")[0] == 200
    assert h.admin_get("/stats?filter=server")[0] == 200
    assert h.admin_get("/stats/prometheus")[0] == 200
    status, body = h.admin_get("/config_dump")
    assert status == 403 and "allow_paths" in body, (status, body)
    assert h.admin_post("/quitquitquit")[0] == 403
    assert h.admin_get("/ready")[0] == 200                      # still running
    assert h.stat("http.admin.downstream_rq_4xx") >= 2


# ------------------------------------------------------------------ logs


def loggers(body):
    """/logging's "active loggers:" list as {logger: level}."""
    lines = body.splitlines()
    assert lines[0] == "active loggers:", body
    return dict(line.strip().split(": ") for line in lines[1:])


def test_logging_changes_the_level_at_run_time(herald):
    """POST /logging lists the loggers and their levels; ?level= changes
    every one for every thread at once (here seen on /reopen_logs' info
    line); bad requests say what is wrong; GET is refused like every
    mutating endpoint."""
    h = herald({}, log_level="info")
    status, body = h.admin_post("/logging")
    assert status == 200, body
    levels = loggers(body)
    # the core's components and the plugins' (by their names' last part)
    for name in ("admin", "conn", "http", "http2", "main", "upstream", "router", "tcp_proxy", "mysql_proxy"):
        assert levels.get(name) == "info", (name, body)
    assert set(loggers(h.admin_post("/logging?level=error")[1]).values()) == {"error"}
    assert "log level info -> error (POST /logging)" in h.log()
    assert h.admin_post("/reopen_logs")[0] == 200
    time.sleep(0.2)
    assert "reopening log files" not in h.log(), "an info line was logged at level error"
    assert set(loggers(h.admin_post("/logging?level=warn")[1]).values()) == {"warning"}
    assert h.admin_post("/logging?level=debug")[0] == 200
    assert h.admin_post("/reopen_logs")[0] == 200
    assert wait_for(lambda: "log files reopened (POST /reopen_logs)" in h.log(), 3), h.log_tail()
    status, body = h.admin_post("/logging?level=loud")
    assert status == 400 and "unknown log level 'loud'" in body, body
    assert h.admin_get("/logging?level=trace")[0] == 400
    assert set(loggers(h.admin_post("/logging")[1]).values()) == {"debug"}


def test_logging_per_component(herald):
    """Envoy's /logging?<logger>=<level> and ?paths=<logger>:<level>,...
    change one component's level (Envoy's logger names are taken for
    herald's: "connection" is "conn"); the others keep theirs, and a line
    shows by its component's level. A bad name or level changes nothing."""
    h = herald({}, log_level="error")
    status, body = h.admin_post("/logging?main=info")
    assert status == 200, body
    levels = loggers(body)
    assert levels["main"] == "info" and levels["admin"] == "error" and levels["upstream"] == "error", body
    assert "[main] log level error -> info (POST /logging)" in h.log(), h.log_tail()
    assert h.admin_post("/reopen_logs")[0] == 200
    assert wait_for(lambda: "log files reopened (POST /reopen_logs)" in h.log(), 3), h.log_tail()

    levels = loggers(h.admin_post("/logging?connection=debug")[1])
    assert levels["conn"] == "debug" and "connection" not in levels, levels
    status, body = h.admin_post("/logging?paths=main:error,upstream:trace,tcp_proxy:warning")
    assert status == 200, body
    levels = loggers(body)
    assert (levels["main"], levels["upstream"], levels["tcp_proxy"], levels["conn"]) == \
        ("error", "trace", "warning", "debug"), body
    before = h.log().count("log files reopened")
    assert h.admin_post("/reopen_logs")[0] == 200
    time.sleep(0.2)
    assert h.log().count("log files reopened") == before, "main logged at info while at error"

    # all or nothing: nothing changes when one part is bad
    for query, says in (("nosuch=debug", "unknown logger 'nosuch'"),
                        ("paths=main:info,nosuch:debug", "unknown logger 'nosuch'"),
                        ("paths=main", "'main' has no level"),
                        ("main=loud", "unknown log level 'loud' for 'main'"),
                        ("level=info&main=debug", "give it alone")):
        status, body = h.admin_post("/logging?" + query)
        assert status == 400 and says in body, (query, body)
    levels = loggers(h.admin_post("/logging")[1])
    assert (levels["main"], levels["upstream"], levels["admin"]) == ("error", "trace", "error"), levels


def test_component_log_level_on_the_command_line(herald, tmp_path):
    """Envoy's --component-log-level upstream:debug,connection:trace sets
    those components' levels over -l's; an unknown component or level stops
    startup with a message naming it."""
    h = herald({}, log_level="warning", args=["--component-log-level", "main:info,connection:trace,router:debug"])
    levels = loggers(h.admin_post("/logging")[1])
    assert (levels["main"], levels["conn"], levels["router"], levels["upstream"]) == \
        ("info", "trace", "debug", "warning"), levels
    for spec, says in (("nosuch:debug", "no component 'nosuch'"), ("main:loud", "'main' is not <component>:<level>"),
                       ("main", "'main' is not <component>:<level>")):
        r = run_herald(["--component-log-level", spec, "--mode", "validate", "--config-yaml", "{}",
                        "--plugin-dir", PLUGIN_DIR])
        assert r.returncode == 1 and says in r.stderr, (spec, r.stderr)


@pytest.mark.parametrize("how", ["SIGUSR1", "POST /reopen_logs"])
def test_log_files_reopened_for_rotation(herald, upstreams, port, tmp_path, how):
    """logrotate's way (rename, then signal): the log (--log-path) and the
    access log are written to new files of the same names afterwards, and
    the renamed files keep what came before."""
    from http_backends import file_access_log
    backend = upstreams(EchoServer, tag="b")
    lport = port()
    log, access = tmp_path / "herald.log", tmp_path / "access.log"
    h = herald(bootstrap([tcp_listener(lport, "c", access_log=[file_access_log(str(access), "conn %UPSTREAM_HOST%\n")])],
                         [cluster("c", [backend.addr])]), args=["--log-path", str(log)])

    def one_connection():
        s = connect(lport)
        assert recv_line(s) == b"b"
        s.close()

    one_connection()
    assert wait_for(lambda: access.exists() and access.read_text().count("conn ") == 1, 3)
    log.rename(tmp_path / "herald.log.1")
    access.rename(tmp_path / "access.log.1")
    if how == "SIGUSR1":
        h.signal(signal.SIGUSR1)
    else:
        assert h.admin_post("/reopen_logs") == (200, "OK\n")
    assert wait_for(lambda: log.exists() and "log files reopened" in log.read_text(), 3)
    one_connection()
    assert wait_for(lambda: access.exists() and access.read_text() == "conn 127.0.0.1:%d\n" % backend.port, 3), \
        access.read_text() if access.exists() else "no new access log"
    assert (tmp_path / "access.log.1").read_text().count("conn ") == 1
    old_log = (tmp_path / "herald.log.1").read_text()
    assert "reopening log files" in old_log and "log files reopened" not in old_log


# ------------------------------------------------------------------ drain_listeners


def test_drain_listeners_closes_listeners_and_keeps_connections(herald, upstreams, port):
    """POST /drain_listeners?inboundonly closes every listener but the
    OUTBOUND one: new connections are refused there at once, an open one
    goes on, herald stays LIVE; a plain /drain_listeners then closes the
    OUTBOUND one too. Bad requests say what is wrong."""
    backend = upstreams(EchoServer, tag="b")
    inbound, outbound = port(), port()
    out_listener = tcp_listener(outbound, "c", name="egress")
    out_listener["traffic_direction"] = "OUTBOUND"
    h = herald(bootstrap([tcp_listener(inbound, "c", name="ingress"), out_listener], [cluster("c", [backend.addr])]),
               concurrency=2)
    open_conn = connect(inbound)
    assert recv_line(open_conn) == b"b"
    assert h.admin_post("/drain_listeners?skip_exit")[0] == 400
    assert h.admin_post("/drain_listeners?gracefully")[0] == 400
    assert h.admin_get("/drain_listeners")[0] == 400
    assert h.admin_post("/drain_listeners?inboundonly") == (200, "OK\n")
    assert wait_for(lambda: connect_refused(inbound), 3), "the inbound listener still accepts"
    s = connect(outbound)
    assert recv_line(s) == b"b"
    s.close()
    open_conn.sendall(b"still here\n")
    assert recv_line(open_conn) == b"still here"
    assert h.admin_get("/ready") == (200, "LIVE\n")
    assert h.admin_post("/drain_listeners") == (200, "OK\n")
    assert wait_for(lambda: connect_refused(outbound), 3), "the outbound listener still accepts"
    open_conn.sendall(b"and now\n")
    assert recv_line(open_conn) == b"and now"
    open_conn.close()


@pytest.mark.parametrize("skip_exit", [False, True], ids=["then-closed", "skip_exit"])
def test_drain_listeners_graceful(herald, upstreams, port, skip_exit):
    """?graceful: /ready says DRAINING; a kept-alive connection's next
    response carries connection: close, and so does the first response on a
    connection made during the drain (the listener still accepts); after
    --drain-time-s the listener is closed, or with skip_exit left open."""
    import http_backends as hb
    backends = [upstreams(hb.HttpBackend, n) for n in ("app1", "app2", "app3", "app4")]
    fp = port()
    h = herald(hb.front_proxy(fp, [b.port for b in backends]), drain_time=2)
    kept = socket.create_connection(("127.0.0.1", fp), timeout=5)
    r = hb.Reader(kept)

    def get(sock, reader):
        sock.sendall(b"GET /app1/x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert reader.readline().startswith(b"HTTP/1.1 200")
        headers = hb.read_headers(reader)
        reader.read(int(hb.hget(headers, "content-length")))
        return hb.hget(headers, "connection")

    assert get(kept, r) is None
    t0 = time.monotonic()
    assert h.admin_post("/drain_listeners?graceful" + ("&skip_exit" if skip_exit else "")) == (200, "OK\n")
    assert h.admin_get("/ready") == (503, "DRAINING\n")
    assert get(kept, r) == "close"
    assert kept.recv(1) == b""
    kept.close()
    fresh = socket.create_connection(("127.0.0.1", fp), timeout=5)
    assert get(fresh, hb.Reader(fresh)) == "close"
    fresh.close()
    if skip_exit:
        time.sleep(max(0, 2.5 - (time.monotonic() - t0)))
        assert not connect_refused(fp)
    else:
        assert wait_for(lambda: connect_refused(fp), 5)
        assert time.monotonic() - t0 >= 1.9
    assert h.admin_get("/ready") == (503, "DRAINING\n")
