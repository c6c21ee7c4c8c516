"""tcp_proxy's tunneling_config: a plain TCP client's bytes go to the cluster
inside an HTTP CONNECT (over HTTP/1.1, or as streams of one HTTP/2
connection) or a POST, the way Envoy carries TCP over HTTP. The far end is a
second herald that ends the CONNECT (connect_matcher + connect_config) in
front of an echo server, or an HTTP backend for POST; the tests check the
bytes that come back, what the far end was asked (its access log), and the
connect-failure path."""

import json
import socket
import threading

import pytest

import conftest
import helpers
import http_backends as hb
from http_backends import HttpBackend

TCP_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
LOG_FMT = ("%REQ(:METHOD)% %REQ(:AUTHORITY)% %PROTOCOL% %RESPONSE_CODE% %REQ(X-ORIGINAL-PORT)% "
           "%BYTES_RECEIVED% %BYTES_SENT%\n")


def terminator(herald, port, echo_port, log, **hcm_extra):
    """A herald ending CONNECTs (HTTP/1.1 and, with allow_connect, HTTP/2) to echo_port."""
    routes = [{"match": {"connect_matcher": {}},
               "route": {"cluster": "echo",
                         "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}},
              {"match": {"prefix": "/"}, "direct_response": {"status": 404}}]
    lp = port()
    extra = dict(upgrade_configs=[{"upgrade_type": "CONNECT"}],
                 http2_protocol_options={"allow_connect": True},
                 access_log=[hb.file_access_log(log, LOG_FMT)])
    extra.update(hcm_extra)
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(lp, hb.hcm("term", routes, **extra), "term")],
        "clusters": [hb.http_cluster("echo", [echo_port])]}}
    return herald(cfg), lp


