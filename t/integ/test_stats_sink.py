"""stats_sinks against real statsd servers written here: envoy.stat_sinks.statsd
over UDP (a python datagram socket) and over TCP to a cluster's host (a python
TCP server that is restarted), envoy.stat_sinks.dog_statsd with its tags and
max_bytes_per_datagram, stats_flush_on_admin, and the config errors of
--mode validate. Traffic goes through tcp_proxy to an echo backend; the
counter deltas the sinks carry must add up to what /stats shows."""

import re
import socket
import threading
import time

from conftest import PLUGIN_DIR, run_herald
from helpers import EchoServer, bootstrap, cluster, connect, recv_line, sock_addr, tcp_listener, wait_for
from http_backends import HttpBackend, hcm, http_cluster, http_listener, request, route
from reload_util import Reloads, set_subreaper

STATSD_TYPE = "type.googleapis.com/envoy.config.metrics.v3.StatsdSink"
DOG_TYPE = "type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink"
LINE = re.compile(r"^(?P<name>[^:|]+):(?P<value>\d+)\|(?P<type>c|g|ms)(\|@(?P<rate>[0-9.]+))?(\|#(?P<tags>\S+))?$")


class UdpStatsd:
    """Collects every datagram sent to it; lines() parses them."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.datagrams = []

    def drain(self):
        while True:
            try:
                self.datagrams.append(self.sock.recv(65536))
            except socket.timeout:
                return

    def lines(self, since=0):
        self.drain()
        out = []
        for d in self.datagrams[since:]:
            out += d.decode().split("\n")
        return out

    def close(self):
        self.sock.close()


class TcpStatsd:
    """A statsd server over TCP on a fixed port: newline-terminated lines."""

    def __init__(self, port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.data = b""
        self.accepted = 0
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.accepted += 1
                self.conns.append(c)
            threading.Thread(target=self.read, args=(c,), daemon=True).start()

    def read(self, c):
        c.settimeout(30)
        while True:
            try:
                d = c.recv(65536)
            except OSError:
                return
            if not d:
                return
            with self.lock:
                self.data += d

    def lines(self):
        with self.lock:
            text = self.data.decode()
        # only complete lines
        return text.split("\n")[:-1]

    def stop(self):
        self.stopping.set()
        self.thread.join(2)
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()


def parse(lines):
    out = []
    for line in lines:
        if not line:
            continue
        m = LINE.match(line)
        assert m, "not a statsd line: %r" % line
        out.append(m)
    return out


def total(lines, name, kind="c"):
    return sum(int(m["value"]) for m in parse(lines) if m["name"] == name and m["type"] == kind)


def through_proxy(lport, n, h=None):
    """n connections through the tcp_proxy listener, each greeted by the echo
    server and echoing one line; h (the herald) puts its log in a failure."""
    for _ in range(n):
        s = connect(lport)
        line = recv_line(s)
        assert line == b"echo", (line, h.log_tail() if h else "")
        s.sendall(b"x\n")
        assert recv_line(s) == b"x"
        s.close()


def start(herald, upstreams, port, sinks, concurrency=2, interval="0.2s", clusters=(), herald_args=None, **extra):
    echo = upstreams(EchoServer, tag="echo")
    lport = port()
    cfg = bootstrap([tcp_listener(lport, "echo", stat_prefix="px")], [cluster("echo", [echo.addr])] + list(clusters))
    if interval:
        cfg["stats_flush_interval"] = interval
    cfg["stats_sinks"] = sinks
    cfg.update(extra)
    return herald(cfg, concurrency=concurrency, **(herald_args or {})), lport


def udp_sink(port, prefix=None):
    tc = {"@type": STATSD_TYPE, "address": sock_addr(port)}
    if prefix is not None:
        tc["prefix"] = prefix
    return {"name": "envoy.stat_sinks.statsd", "typed_config": tc}


def test_statsd_udp_counter_deltas_gauges_histograms(herald, upstreams, port):
    srv = UdpStatsd()
    try:
        h, lport = start(herald, upstreams, port, [udp_sink(srv.port, prefix="hx")])
        n = 7
        through_proxy(lport, n)
        h.wait_stat("cluster.echo.upstream_cx_active", lambda v: v == 0)
        name = "hx.tcp.px.downstream_cx_total"
        assert wait_for(lambda: total(srv.lines(), name) == n, timeout=5), \
            "deltas of %s: %s" % (name, [x for x in srv.lines() if x.startswith(name + ":")])
        stats = h.stats()
        assert stats["tcp.px.downstream_cx_total"] == n
        assert wait_for(lambda: total(srv.lines(), "hx.cluster.echo.upstream_cx_total") ==
                        stats["cluster.echo.upstream_cx_total"] == n, timeout=5)
        lines = srv.lines()
        parsed = parse(lines)
        assert all(m["name"].startswith("hx.") for m in parsed)
        # every name is one /stats shows, with the prefix in front
        _, text = h.admin_get("/stats")
        shown = {line.split(":")[0] for line in text.splitlines()}
        assert {m["name"][3:] for m in parsed} <= shown
        # gauges by value: the last one sent for a gauge is its value now
        gauges = [m for m in parsed if m["name"] == "hx.cluster.echo.upstream_cx_active"]
        assert gauges and all(m["type"] == "g" for m in gauges) and gauges[-1]["value"] == "0"
        # histograms as timers; the sample rates add up to the values recorded
        connect_ms = [m for m in parsed if m["name"] == "hx.cluster.echo.upstream_cx_connect_ms"]
        assert connect_ms and all(m["type"] == "ms" for m in connect_ms)
        assert round(sum(1 / float(m["rate"]) if m["rate"] else 1 for m in connect_ms)) == n
        # batched: several lines per datagram, none over 1432 bytes
        assert max(len(d) for d in srv.datagrams) <= 1432
        assert len(lines) > len(srv.datagrams)

        # nothing moved: used counters come again with 0 (as Envoy), never-used ones never
        mark = len(srv.datagrams)
        assert wait_for(lambda: srv.lines(mark + 1) and len(srv.datagrams) >= mark + 2, timeout=5)
        later = parse(srv.lines(mark + 1))
        zero = [m for m in later if m["name"] == name]
        assert zero and all(m["value"] == "0" for m in zero), zero
        assert total(srv.lines(), name) == n
        _, used = h.admin_get("/stats?usedonly")
        used = {line.split(":")[0] for line in used.splitlines()}
        unused = [k for k, v in h.stats().items() if k not in used and v == 0]
        assert unused, "expected some never-used stats"
        sent = {m["name"][3:] for m in parse(srv.lines())}
        assert not sent & set(unused), sorted(sent & set(unused))

        # more traffic: only the new connections in the deltas
        through_proxy(lport, 3)
        assert wait_for(lambda: total(srv.lines(), name) == n + 3, timeout=5)
        assert h.stat("tcp.px.downstream_cx_total") == n + 3
    finally:
        srv.close()


def test_statsd_http_requests_and_cluster_names(herald, upstreams, port):
    """HTTP through the router: http.<prefix>.* and cluster.<name>.* deltas add
    up to the requests; a cluster whose name has a ':' keeps the line parseable."""
    srv = UdpStatsd()
    try:
        one = upstreams(HttpBackend, "one")
        lp = port()
        cfg = {"static_resources": {
            "listeners": [http_listener(lp, hcm("ingress", [route("/", "web:v1")]))],
            "clusters": [http_cluster("web:v1", [one.port])]},
            "stats_flush_interval": "0.2s", "stats_sinks": [udp_sink(srv.port)]}
        h = herald(cfg, concurrency=2)
        n = 9
        for _ in range(n):
            assert request(lp, "/")[0] == 200
        assert wait_for(lambda: total(srv.lines(), "envoy.http.ingress.downstream_rq_total") == n, timeout=5)
        assert wait_for(lambda: total(srv.lines(), "envoy.cluster.web_v1.upstream_rq_total") == n, timeout=5), \
            [x for x in srv.lines() if "upstream_rq_total" in x]
        assert wait_for(lambda: total(srv.lines(), "envoy.http.ingress.downstream_rq_2xx") == n, timeout=5)
        st = h.stats()
        assert st["http.ingress.downstream_rq_total"] == st["cluster.web:v1.upstream_rq_total"] == n
        rq_time = [m for m in parse(srv.lines()) if m["name"] == "envoy.http.ingress.downstream_rq_time"]
        assert rq_time and all(m["type"] == "ms" for m in rq_time)
        assert round(sum(1 / float(m["rate"]) if m["rate"] else 1 for m in rq_time)) == n
    finally:
        srv.close()


def test_statsd_last_interval_sent_at_exit(herald, upstreams, port):
    srv = UdpStatsd()
    try:
        h, lport = start(herald, upstreams, port, [udp_sink(srv.port)], interval="60s")
        through_proxy(lport, 3)
        h.wait_stat("tcp.px.downstream_cx_total", lambda v: v == 3)
        assert srv.lines() == []
        h.stop()
        assert wait_for(lambda: total(srv.lines(), "envoy.tcp.px.downstream_cx_total") == 3, timeout=3)
    finally:
        srv.close()


def test_statsd_across_a_reload_counts_each_connection_once(herald, upstreams, port):
    """The new process takes the old one's counters over (/stats goes on from
    them) but does not send them again: the old one's sinks did, its drain
    included, at its exit."""
    assert set_subreaper(True)
    srv = UdpStatsd()
    r = None
    try:
        h, lport = start(herald, upstreams, port, [udp_sink(srv.port)],
                         herald_args={"args": ["--parent-shutdown-time-s", "2"]})
        name = "envoy.tcp.px.downstream_cx_total"
        through_proxy(lport, 4)
        assert wait_for(lambda: total(srv.lines(), name) == 4, timeout=5)
        r = Reloads(h)
        old = h.pid
        assert r.sighup() not in (None, old), h.log_tail()
        through_proxy(lport, 3, h)
        assert r.wait_old_exit(10) == 0
        assert wait_for(lambda: h.stat("tcp.px.downstream_cx_total") == 7, timeout=5), h.log_tail()
        assert wait_for(lambda: total(srv.lines(), name) == 7, timeout=5), total(srv.lines(), name)
        time.sleep(0.7)   # a few more flushes: nothing counted twice
        assert total(srv.lines(), name) == 7
        assert r.stop_new() == 0
        assert total(srv.lines(), name) == 7
    finally:
        if r:
            r.cleanup()
        set_subreaper(False)
        srv.close()


def test_statsd_default_prefix_and_flush_on_admin(herald, upstreams, port):
    srv = UdpStatsd()
    try:
        h, lport = start(herald, upstreams, port, [udp_sink(srv.port)], interval=None, stats_flush_on_admin=True)
        through_proxy(lport, 2)
        time.sleep(0.5)   # reading /stats would flush: only sleep
        assert srv.lines() == [], "stats_flush_on_admin: nothing before the stats are read"
        h.admin_get("/stats")
        assert wait_for(lambda: total(srv.lines(), "envoy.tcp.px.downstream_cx_total") == 2, timeout=3)
    finally:
        srv.close()


def test_statsd_tcp_cluster_and_reconnect(herald, upstreams, port):
    srv = TcpStatsd()
    sink = {"name": "envoy.stat_sinks.statsd",
            "typed_config": {"@type": STATSD_TYPE, "tcp_cluster_name": "statsd"}}
    h, lport = start(herald, upstreams, port, [sink], clusters=[cluster("statsd", [("127.0.0.1", srv.port)])])
    name = "envoy.tcp.px.downstream_cx_total"
    try:
        through_proxy(lport, 4)
        assert wait_for(lambda: total(srv.lines(), name) == 4, timeout=5), srv.lines()[-20:]
        assert any(line.startswith("envoy.cluster.echo.upstream_cx_active:") and line.endswith("|g")
                   for line in srv.lines())
        assert srv.accepted == 1, "one connection for all the flushes"
    finally:
        srv.stop()
    # the server goes away and comes back on the same port: herald connects again
    srv2 = TcpStatsd(srv.port)
    try:
        assert wait_for(lambda: srv2.accepted >= 1 and srv2.lines(), timeout=5), "no reconnection"
        seen = len(srv2.lines())
        through_proxy(lport, 5)
        assert wait_for(lambda: total(srv2.lines()[seen:], name) == 5, timeout=5), srv2.lines()[-20:]
        assert h.stat("tcp.px.downstream_cx_total") == 9
        assert h.alive()
    finally:
        srv2.stop()


def test_dog_statsd_tags_and_datagram_size(herald, upstreams, port):
    srv, one = UdpStatsd(), UdpStatsd()
    try:
        sinks = [{"name": "envoy.stat_sinks.dog_statsd",
                  "typed_config": {"@type": DOG_TYPE, "address": sock_addr(srv.port), "prefix": "dd",
                                   "max_bytes_per_datagram": 512}},
                 {"name": "envoy.stat_sinks.dog_statsd",
                  "typed_config": {"@type": DOG_TYPE, "address": sock_addr(one.port)}}]
        h, lport = start(herald, upstreams, port, sinks)
        through_proxy(lport, 3)
        want = "dd.cluster.upstream_cx_total"
        assert wait_for(lambda: sum(int(m["value"]) for m in parse(srv.lines()) if m["name"] == want and
                                    m["tags"] == "envoy.cluster_name:echo") == 3, timeout=5)
        lines = parse(srv.lines())
        assert any(m["name"] == "dd.tcp.downstream_cx_total" and m["tags"] == "envoy.tcp_prefix:px" for m in lines)
        assert max(len(d) for d in srv.datagrams) <= 512
        # no max_bytes_per_datagram: one metric per datagram, as Envoy
        assert wait_for(lambda: len(one.lines()) > 5, timeout=5)
        assert all(b"\n" not in d for d in one.datagrams)
        assert all(m["name"].startswith("envoy.") for m in parse(one.lines()))
    finally:
        srv.close()
        one.close()


BAD = """
static_resources:
  clusters:
  - name: c1
    connect_timeout: 1s
    load_assignment:
      cluster_name: c1
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9}}}}]}]
stats_sinks:
- name: %s
  typed_config:
