"""HTTP CONNECT end to end: routes with connect_matcher, CONNECT ended by herald
(the route's upgrade_configs CONNECT with connect_config: a TCP connection to
a host of the cluster, the client's bytes carried both ways) or passed on to
an upstream proxy (no connect_config), over HTTP/1.1 and HTTP/2
(http2_protocol_options.allow_connect).

Peers: curl as a client through herald as its proxy (curl -p -x), python3-h2
for CONNECT over HTTP/2, raw sockets for HTTP/1.1, and echo / HTTP backends."""

import json
import re
import socket
import time

import pytest

import conftest
import helpers
import http_backends as hb
from http_backends import HttpBackend

h2 = pytest.importorskip("h2")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

CONNECT_UPGRADE = [{"upgrade_type": "CONNECT"}]


def tunnel_route(cluster, terminate=True, **match):
    """A connect_matcher route to cluster; terminate: herald ends the CONNECT."""
    action = {"cluster": cluster}
    if terminate:
        action["upgrade_configs"] = [{"upgrade_type": "CONNECT", "connect_config": {}}]
    return {"match": dict({"connect_matcher": {}}, **match), "route": action}


def connect_proxy(herald, port, clusters, routes, log=None, **hcm_extra):
    """A herald whose one listener takes CONNECT (upgrade_configs) with routes."""
    lp = port()
    extra = dict(upgrade_configs=CONNECT_UPGRADE)
    extra.update(hcm_extra)
    if log:
        extra["access_log"] = [hb.file_access_log(log, "%REQ(:METHOD)% %REQ(:AUTHORITY)% %PROTOCOL% "
                                                        "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% "
                                                        "%BYTES_RECEIVED% %BYTES_SENT%\n")]
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(lp, hb.hcm("ingress_http", routes, **extra), "proxy")],
        "clusters": clusters}}
    return herald(cfg), lp


def tcp_cluster(name, port):
    return hb.http_cluster(name, [port])


