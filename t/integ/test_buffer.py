"""envoy.filters.http.buffer against real clients and backends: a request
body reaches the backend only once all of it has arrived (chunked ones with
a content-length), a body over max_request_bytes gets a 413 and nothing goes
upstream, per-route BufferPerRoute (disabled, another limit, the most
specific level), HTTP/2, upgrades left alone, and clear errors for bad
configs."""

import json
import socket
import subprocess
import time

import pytest

import conftest
import helpers
import http_backends as hb
from http_backends import HttpBackend

BUFFER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute"
NAME = "envoy.filters.http.buffer"
TOO_LARGE = "http.ingress_http.downstream_rq_too_large"


def buffer_filter(max_request_bytes):
    return {"name": NAME, "typed_config": {"@type": BUFFER_TYPE, "max_request_bytes": max_request_bytes}}


def per_route(**cfg):
    return {NAME: dict(cfg, **{"@type": PER_ROUTE_TYPE})}


def route_with(prefix, **cfg):
    r = hb.route(prefix, "backend")
    r["typed_per_filter_config"] = per_route(**cfg)
    return r


def chunked(body, pieces):
    """body as an HTTP/1.1 chunked encoding in `pieces` chunks."""
    step = max(1, -(-len(body) // pieces))
    out = bytearray()
    for i in range(0, len(body), step):
        piece = body[i:i + step]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return bytes(out) + b"0\r\n\r\n"


def post_head(path, framing):
    return b"POST %s HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % (path.encode(), framing.encode())


def exchange(lp, first, rest=b"", pause=0.0, between=None, timeout=10):
    """Sends first, waits pause seconds (calling between() then, if given),
    sends rest, and reads one response: (status, headers, body, between's result)."""
    s = socket.create_connection(("127.0.0.1", lp), timeout=timeout)
    try:
        s.sendall(first)
        seen = None
        if pause:
            time.sleep(pause)
        if between:
            seen = between()
        if rest:
            s.sendall(rest)
        status, headers, body = hb.read_response(hb.Reader(s))
        return status, headers, body, seen
    finally:
        s.close()


def backend_headers(rq):
    return {k.lower(): v for k, v in rq["headers"]}


def assert_whole(rq, body):
    """The backend got body intact, with its length and no chunked framing."""
    assert rq["body_len"] == len(body) and rq["body_sha256"] == hb.sha256(body), rq
    hdrs = backend_headers(rq)
    assert hdrs.get("content-length") == str(len(body)), hdrs
    assert "transfer-encoding" not in hdrs and not rq["chunked"], hdrs


def test_buffer_chunked_request_arrives_whole_with_content_length(herald, upstreams, port):
    """Nothing reaches the backend while the body is incomplete; then one
    request with content-length set to the body's size."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[buffer_filter(65536)])
    body = hb.pattern_bytes(20000)
    wire = chunked(body, 5)
    half = len(wire) // 2
    status, headers, resp, seen = exchange(lp, post_head("/up", "Transfer-Encoding: chunked") + wire[:half],
                                           wire[half:], pause=0.5, between=lambda: (b.accepted, b.served()))
    assert seen == (0, 0), "the backend saw the request before its body ended: %r" % (seen,)
    assert status == 200 and hb.hget(headers, "x-backend") == "b", (status, headers)
    assert json.loads(resp)["body_len"] == len(body)
    assert b.served() == 1
    assert_whole(b.requests[0], body)
    # a request without a body is not held and gets no content-length
    status, _, got = hb.get_json(lp, "/get")
    assert status == 200 and "content-length" not in backend_headers(got), got
    assert h.stat(TOO_LARGE) == 0


def test_buffer_content_length_kept(herald, upstreams, port):
    """A body that came with its content-length keeps it; exactly
    max_request_bytes still goes through."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[buffer_filter(4096)])
    body = hb.pattern_bytes(4096)
    status, _, _, _ = exchange(lp, post_head("/exact", "Content-Length: 4096") + body[:1000], body[1000:],
                               pause=0.2)
    assert status == 200
    assert_whole(b.requests[0], body)


def test_buffer_chunked_body_over_limit_is_413(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[buffer_filter(1024)])
    body = hb.pattern_bytes(4096)
    status, headers, resp, _ = exchange(lp, post_head("/big", "Transfer-Encoding: chunked") + chunked(body, 8))
    assert status == 413 and resp == b"Payload Too Large", (status, resp)
    assert h.wait_stat(TOO_LARGE, lambda v: v == 1) == 1
    assert b.accepted == 0 and b.requests == [], b.requests
    # the listener goes on serving; a body under the limit passes
    small = hb.pattern_bytes(1000)
    assert hb.request(lp, "/small", method="POST", body=small)[0] == 200
    assert_whole(b.requests[0], small)
    assert h.stat(TOO_LARGE) == 1


def test_buffer_content_length_over_limit_is_413(herald, upstreams, port):
    """One byte over, sent in one piece with its content-length: 413."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[buffer_filter(1024)])
    status, _, resp = hb.request(lp, "/over", method="POST", body=hb.pattern_bytes(1025))
    assert status == 413 and resp == b"Payload Too Large", (status, resp)
    assert h.wait_stat(TOO_LARGE, lambda v: v == 1) == 1
    assert b.accepted == 0 and b.requests == []
    # ... and in pieces
    body = hb.pattern_bytes(3000)
    status, _, _, _ = exchange(lp, post_head("/over2", "Content-Length: 3000") + body[:800], body[800:],
                               pause=0.2)
    assert status == 413
    assert h.wait_stat(TOO_LARGE, lambda v: v == 2) == 2
    assert b.accepted == 0 and b.requests == []


def test_buffer_per_route_disabled_streams_through(herald, upstreams, port):
    """disabled: true on a route: a body far over the limit streams to the
    backend (which has the request before the client has sent all of it);
    other routes still buffer."""
    b = upstreams(HttpBackend, "b")
    routes = [route_with("/stream", disabled=True), hb.route("/", "backend")]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes, http_filters=[buffer_filter(1024)])
    body = hb.pattern_bytes(1 << 20)
    head = post_head("/stream", "Content-Length: %d" % len(body))
    status, _, _, seen = exchange(lp, head + body[:4096], body[4096:],
                                  between=lambda: helpers.wait_for(lambda: b.accepted >= 1, 5))
    assert seen, "the backend got nothing before the body ended: the route was buffered"
    assert status == 200
    assert_whole(b.requests[0], body)
    status, _, _ = hb.request(lp, "/other", method="POST", body=body[:2048])
    assert status == 413 and b.served() == 1
    assert h.stat(TOO_LARGE) == 1


def test_buffer_per_route_limits(herald, upstreams, port):
    """A route's buffer.max_request_bytes replaces the filter's, bigger or
    smaller."""
    b = upstreams(HttpBackend, "b")
    routes = [route_with("/big", buffer={"max_request_bytes": 65536}),
              route_with("/small", buffer={"max_request_bytes": 512}), hb.route("/", "backend")]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes, http_filters=[buffer_filter(4096)])
    big, mid = hb.pattern_bytes(30000), hb.pattern_bytes(1000)

    def post(path, body):
        return exchange(lp, post_head(path, "Transfer-Encoding: chunked") + chunked(body, 4))[0]

    assert post("/big/x", big) == 200          # over the filter's 4096, under the route's 65536
    assert_whole(b.requests[-1], big)
    assert post("/other", big) == 413
    assert post("/small/x", mid) == 413        # under the filter's 4096, over the route's 512
    assert post("/other", mid) == 200
    assert_whole(b.requests[-1], mid)
    assert b.served() == 2
    assert h.wait_stat(TOO_LARGE, lambda v: v == 2) == 2


def test_buffer_most_specific_level_counts(herald, upstreams, port):
    """The virtual host's BufferPerRoute applies to its routes, a route's own
    replaces it."""
    b = upstreams(HttpBackend, "b")
    routes = [route_with("/free", disabled=True), hb.route("/", "backend")]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes, http_filters=[buffer_filter(65536)],
                           vhost_extra={"typed_per_filter_config": per_route(buffer={"max_request_bytes": 100})})
    body = hb.pattern_bytes(5000)
    assert hb.request(lp, "/x", method="POST", body=body)[0] == 413
    assert hb.request(lp, "/free", method="POST", body=body)[0] == 200
    assert b.served() == 1 and b.requests[0]["path"] == "/free"


def h2_post(lp, path, body):
    """curl over h2c with the body from stdin (-T -: no content-length), so
    the buffer filter must supply it: (status, stdout)."""
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--http2-prior-knowledge", "-X", "POST", "-T", "-",
                        "-o", "-", "-w", "\n%{http_code} %{http_version}",
                        "http://127.0.0.1:%d%s" % (lp, path)],
                       input=body, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode("latin-1")
    resp, _, tail = out.rpartition("\n")
    code, version = tail.split()
    assert version == "2", tail
    return int(code), resp


def test_buffer_http2(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[buffer_filter(65536)])
    body = hb.pattern_bytes(50000)
    status, resp = h2_post(lp, "/h2", body)
    assert status == 200 and json.loads(resp)["body_len"] == len(body), resp
    assert_whole(b.requests[0], body)
    status, resp = h2_post(lp, "/h2big", hb.pattern_bytes(70000))
    assert status == 413 and resp == "Payload Too Large", (status, resp)
    assert h.wait_stat(TOO_LARGE, lambda v: v == 1) == 1
    assert b.served() == 1


def h2_post_with_trailers(lp, path, pieces, timeout=2.0):
    """POST over h2c (python3-h2): the body in DATA frames a little apart,
    then trailers end the stream; the response status, or None."""
    import h2.config
    import h2.connection
    import h2.events
    s = socket.create_connection(("127.0.0.1", lp), timeout=timeout)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    c.send_headers(1, [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "x")])
    for p in pieces:
        c.send_data(1, p)
        s.sendall(c.data_to_send())
        time.sleep(0.05)
    c.send_headers(1, [("x-req-trailer", "yes")], end_stream=True)
    s.sendall(c.data_to_send())
    status, deadline = None, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            d = s.recv(65536)
            if not d:
                break
            for e in c.receive_data(d):
                if isinstance(e, h2.events.ResponseReceived):
                    status = int(dict(e.headers)[":status"])
                if isinstance(e, h2.events.StreamEnded):
                    return status
            s.sendall(c.data_to_send())
    except socket.timeout:
        pass
    finally:
        s.close()
    return None


def test_buffer_request_trailers_end_the_body(herald, upstreams, port):
    """Trailers end a buffered body as its last bytes do: the backend gets the
    whole body with its content-length (HTTP/1.1 chunked and HTTP/2)."""
    pytest.importorskip("h2")
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[buffer_filter(65536)])
    body = hb.pattern_bytes(3000)
    head = post_head("/h1", "Transfer-Encoding: chunked\r\nTE: trailers")
    wire = chunked(body, 3)[:-len(b"0\r\n\r\n")]
    try:
        status = exchange(lp, head + wire, b"0\r\nx-req-trailer: yes\r\n\r\n", pause=0.2, timeout=2)[0]
    except socket.timeout:
        status = None
    assert status == 200, "HTTP/1.1 chunked request with trailers: no answer"
    assert_whole(b.requests[0], body)
    assert h2_post_with_trailers(lp, "/h2", [body[:1000], body[1000:]]) == 200, "HTTP/2: no answer"
    assert_whole(b.requests[1], body)


def test_buffer_websocket_upgrade_not_held(herald, upstreams, port):
    """An upgrade's body is the tunnel: it is not waited for (Envoy's filter
    would hold the handshake until the tunnel ends)."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[buffer_filter(1024)],
                           upgrade_configs=[{"upgrade_type": "websocket"}])
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    try:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        r = hb.Reader(s)
        assert r.readline().startswith(b"HTTP/1.1 101"), "no 101"
        hb.read_headers(r)
        payload = hb.pattern_bytes(3000)          # more than max_request_bytes, through the tunnel
        s.sendall(hb.ws_frame(2, payload))
        assert hb.ws_read_frame(r) == (2, payload)
        s.sendall(hb.ws_frame(8, b""))
        assert hb.ws_read_frame(r)[0] == 8
    finally:
        s.close()
    assert h.stat(TOO_LARGE) == 0


