"""HTTP/1.1 on the wire through herald: keep-alive and upstream connection
pooling, HTTP/1.0, pipelining, chunked bodies both ways, large bodies,
100-continue, HEAD/204/304 framing, websocket upgrade, and a short wrk load."""

import hashlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

import http_backends as hb
from helpers import wait_for
from http_backends import HttpBackend


def one_backend(herald, upstreams, port, name="b", **kw):
    b = upstreams(HttpBackend, name)
    h, lp = hb.start_proxy(herald, port, [b.port], **kw)
    return h, lp, b


def conn(lp, timeout=5.0):
    return http.client.HTTPConnection("127.0.0.1", lp, timeout=timeout)


def fetch(c, method, path, body=None, headers=None, **kw):
    c.request(method, path, body=body, headers=headers or {}, **kw)
    r = c.getresponse()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()


# ------------------------------------------------------------------ connections


def test_http_keepalive_and_upstream_pooling(herald, upstreams, port):
    h, lp, b = one_backend(herald, upstreams, port)
    c = conn(lp)
    try:
        for i in range(20):
            status, headers, body = fetch(c, "GET", "/k%d" % i)
            assert status == 200 and b'"/k%d"' % i in body
    finally:
        c.close()
    assert h.wait_stat("http.ingress_http.downstream_rq_total", lambda v: v >= 20) == 20
    assert h.stat("http.ingress_http.downstream_cx_total") == 1, "20 requests on one client connection"
    # the upstream connection is reused from the pool: one connection, 20 requests
    assert b.accepted == 1, "upstream connections: %d" % b.accepted
    assert [r["conn_req"] for r in b.requests] == list(range(1, 21))
    assert h.stat("cluster.backend.upstream_cx_total") == 1
    # a second client reuses the idle pooled connection too
    for i in range(3):
        assert hb.request(lp, "/again")[0] == 200
    assert b.accepted == 1
    assert h.stat("cluster.backend.upstream_rq_total") == 23


def test_http_connection_close(herald, upstreams, port):
    h, lp, b = one_backend(herald, upstreams, port)
    out = hb.raw(lp, b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert hb.status_of(out) == 200 and re.search(rb"(?i)\r\nconnection: close\r\n", out), out[:300]
    assert out.endswith(b"\n"), "herald closed once the response was complete"


def test_http10_refused_by_default(herald, upstreams, port):
    """Envoy's default (http_protocol_options.accept_http_10: false): 426."""
    h, lp, b = one_backend(herald, upstreams, port)
    out = hb.raw(lp, b"GET /ten HTTP/1.0\r\nHost: x\r\n\r\n")
    assert hb.status_of(out) == 426, out[:200]
    assert b.served() == 0


def test_http10_accepted_when_enabled(herald, upstreams, port):
    h, lp, b = one_backend(herald, upstreams, port, http_protocol_options={
        "accept_http_10": True, "default_host_for_http_10": "default.test"})
    # no keep-alive: answered and closed
    out = hb.raw(lp, b"GET /ten HTTP/1.0\r\n\r\n")
    assert hb.status_of(out) == 200 and b'"/ten"' in out, out[:300]
    assert ["host", "default.test"] in [[k.lower(), v] for k, v in b.requests[-1]["headers"]]
    # with keep-alive: two requests on one connection
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    try:
        r = hb.Reader(s)
        for i in range(2):
            s.sendall(b"GET /ka%d HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n" % i)
            status, headers, body = hb.read_response(r)
            assert status == 200 and b"/ka%d" % i in body
    finally:
        s.close()


def test_http_pipelined_requests_answered_in_order(herald, upstreams, port):
    h, lp, b = one_backend(herald, upstreams, port)
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    try:
        s.sendall(b"".join(b"GET /p%d?delay_ms=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i, (3 - i) * 30)
                           for i in range(4)))
        r = hb.Reader(s)
        for i in range(4):
            status, headers, body = hb.read_response(r)
            assert status == 200, i
            assert b'"/p%d' % i in body, "response %d out of order: %r" % (i, body[:120])
    finally:
        s.close()


def test_http_idle_client_connection_closed(herald, upstreams, port):
    h, lp, b = one_backend(herald, upstreams, port,
                           common_http_protocol_options={"idle_timeout": "0.5s"})
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        r = hb.Reader(s)
        assert hb.read_response(r)[0] == 200
        t0 = time.monotonic()
        s.settimeout(5)
        assert s.recv(100) == b""
        assert time.monotonic() - t0 < 3
    finally:
        s.close()
    assert h.wait_stat("http.ingress_http.downstream_cx_idle_timeout", lambda v: v >= 1) == 1


# ------------------------------------------------------------------ bodies


def test_http_chunked_request_body_to_upstream(herald, upstreams, port):
    h, lp, b = one_backend(herald, upstreams, port)
    pieces = [os.urandom(n) for n in (1, 100, 5000, 70000, 3)]
    data = b"".join(pieces)
    c = conn(lp)
    try:
        status, headers, body = fetch(c, "POST", "/up", body=iter(pieces), encode_chunked=True,
                                      headers={"Transfer-Encoding": "chunked"})
        assert status == 200, body[:200]
        # and the connection still works after a chunked request
        assert fetch(c, "GET", "/after")[0] == 200
    finally:
        c.close()
    req = b.requests[0]
    assert req["body_len"] == len(data) and req["body_sha256"] == hashlib.sha256(data).hexdigest()
    # curl with a chunked upload
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
                        "http://127.0.0.1:%d/curl-chunked" % lp], input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=15)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(data).hexdigest().encode() in r.stdout