def read_head(sock):
    """The response head of an HTTP/1.1 CONNECT answer, and what followed it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        assert d, "closed before the response head: %r" % buf
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def h1_connect(port, authority="db.example:5432", early=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (authority.encode(), authority.encode()) + early)
    return s


def h2_cluster(name, ports):
    """A cluster that herald reaches over HTTP/2 (explicit http2_protocol_options)."""
    return hb.http_cluster(name, ports, typed_extension_protocol_options=hb.h2_protocol_options())


def connect_with_early_end(port, early):
    """CONNECT, early bytes and the client's half-close in one go, before any
    answer; the tunnel ends at an echo server: 200, the same bytes back, then
    the close."""
    s = h1_connect(port, early=early)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    head, rest = read_head(s)
    assert head.startswith("HTTP/1.1 200 "), head
    assert rest + helpers.recv_until_eof(s) == early
    s.close()


# ------------------------------------------------------------------ HTTP/1.1, ended here


def test_connect_ended_by_herald_carries_bytes_both_ways(herald, upstreams, port, tmp_path):
    """CONNECT on a connect_matcher route with connect_config: herald answers
    200 with no framing headers once it has a TCP connection to the cluster's
    host; the bytes the client sent with the CONNECT and 1 MiB after it come
    back from the echo server intact; the client's half-close reaches the
    echo server, whose close ends the tunnel."""
    echo = upstreams(helpers.EchoServer)
    log = str(tmp_path / "access.log")
    h, lp = connect_proxy(herald, port, [tcp_cluster("echo", echo.port)],
                          [tunnel_route("echo"), hb.route("/", direct_response={"status": 200})], log=log)
    s = h1_connect(lp, early=b"sent with the CONNECT|")
    head, rest = read_head(s)
    assert head.startswith("HTTP/1.1 200 "), head
    assert not re.search(r"(?im)^(transfer-encoding|content-length):", head), head
    payload = hb.pattern_bytes(1 << 20)
    got = helpers.send_and_read(s, payload, rest)
    s.close()
    assert got == b"sent with the CONNECT|" + payload
    assert echo.accepted == 1
    helpers.wait_lines(log, 1)
    line = open(log).read().split()
    assert line[:6] == ["CONNECT", "db.example:5432", "HTTP/1.1", "200", "-", "127.0.0.1:%d" % echo.port], line
    assert int(line[6]) == int(line[7]) == len(payload) + 22, line
    assert h.stat("http.ingress_http.downstream_cx_upgrades_total") == 1
    h.wait_stat("http.ingress_http.downstream_cx_upgrades_active", lambda v: v == 0)
    assert h.stat("http.ingress_http.downstream_cx_upgrades_active") == 0
    assert h.stat("cluster.echo.upstream_cx_total") == 1


def test_curl_uses_herald_as_its_connect_proxy(herald, upstreams, port):
    """curl -p -x herald: curl tunnels its own HTTP request through the CONNECT;
    it reaches the backend unchanged (herald adds no forwarding headers inside
    a tunnel), and two requests on the tunnel share one backend connection."""
    web = upstreams(HttpBackend, "web")
    h, lp = connect_proxy(herald, port, [tcp_cluster("web", web.port)], [tunnel_route("web")])
    r = hb.curl("-p", "-x", "http://127.0.0.1:%d" % lp, "http://origin.example/one",
                "http://origin.example/two", "-w", "\\n%{http_code} %{http_connect}\\n")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.split("\n") if x]
    bodies = [json.loads(x) for x in lines if x.startswith("{")]
    codes = [x for x in lines if not x.startswith("{")]
    # the second request rides the same tunnel: curl makes no second CONNECT (000)
    assert codes == ["200 200", "200 000"], r.stdout
    assert [b["path"] for b in bodies] == ["/one", "/two"]
    assert all(b["backend"] == "web" for b in bodies)
    for b in bodies:
        names = {k.lower() for k, _ in b["headers"]}
        assert "x-forwarded-for" not in names and "x-request-id" not in names, b["headers"]
        assert dict(b["headers"])["Host"] == "origin.example"
    assert web.accepted == 1
    assert h.stat("http.ingress_http.downstream_cx_upgrades_total") == 1


def test_connect_when_the_upstream_closes_first(herald, upstreams, port):
    """The host says hello and shuts its side at once: the client gets the
    greeting, and herald closes the client's connection after it (an HTTP/1.1
    tunnel is the whole connection); nothing stalls."""
    srv = upstreams(helpers.CloseFirstServer)
    h, lp = connect_proxy(herald, port, [tcp_cluster("srv", srv.port)], [tunnel_route("srv")])
    s = h1_connect(lp)
    head, rest = read_head(s)
    assert head.startswith("HTTP/1.1 200 "), head
    got = bytearray(rest)
    s.settimeout(5)
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    assert bytes(got) == b"hello, closing my side\n"
    s.close()


@pytest.mark.parametrize("early", [b"all at once|", b""], ids=["with-bytes", "empty"])
def test_connect_half_closed_before_the_host_answers(herald, upstreams, port, early):
    """The client sends the CONNECT, its bytes (or none) and its half-close in
    one go, before herald can have a connection to the host: the bytes and
    the end are kept and go out once it is up, so the echo server sees them,
    answers and closes, and the client reads 200, its bytes, then the close."""
    echo = upstreams(helpers.EchoServer)
    h, lp = connect_proxy(herald, port, [tcp_cluster("echo", echo.port)], [tunnel_route("echo")])
    connect_with_early_end(lp, early)
    assert echo.accepted == 1
    h.wait_stat("http.ingress_http.downstream_cx_upgrades_active", lambda v: v == 0)


def test_connect_to_a_host_that_is_down(herald, port, tmp_path):
    """No TCP connection to the host: 503 with the upstream failure flag, and
    the connection is not a tunnel (no upgrade counted)."""
    dead = port()
    log = str(tmp_path / "access.log")
    h, lp = connect_proxy(herald, port, [tcp_cluster("dead", dead)], [tunnel_route("dead")], log=log)
    out = hb.raw(lp, b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
    assert hb.status_of(out) == 503, out
    assert b"connection failure" in out
    helpers.wait_lines(log, 1)
    assert open(log).read().split()[3:5] == ["503", "UF"]
    assert h.stat("http.ingress_http.downstream_cx_upgrades_total") == 0
    assert h.stat("cluster.dead.upstream_cx_connect_fail") >= 1


def test_connect_matching_and_refusals(herald, upstreams, port):
    """CONNECT takes only connect_matcher routes (prefix "/" does not match
    it): without one, 404; a GET never takes a connect_matcher route; a
    connection manager without the CONNECT upgrade answers it 403."""
    echo = upstreams(helpers.EchoServer)
    web = upstreams(HttpBackend, "web")
    clusters = [tcp_cluster("echo", echo.port), hb.http_cluster("web", [web.port])]
    h, lp = connect_proxy(herald, port, clusters, [hb.route("/", "web")])
    out = hb.raw(lp, b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
    assert hb.status_of(out) == 404, out
    assert h.stat("http.ingress_http.no_route") == 1

    h2_, lp2 = connect_proxy(herald, port, clusters, [tunnel_route("echo")])
    status, _, _ = hb.request(lp2, "/")
    assert status == 404

    lp3 = port()
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(lp3, hb.hcm("plain", [tunnel_route("echo")]), "plain")],
        "clusters": clusters}}
    h3 = herald(cfg)
    out = hb.raw(lp3, b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
    assert hb.status_of(out) == 403, out
    assert echo.accepted == 0
    assert h3.stat("http.plain.downstream_cx_upgrades_total") == 0


def test_connect_passed_on_to_an_upstream_proxy(herald, upstreams, port, tmp_path):
    """Without connect_config the CONNECT goes upstream as a CONNECT (here to
    a second herald that ends it): the bytes still arrive intact both ways."""
    echo = upstreams(helpers.EchoServer)
    inner_log = str(tmp_path / "inner.log")
    inner, ip = connect_proxy(herald, port, [tcp_cluster("echo", echo.port)], [tunnel_route("echo")],
                              log=inner_log)
    outer, op = connect_proxy(herald, port, [hb.http_cluster("proxy", [ip])],
                              [tunnel_route("proxy", terminate=False)])
    s = h1_connect(op, "db.example:5432", early=b"early|")
    head, rest = read_head(s)
    assert head.startswith("HTTP/1.1 200 "), head
    payload = hb.pattern_bytes(256 << 10)
    got = helpers.send_and_read(s, payload, rest)
    s.close()
    assert got == b"early|" + payload
    helpers.wait_lines(inner_log, 1)
    assert open(inner_log).read().split()[:4] == ["CONNECT", "db.example:5432", "HTTP/1.1", "200"]
    assert outer.stat("cluster.proxy.upstream_rq_total") == 1


@pytest.mark.parametrize("over", ["http1", "http2"])
@pytest.mark.parametrize("early", [b"all at once|", b""], ids=["with-bytes", "empty"])
def test_connect_passed_on_half_closed_before_the_answer(herald, upstreams, port, early, over):
    """A CONNECT passed on to an upstream proxy (over HTTP/1.1, or as an
    HTTP/2 stream), with the client's bytes and its half-close right behind
    it: the end reaches the far host once the upstream proxy's 200 is in (on
    HTTP/2: an END_STREAM after the HEADERS), so the echo server answers and
    closes, and the client reads 200, its bytes, then the close."""
    echo = upstreams(helpers.EchoServer)
    inner_extra = {"http2_protocol_options": {"allow_connect": True}} if over == "http2" else {}
    inner, ip = connect_proxy(herald, port, [tcp_cluster("echo", echo.port)], [tunnel_route("echo")],
                              **inner_extra)
    proxy = h2_cluster("proxy", [ip]) if over == "http2" else hb.http_cluster("proxy", [ip])
    outer, op = connect_proxy(herald, port, [proxy], [tunnel_route("proxy", terminate=False)])
    connect_with_early_end(op, early)
    assert echo.accepted == 1


def test_connect_passed_on_over_http2(herald, upstreams, port, tmp_path):
    """The upstream proxy is reached over HTTP/2 (the cluster's
    http2_protocol_options): the CONNECT goes out as an HTTP/2 CONNECT stream
    (:authority only) to a second herald that ends it (allow_connect there),
    and the bytes arrive intact both ways; a second tunnel shares the
    HTTP/2 connection."""
    echo = upstreams(helpers.EchoServer)
    inner_log = str(tmp_path / "inner.log")
    inner, ip = connect_proxy(herald, port, [tcp_cluster("echo", echo.port)], [tunnel_route("echo")],
                              log=inner_log, http2_protocol_options={"allow_connect": True})
    outer, op = connect_proxy(herald, port, [h2_cluster("proxy", [ip])], [tunnel_route("proxy", terminate=False)])
    for n in range(2):
        s = h1_connect(op, "db.example:5432", early=b"early %d|" % n)
        head, rest = read_head(s)
        assert head.startswith("HTTP/1.1 200 "), head
        payload = hb.pattern_bytes((256 << 10) + n)
        got = helpers.send_and_read(s, payload, rest)
        s.close()
        assert got == b"early %d|" % n + payload
    helpers.wait_lines(inner_log, 2)
    assert [x.split()[:4] for x in open(inner_log).read().splitlines()] == \
        [["CONNECT", "db.example:5432", "HTTP/2", "200"]] * 2
    assert outer.stat("cluster.proxy.upstream_cx_http2_total") == 1
    assert outer.stat("cluster.proxy.upstream_rq_total") == 2


# ------------------------------------------------------------------ HTTP/2


class H2Client:
    """A cleartext HTTP/2 client (prior knowledge) that can send CONNECT."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        cfg = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
        self.conn = h2.connection.H2Connection(cfg)
        self.conn.initiate_connection()
        self.flush()
        self.headers, self.data, self.ended, self.reset = {}, {}, set(), {}

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self):
        d = self.sock.recv(1 << 16)
        if not d:
            raise EOFError("herald closed the connection")
        for ev in self.conn.receive_data(d):
            if isinstance(ev, h2.events.ResponseReceived):
                self.headers[ev.stream_id] = {k.decode(): v.decode() for k, v in ev.headers}
            elif isinstance(ev, h2.events.DataReceived):
                self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.reset[ev.stream_id] = ev.error_code
                self.ended.add(ev.stream_id)
        self.flush()

    def connect(self, authority="db.example:5432"):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", authority)])
        self.flush()
        return sid

    def get(self, path):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                                     (":path", path)], end_stream=True)
        self.flush()
        return sid

    def wait(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, "timed out"
            self.pump()

    def send(self, sid, payload, end):
        off = 0
        while off < len(payload):
            w = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(payload) - off)
            if w <= 0:
                self.pump()
                continue
            self.conn.send_data(sid, payload[off:off + w], end_stream=end and off + w == len(payload))
            off += w
            self.flush()
        if end and not payload:
            self.conn.end_stream(sid)
            self.flush()