def tunneler(herald, port, far_port, tunneling, h2=False, **tcp_extra):
    """A herald whose TCP listener carries each connection to far_port inside HTTP."""
    lp = port()
    tcp = {"@type": TCP_TYPE, "stat_prefix": "tun", "cluster": "far", "tunneling_config": tunneling}
    tcp.update(tcp_extra)
    cluster = hb.http_cluster("far", [far_port], **({"typed_extension_protocol_options": hb.h2_protocol_options()} if h2 else {}))
    cfg = {"static_resources": {
        "listeners": [{"name": "tcp", "address": hb.sock_addr(lp),
                       "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                                                       "typed_config": tcp}]}]}],
        "clusters": [cluster]}}
    return herald(cfg), lp


def round_trip(port, payload):
    """Sends payload (then a half-close) while reading; all that came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        return helpers.send_and_read(s, payload)


def log_lines(path, n):
    helpers.wait_lines(path, n)
    return [x.split() for x in open(path).read().splitlines()]


def test_tcp_over_http1_connect(herald, upstreams, port, tmp_path):
    """Each TCP connection becomes a CONNECT to hostname (its %OPERATORS%
    rendered per connection) with headers_to_add; 1 MiB comes back intact."""
    echo = upstreams(helpers.EchoServer)
    log = str(tmp_path / "term.log")
    term, tp = terminator(herald, port, echo.port, log)
    tun, lp = tunneler(herald, port, tp, {
        "hostname": "db.example:%DOWNSTREAM_LOCAL_PORT%",
        "headers_to_add": [{"header": {"key": "x-original-port", "value": "%DOWNSTREAM_LOCAL_PORT%"}}]})
    payload = hb.pattern_bytes(1 << 20)
    assert round_trip(lp, payload) == payload
    line = log_lines(log, 1)[0]
    assert line[:5] == ["CONNECT", "db.example:%d" % lp, "HTTP/1.1", "200", str(lp)], line
    assert int(line[5]) == int(line[6]) == len(payload), line
    assert tun.stat("cluster.far.upstream_rq_total") == 1
    assert tun.stat("tcp.tun.downstream_cx_total") == 1


def test_tcp_over_http2_connect_streams_share_a_connection(herald, upstreams, port, tmp_path):
    """An HTTP/2 cluster: three TCP connections at once are three CONNECT
    streams on one HTTP/2 connection, each with its own bytes."""
    echo = upstreams(helpers.EchoServer)
    log = str(tmp_path / "term.log")
    term, tp = terminator(herald, port, echo.port, log)
    tun, lp = tunneler(herald, port, tp, {"hostname": "db.example:5432"}, h2=True)
    results = {}

    def one(i):
        payload = hb.pattern_bytes((128 << 10) + i)
        results[i] = round_trip(lp, payload) == payload
    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == {0: True, 1: True, 2: True}
    assert [x[:4] for x in log_lines(log, 3)] == [["CONNECT", "db.example:5432", "HTTP/2", "200"]] * 3
    assert tun.stat("cluster.far.upstream_cx_http2_total") == 1
    assert tun.stat("cluster.far.upstream_rq_total") == 3


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "http2"])
@pytest.mark.parametrize("early", [b"at once|", b""], ids=["with-bytes", "empty"])
def test_tcp_client_half_closed_before_the_tunnel_is_up(herald, upstreams, port, tmp_path, h2, early):
    """A TCP client that sends its bytes (or none) and half-closes at once,
    before the CONNECT is answered: the end still reaches the echo server
    (a FIN after the 200, or an END_STREAM after the HEADERS), which answers
    and closes, so the client gets its bytes back and then the close."""
    echo = upstreams(helpers.EchoServer)
    term, tp = terminator(herald, port, echo.port, str(tmp_path / "term.log"))
    tun, lp = tunneler(herald, port, tp, {"hostname": "db.example:5432"}, h2=h2)
    with socket.create_connection(("127.0.0.1", lp), timeout=10) as s:
        s.sendall(early)
        s.shutdown(socket.SHUT_WR)
        assert helpers.recv_until_eof(s) == early
    assert echo.accepted == 1


def test_tcp_over_post(herald, upstreams, port):
    """use_post: the client's bytes are a POST's body to post_path, the
    answer's body comes back as the connection's bytes."""
    web = upstreams(HttpBackend, "web")
    tun, lp = tunneler(herald, port, web.port, {"hostname": "upload.example", "use_post": True,
                                                 "post_path": "/tunnel"})
    payload = hb.pattern_bytes(300 << 10)
    back = json.loads(round_trip(lp, payload))
    assert back["method"] == "POST" and back["path"] == "/tunnel", back
    assert back["body_len"] == len(payload) and back["body_sha256"] == hb.sha256(payload)
    assert {k.lower(): v for k, v in back["headers"]}.get("host") == "upload.example", back["headers"]


def test_tunnel_refused_is_a_connect_failure(herald, upstreams, port, tmp_path):
    """A far end that answers the CONNECT with a non-2xx (here 404: it has no
    CONNECT route) is a failed connect attempt: the client's connection is
    closed with nothing sent back, and the access log says UF."""
    far_log = str(tmp_path / "far.log")
    routes = [{"match": {"prefix": ""}, "direct_response": {"status": 403}}]
    fp = port()
    herald({"static_resources": {"listeners": [hb.http_listener(fp, hb.hcm(
        "far", routes, upgrade_configs=[{"upgrade_type": "CONNECT"}],
        access_log=[hb.file_access_log(far_log, LOG_FMT)]), "far")]}})
    tun_log = str(tmp_path / "tun.log")
    tun, lp = tunneler(herald, port, fp, {"hostname": "db.example:5432"}, max_connect_attempts=2,
                       access_log=[hb.file_access_log(tun_log, "%RESPONSE_FLAGS% %UPSTREAM_HOST%\n")])
    try:
        back = round_trip(lp, b"hello")
    except ConnectionResetError:        # closed with "hello" unread: the kernel says RST
        back = b""
    assert back == b""
    assert [x[:4] for x in log_lines(far_log, 2)] == [["CONNECT", "db.example:5432", "HTTP/1.1", "403"]] * 2
    flags = log_lines(tun_log, 1)[0]
    assert "UF" in flags[0].split(",") and "URX" in flags[0].split(","), flags


def test_tunneling_config_errors(tmp_path):
    def cfg(tunneling):
        return {"static_resources": {
            "listeners": [{"name": "t", "address": hb.sock_addr(1), "filter_chains": [{"filters": [
                {"name": "envoy.filters.network.tcp_proxy",
                 "typed_config": {"@type": TCP_TYPE, "stat_prefix": "t", "cluster": "c",
                                  "tunneling_config": tunneling}}]}]}],
            "clusters": [hb.http_cluster("c", [1])]}}
    cases = [
        ({"use_post": True}, r"tunneling_config: .*hostname"),
        ({"hostname": ""}, r"hostname: hostname must not be empty"),
        ({"hostname": "a:1", "post_path": "/x"}, r"post_path: post_path is only for use_post: true"),
        ({"hostname": "a:1", "use_post": True, "post_path": "x"}, r"post_path must start with '/'"),
        ({"hostname": "a:1", "propagate_response_headers": True},
         r"propagate_response_headers: not supported"),
        ({"hostname": "a:%NO_SUCH_OPERATOR%"}, r"hostname: .*NO_SUCH_OPERATOR"),
    ]
    for tunneling, want in cases:
        conftest.config_refused(tmp_path, cfg(tunneling), want, "tun.json")