def test_http_chunked_response_to_client(herald, upstreams, port):
    h, lp, b = one_backend(herald, upstreams, port)
    c = conn(lp)
    try:
        status, headers, body = fetch(c, "GET", "/down?chunks=7&bytes=100000")
        assert status == 200
        assert len(body) == 100000 and hashlib.sha256(body).hexdigest() == headers["x-body-sha256"]
        assert headers.get("transfer-encoding") == "chunked" or headers.get("content-length") == "100000"
        status, headers, body = fetch(c, "GET", "/down2?chunks=3")
        assert status == 200 and b'"/down2' in body
    finally:
        c.close()
    # a close-delimited upstream body reaches the client whole
    status, headers, body = hb.request(lp, "/eof?close=after&bytes=50000")
    assert status == 200 and len(body) == 50000, len(body)
    assert hashlib.sha256(body).hexdigest() == headers["x-body-sha256"]


@pytest.mark.parametrize("size", [0, 1, 1 << 20, 8 << 20])
def test_http_large_bodies_both_ways(herald, upstreams, port, size):
    h, lp, b = one_backend(herald, upstreams, port)
    data = hb.pattern_bytes(size)
    status, headers, body = hb.request(lp, "/big", method="PUT", body=data, timeout=30)
    assert status == 200, body[:200]
    assert b.requests[-1]["body_len"] == size
    assert b.requests[-1]["body_sha256"] == hashlib.sha256(data).hexdigest()
    status, headers, body = hb.request(lp, "/big?bytes=%d" % size, timeout=30)
    assert status == 200 and len(body) == size
    assert hashlib.sha256(body).hexdigest() == headers["x-body-sha256"]


def test_http_response_trailers_forwarded_when_enabled(herald, upstreams, port):
    h, lp, b = one_backend(herald, upstreams, port, http_protocol_options={"enable_trailers": True})
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    try:
        s.sendall(b"GET /t?chunks=2&trailer=1 HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        r = hb.Reader(s)
        line = r.readline()
        assert b" 200 " in line
        headers = hb.read_headers(r)
        assert "chunked" in (hb.hget(headers, "transfer-encoding") or "")
        body, trailers = hb.read_chunked(r)
        assert b'"/t' in body
        assert ("x-trailer", "done") in [(k.lower(), v) for k, v in trailers], trailers
    finally:
        s.close()


# ------------------------------------------------------------------ 100-continue


def test_http_expect_100_continue(herald, upstreams, port):
    h, lp, b = one_backend(herald, upstreams, port)
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    body = b"x" * 1000
    try:
        s.sendall(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
        s.settimeout(3)
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), \
            "no 100 Continue before the body was sent: %r" % first[:200]
        s.sendall(body)
        r = hb.Reader(s)
        r.buf += first[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        status, headers, rbody = hb.read_response(r)
        assert status == 200
    finally:
        s.close()
    assert b.requests[-1]["body_len"] == 1000
    assert b.requests[-1]["body_sha256"] == hashlib.sha256(body).hexdigest()
    # curl sends Expect: 100-continue and waits for it (1s by default) before the body
    data = os.urandom(2 << 20)
    t0 = time.monotonic()
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Expect: 100-continue", "--expect100-timeout", "5",
                        "--data-binary", "@-", "-w", "\n%{http_code}", "http://127.0.0.1:%d/curl" % lp],
                       input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=15)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(b"\n200")
    assert time.monotonic() - t0 < 4, "curl waited for the 100 Continue that never came"
    assert b.requests[-1]["body_sha256"] == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ HEAD, 204, 304