def test_h2_connect_streams_are_tunnels_side_by_side(herald, upstreams, port):
    """With allow_connect, two CONNECT streams on one HTTP/2 connection each
    carry their own bytes to their own echo connection; when one ends, the
    other and a plain GET on the same connection go on."""
    echo = upstreams(helpers.EchoServer)
    web = upstreams(HttpBackend, "web")
    h, lp = connect_proxy(herald, port, [tcp_cluster("echo", echo.port), hb.http_cluster("web", [web.port])],
                          [tunnel_route("echo"), hb.route("/", "web")],
                          http2_protocol_options={"allow_connect": True})
    c = H2Client(lp)
    a, b = c.connect(), c.connect()
    c.wait(lambda: a in c.headers and b in c.headers)
    assert c.headers[a][":status"] == "200" and "content-length" not in c.headers[a]
    pa, pb = hb.pattern_bytes(300 << 10), b"stream b says hi"
    c.send(a, pa, end=True)
    c.wait(lambda: a in c.ended)
    assert bytes(c.data.get(a, b"")) == pa and a not in c.reset
    c.send(b, pb, end=False)
    c.wait(lambda: len(c.data.get(b, b"")) >= len(pb))
    assert bytes(c.data[b]) == pb and b not in c.ended
    g = c.get("/after")
    c.wait(lambda: g in c.ended)
    assert c.headers[g][":status"] == "200" and json.loads(bytes(c.data[g]))["path"] == "/after"
    c.send(b, b"", end=True)
    c.wait(lambda: b in c.ended)
    assert b not in c.reset
    assert echo.accepted == 2
    assert h.stat("http.ingress_http.downstream_cx_upgrades_total") == 2
    h.wait_stat("http.ingress_http.downstream_cx_upgrades_active", lambda v: v == 0)
    assert h.stat("http.ingress_http.downstream_cx_upgrades_active") == 0