def test_buffer_bad_configs(tmp_path):
    def with_route_config(cfg):
        return [route_with("/", **cfg)]

    plain = [hb.route("/", "backend")]
    cases = [
        (plain, {"@type": BUFFER_TYPE}, r"missing required field 'max_request_bytes'"),
        (plain, {"@type": BUFFER_TYPE, "max_request_bytes": 0},
         r"max_request_bytes: max_request_bytes must be from 1 to 4294967295"),
        (plain, {"@type": BUFFER_TYPE, "max_request_bytes": 4294967296}, r"max_request_bytes: .*4294967295"),
        (plain, {"@type": BUFFER_TYPE, "max_request_bytes": 100, "max_request_time": "5s"},
         r"max_request_time.* is no longer a field"),
        (with_route_config({"disabled": False}), {"@type": BUFFER_TYPE, "max_request_bytes": 100},
         r"typed_per_filter_config\.envoy\.filters\.http\.buffer\.disabled: disabled must be true"),
        (with_route_config({}), {"@type": BUFFER_TYPE, "max_request_bytes": 100},
         r"BufferPerRoute needs disabled: true or buffer"),
        (with_route_config({"buffer": {}}), {"@type": BUFFER_TYPE, "max_request_bytes": 100},
         r"missing required field 'max_request_bytes'"),
        (with_route_config({"disabled": True, "buffer": {"max_request_bytes": 1}}),
         {"@type": BUFFER_TYPE, "max_request_bytes": 100}, r"only one of them may be \(oneof override\)"),
    ]
    for routes, tc, want in cases:
        cfg = {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", routes, [{"name": NAME, "typed_config": tc}]))],
            "clusters": [hb.http_cluster("backend", [1])]}}
        conftest.config_refused(tmp_path, cfg, want, "buf.json", indent=1)
    # and a good one passes
    good = {"static_resources": {
        "listeners": [hb.http_listener(1, hb.hcm("x", with_route_config({"buffer": {"max_request_bytes": 9}}),
                                                 [buffer_filter(100)]))],
        "clusters": [hb.http_cluster("backend", [1])]}}
    path = tmp_path / "good.json"
    path.write_text(json.dumps(good))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
    assert r.returncode == 0, r.stderr