def test_http_head_204_304_framing(herald, upstreams, port):
    h, lp, b = one_backend(herald, upstreams, port)
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    try:
        r = hb.Reader(s)
        # each answer has no body; the next request on the connection still
        # parses, so herald neither waited for nor sent body bytes
        for method, path, want in (("HEAD", "/h", 200), ("GET", "/n?status=204", 204),
                                   ("GET", "/nm?status=304", 304), ("HEAD", "/h2?bytes=5000", 200),
                                   ("GET", "/last", 200)):
            s.sendall(b"%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method.encode(), path.encode()))
            status, headers, body = hb.read_response(r, method)
            assert status == want, (method, path, status)
            if method == "HEAD" and "bytes" in path:
                assert hb.hget(headers, "content-length") == "5000", headers
            if status == 204:
                assert hb.hget(headers, "content-length") is None and \
                    hb.hget(headers, "transfer-encoding") is None, headers
        assert b'"/last"' in body
        s.settimeout(0.3)
        try:
            extra = s.recv(100)
        except socket.timeout:
            extra = b""
        assert extra == b"", "bytes after the last response: %r" % extra
    finally:
        s.close()
    r = hb.curl("-I", "http://127.0.0.1:%d/curl-head" % lp)
    assert r.returncode == 0 and r.stdout.startswith("HTTP/1.1 200"), r.stdout + r.stderr


# ------------------------------------------------------------------ websocket


def test_http_websocket_upgrade_echo(herald, upstreams, port):
    h, lp, b = one_backend(herald, upstreams, port, upgrade_configs=[{"upgrade_type": "websocket"}])
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    try:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        r = hb.Reader(s)
        status, headers, _ = hb.read_response(r)
        assert status == 101, headers
        assert hb.hget(headers, "sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert (hb.hget(headers, "upgrade") or "").lower() == "websocket"
        for opcode, payload in ((1, b"hello"), (2, os.urandom(70000)), (1, b"")):
            s.sendall(hb.ws_frame(opcode, payload))
            assert hb.ws_read_frame(r) == (opcode, payload)
        s.sendall(hb.ws_frame(8, b"\x03\xe8"))
        assert hb.ws_read_frame(r) == (8, b"\x03\xe8")
    finally:
        s.close()
    assert h.wait_stat("http.ingress_http.downstream_cx_upgrades_total", lambda v: v >= 1) == 1
    upstream_headers = dict((k.lower(), v) for k, v in b.requests[0]["headers"])
    assert upstream_headers.get("upgrade", "").lower() == "websocket", upstream_headers


def test_http_websocket_refused_without_upgrade_config(herald, upstreams, port):
    """Envoy answers an upgrade the route does not allow with 403 and counts
    downstream_rq_ws_on_non_ws_route."""
    h, lp, b = one_backend(herald, upstreams, port)
    out = hb.raw(lp, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 timeout=2, read_until_close=False)
    assert hb.status_of(out) == 403, out[:200]
    assert b.served() == 0
    assert h.wait_stat("http.ingress_http.downstream_rq_ws_on_non_ws_route", lambda v: v >= 1) == 1


# ------------------------------------------------------------------ load


def test_http_wrk_short_load(herald, upstreams, port, report):
    if not shutil.which("wrk"):
        pytest.skip("no wrk")
    h, fp, backends = hb.start_front(herald, upstreams, port, concurrency=2)
    r = subprocess.run(["wrk", "-t2", "-c16", "-d2s", "--timeout", "2s", "http://127.0.0.1:%d/" % fp],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    assert r.returncode == 0, r.stdout
    m = re.search(r"(\d+) requests in", r.stdout)
    assert m, r.stdout
    total = int(m.group(1))
    assert total >= 200, r.stdout
    assert "Non-2xx" not in r.stdout, r.stdout
    assert "Socket errors" not in r.stdout, r.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    report("http: wrk -t2 -c16 -d2s through the front proxy to 4 python backends: %s rq/s" %
           (rps.group(1) if rps else "?"))
    counts = [b.served() for b in backends]
    assert min(counts) > 0 and max(counts) - min(counts) <= max(16, total // 10), counts
    h.wait_stat("http.ingress_http.downstream_rq_2xx", lambda v: v >= total)
    assert h.stat("http.ingress_http.downstream_rq_2xx") >= total
    # pooled: far fewer upstream connections than requests
    assert sum(b.accepted for b in backends) <= 64, [b.accepted for b in backends]
    assert h.alive()


KEEP_ALIVE_GET = b"GET /dc HTTP/1.1\r\nHost: x\r\n\r\n"


def _reset_after_response(lp, within, request=KEEP_ALIVE_GET):
    """Sends `request`, reads the response to EOF (herald's close or
    half-close), then keeps writing: seconds until herald's full close shows
    as a reset, or None when none came within `within` seconds."""
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    s.sendall(request)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    assert hb.status_of(out) == 200, out[:200]
    assert b"\r\nconnection: close\r\n" in out.lower(), out[:300]
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < within:
            s.sendall(b"x" * 100)
            time.sleep(0.05)
    except (BrokenPipeError, ConnectionResetError):
        return time.monotonic() - t0
    finally:
        s.close()
    return None


def test_delayed_close_timeout(herald, upstreams, port):
    """When herald ends a connection whose client may still be sending (here a
    keep-alive client past max_requests_per_connection), it half-closes and
    keeps reading what the client sends for delayed_close_timeout (default
    1 s), so the close is no reset; 0s closes at once and further client bytes
    meet a reset."""
    once = {"common_http_protocol_options": {"max_requests_per_connection": 1}}
    h, lp, b = one_backend(herald, upstreams, port, **once)
    assert _reset_after_response(lp, 0.4) is None              # the default second of grace
    h2, lp2, _ = one_backend(herald, upstreams, port, delayed_close_timeout="0s", **once)
    took = _reset_after_response(lp2, 2.0)
    assert took is not None and took < 1.0, took
    # longer than the default: still reading after the default second, closed after its own
    h3, lp3, _ = one_backend(herald, upstreams, port, delayed_close_timeout="2.5s", **once)
    took = _reset_after_response(lp3, 6.0)
    assert took is not None and 1.3 <= took < 6.0, took


def _half_closed_exchange(lp, req):
    """Sends req, shuts the write side, reads to EOF: the bytes, or the
    exception that ended the read."""
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    out = b""
    try:
        s.sendall(req)
        s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    except ConnectionResetError as e:
        return e
    finally:
        s.close()


def test_client_half_close_after_a_last_request(herald, upstreams, port):
    """A client that sends a request that asks to close (Connection: close, or
    HTTP/1.0 without keep-alive) and then shuts its write side, as fortio
    -halfclose does, has finished sending, not given up: it gets the whole
    answer, then herald's close (Envoy resets it: envoyproxy/envoy#2066). A
    keep-alive client's FIN with its answer outstanding still ends the
    exchange, as in Envoy: the upstream request is reset and counted."""
    h, lp, b = one_backend(herald, upstreams, port, http_protocol_options={"accept_http_10": True})
    body = b"y" * 70000
    for req, path in ((b"GET /hc1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"/hc1"),
                      (b"GET /hc2 HTTP/1.0\r\nHost: x\r\n\r\n", b"/hc2"),
                      (b"POST /hc3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                       % len(body) + body, b"/hc3")):
        out = _half_closed_exchange(lp, req)
        assert isinstance(out, bytes) and hb.status_of(out) == 200, (req[:40], out)
        assert b'"%s"' % path in out, out[:600]
    assert h.stat("http.ingress_http.downstream_cx_destroy_remote_active_rq") == 0
    # keep-alive: the FIN is the client going away
    out = _half_closed_exchange(lp, b"GET /hc4?delay_ms=500 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not (isinstance(out, bytes) and hb.status_of(out) == 200), out
    assert wait_for(lambda: h.stat("http.ingress_http.downstream_cx_destroy_remote_active_rq") == 1, 3)
    assert h.alive()


def test_no_linger_for_a_client_that_asked_to_close(herald, upstreams, port):
    """A client that sent its whole request with "Connection: close" (or as
    HTTP/1.0 without keep-alive) sends nothing more, so herald closes at once
    instead of lingering for delayed_close_timeout: its descriptor is free
    at once, and a client that writes anyway meets a reset. A request whose
    body is still on its way keeps the linger."""
    h, lp, b = one_backend(herald, upstreams, port, delayed_close_timeout="3s",
                           http_protocol_options={"accept_http_10": True})
    for req in (b"GET /dc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                b"GET /dc HTTP/1.0\r\nHost: x\r\n\r\n"):
        took = _reset_after_response(lp, 2.0, req)
        assert took is not None and took < 1.0, (req, took)
    # answered before its body came: the client is still sending, so herald lingers
    h2, lp2, _ = one_backend(herald, upstreams, port, delayed_close_timeout="3s",
                             routes=[hb.route("/early", direct_response={"status": 200})])
    req = b"POST /early HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n"
    assert _reset_after_response(lp2, 0.4, req) is None