def test_h2_connect_with_end_stream_on_its_headers(herald, upstreams, port):
    """A CONNECT whose HEADERS carry END_STREAM (a client with nothing to
    send): herald still answers 200 once the host is up, and that end is a
    half-close toward the echo server, whose close ends the stream; the
    connection goes on (a second CONNECT on it works)."""
    echo = upstreams(helpers.EchoServer)
    h, lp = connect_proxy(herald, port, [tcp_cluster("echo", echo.port)], [tunnel_route("echo")],
                          http2_protocol_options={"allow_connect": True})
    c = H2Client(lp)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", "db.example:5432")], end_stream=True)
    c.flush()
    c.wait(lambda: sid in c.ended)
    assert c.headers.get(sid, {}).get(":status") == "200", (c.headers, c.reset)
    assert sid not in c.reset, c.reset
    assert bytes(c.data.get(sid, b"")) == b""
    b = c.connect()
    c.send(b, b"still here", True)
    c.wait(lambda: b in c.ended)
    assert bytes(c.data[b]) == b"still here"
    assert echo.accepted == 2


def test_h2_connect_refused_without_allow_connect(herald, upstreams, port):
    """allow_connect false (the default): CONNECT over HTTP/2 is answered 403
    and nothing reaches the host."""
    echo = upstreams(helpers.EchoServer)
    h, lp = connect_proxy(herald, port, [tcp_cluster("echo", echo.port)], [tunnel_route("echo")])
    c = H2Client(lp)
    sid = c.connect()
    c.wait(lambda: sid in c.ended)
    assert c.headers[sid][":status"] == "403"
    assert echo.accepted == 0