%s
"""


def validate(tmp_path, name, body):
    p = tmp_path / "bad.yaml"
    p.write_text(BAD % (name, body))
    return run_herald(["--mode", "validate", "-c", str(p), "--plugin-dir", PLUGIN_DIR])


def test_stats_sink_config_errors(tmp_path):
    cases = [
        ("envoy.stat_sinks.statsd",
         '    "@type": %s\n    address: {socket_address: {address: 127.0.0.1, port_value: 8125}}\n'
         '    tcp_cluster_name: c1' % STATSD_TYPE,
         r"bad\.yaml:14:5: stats_sinks\[0\]\.typed_config\.tcp_cluster_name: .*only one of them"),
        ("envoy.stat_sinks.statsd", '    "@type": %s\n    tcp_cluster_name: nope' % STATSD_TYPE,
         r"bad\.yaml:13:5: stats_sinks\[0\]\.typed_config\.tcp_cluster_name: no cluster named 'nope'"),
        ("envoy.stat_sinks.statsd", '    "@type": %s\n    tcp_cluster_name: c1\n    prefixx: a' % STATSD_TYPE,
         r"bad\.yaml:14:5: stats_sinks\[0\]\.typed_config\.prefixx: unknown field 'prefixx'"),
        ("envoy.stat_sinks.metrics_service",
         '    "@type": type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig',
         r"bad\.yaml:12:5: stats_sinks\[0\]\.typed_config\.@type: not supported: stats sink type"),
        ("envoy.stat_sinks.statsd",
         '    "@type": %s\n    address: {socket_address: {address: localhost, port_value: 8125}}' % STATSD_TYPE,
         r"bad\.yaml:13:\d+: stats_sinks\[0\]\.typed_config\.address\.socket_address\.address: "
         r"'localhost' is not an IP address"),
        ("envoy.stat_sinks.statsd", '    "@type": %s' % STATSD_TYPE,
         r"stats_sinks\[0\]\.typed_config: a StatsdSink needs an address \(UDP\) or a tcp_cluster_name"),
    ]
    for name, body, pattern in cases:
        r = validate(tmp_path, name, body)
        assert r.returncode == 1, (body, r.stderr)
        assert re.search(pattern, r.stderr), (pattern, r.stderr)
    # an unknown sink name without a typed_config
    p = tmp_path / "bad2.yaml"
    p.write_text((BAD % ("foo", "")).replace("  typed_config:\n", ""))
    r = run_herald(["--mode", "validate", "-c", str(p), "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 1 and re.search(r"bad2\.yaml:10:3: stats_sinks\[0\]\.name: not supported: "
                                           r"stats sink 'foo'", r.stderr), r.stderr
    # and a good one passes
    r = validate(tmp_path, "envoy.stat_sinks.statsd",
                 '    "@type": %s\n    tcp_cluster_name: c1\n    prefix: p' % STATSD_TYPE)
    assert r.returncode == 0, r.stderr
    assert "never referenced" not in r.stderr