def test_h2_connect_upstream_reset_resets_the_stream(herald, upstreams, port):
    """The host resets its connection mid-tunnel: the client's stream is reset
    (not ended cleanly), and the HTTP/2 connection stays up for others."""
    class ResetServer(helpers.TcpServer):
        def handle(self, c):
            c.recv(100)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    srv = upstreams(ResetServer)
    web = upstreams(HttpBackend, "web")
    h, lp = connect_proxy(herald, port, [tcp_cluster("srv", srv.port), hb.http_cluster("web", [web.port])],
                          [tunnel_route("srv"), hb.route("/", "web")],
                          http2_protocol_options={"allow_connect": True})
    c = H2Client(lp)
    sid = c.connect()
    c.wait(lambda: sid in c.headers)
    c.send(sid, b"ping", end=False)
    c.wait(lambda: sid in c.ended)
    assert sid in c.reset
    g = c.get("/still-up")
    c.wait(lambda: g in c.ended)
    assert c.headers[g][":status"] == "200"


# ------------------------------------------------------------------ config


def test_connect_config_errors(tmp_path):
    """connect_config on another upgrade type, and its unsupported fields, stop
    validation with the file position and the field."""
    def with_upgrades(upgrades, match=None):
        routes = [{"match": match or {"connect_matcher": {}}, "route": {"cluster": "c", "upgrade_configs": upgrades}}]
        return {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", routes, upgrade_configs=CONNECT_UPGRADE))],
            "clusters": [hb.http_cluster("c", [1])]}}
    cases = [
        (with_upgrades([{"upgrade_type": "websocket", "connect_config": {}}], {"prefix": "/"}),
         r"upgrade_configs\[0\]\.connect_config: connect_config is only for upgrade_type CONNECT"),
        (with_upgrades([{"upgrade_type": "CONNECT", "connect_config": {"allow_post": True}}]),
         r"connect_config\.allow_post: not supported"),
        (with_upgrades([{"upgrade_type": "CONNECT", "connect_config": {"proxy_protocol_config": {}}}]),
         r"connect_config\.proxy_protocol_config: not supported"),
    ]
    for cfg, want in cases:
        conftest.config_refused(tmp_path, cfg, want, "connect.json")
