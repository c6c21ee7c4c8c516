"""Malformed and hostile HTTP/1 requests: each is answered with the status
Envoy gives it (400, 413, 426, 431, 501), the connection is closed, the
backend never sees it (nor any request smuggled inside it), and it is
counted in http.<stat_prefix>.downstream_cx_protocol_error / downstream_rq_4xx."""

import json
import socket
import time

import pytest

import conftest
import helpers
import http_backends as hb
from http_backends import HttpBackend

H = b"Host: x\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

# (id, raw request, accepted statuses)
CASES = [
    ("garbage_request_line", b"HELLO THERE\r\n\r\n", {400}),
    ("no_version", b"GET /\r\n" + H + b"\r\n", {400, 505}),
    ("space_in_method", b"G ET / HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("control_char_in_target", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("header_without_colon", b"GET / HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n", {400}),
    ("space_before_colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", {400}),
    ("nul_in_header_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", {400}),
    ("bad_char_in_header_name", b"GET / HTTP/1.1\r\n" + H + b"X(A): 1\r\n\r\n", {400}),
    ("missing_host_http11", b"GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n", {400}),
    ("content_length_not_a_number", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n", {400}),
    ("content_length_negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", {400}),
    ("content_length_overflow",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n", {400}),
    # request smuggling shapes (CL.TE, TE.CL, CL.CL, TE obfuscation)
    ("cl_and_te_chunked",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s"
     % (5 + len(SMUGGLED), SMUGGLED), {400}),
    ("te_and_cl_chunked",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n" + SMUGGLED
     + b"\r\n0\r\n\r\n", {400}),
    ("two_content_lengths",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n%s"
     % (len(SMUGGLED), SMUGGLED), {400}),
    ("content_length_list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0, 5\r\n\r\nhello", {400}),
    ("te_chunked_not_last",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", {400, 501}),
    ("te_unknown_coding", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", {400, 501}),
    ("te_xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", {400, 501}),
    ("te_with_tab_obfuscation",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\tchunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", {400}),
    ("two_te_headers",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"
     b"0\r\n\r\n", {400, 501}),
    ("bad_chunk_size", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
     {400}),
    ("chunk_size_overflow",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n", {400}),
    ("chunk_missing_crlf",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n", {400}),
    # limits
    ("headers_too_large", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", {431}),
    ("too_many_headers",
     b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-H%d: v\r\n" % i for i in range(120)) + b"\r\n", {431}),
    ("request_line_too_long", b"GET /" + b"a" * (70 * 1024) + b" HTTP/1.1\r\n" + H + b"\r\n", {431, 414, 400}),
]


def send_raw(lp, data, timeout=3.0):
    """(bytes answered, whether herald closed the connection)."""
    s = socket.create_connection(("127.0.0.1", lp), timeout=timeout)
    out = bytearray()
    closed = False
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not d:
                closed = True
                break
            out += d
    finally:
        s.close()
    return bytes(out), closed


@pytest.mark.parametrize("name,data,want", CASES, ids=[c[0] for c in CASES])
def test_http_malformed_request_rejected(herald, upstreams, port, name, data, want):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port])
    out, closed = send_raw(lp, data)
    assert hb.status_of(out) in want, "%s: wanted %s, got %r" % (name, sorted(want), out[:300])
    assert closed, "%s: herald kept the connection open after the error" % name
    assert hb.statuses_of(out) == [hb.status_of(out)], "more than one response: %r" % out[:500]
    assert b.served() == 0, "%s reached the backend: %s" % (name, [r["target"] for r in b.requests])
    # a 501 or 505 is a 5xx: wait for either class, not for a 4xx that never comes
    answered = lambda: h.stat("http.ingress_http.downstream_rq_4xx") + h.stat("http.ingress_http.downstream_rq_5xx")
    helpers.wait_for(lambda: answered() >= 1)
    assert answered() == 1
    # the listener is fine afterwards
    assert hb.request(lp, "/ok")[0] == 200


def test_http_malformed_requests_counted(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port])
    codec_errors = [c for c in CASES if c[0] not in ("missing_host_http11",)]
    for name, data, want in codec_errors:
        send_raw(lp, data, timeout=2)
    n = len(codec_errors)
    got = h.wait_stat("http.ingress_http.downstream_cx_protocol_error", lambda v: v >= n)
    assert got == n, "downstream_cx_protocol_error %s, %d malformed requests" % (got, n)
    assert b.served() == 0
    assert conftest.scan_log(h.log()) == []


def test_http_smuggled_request_never_reaches_backend_on_reuse(herald, upstreams, port):
    """A valid request followed on the same connection by a CL.TE attack and
    a third request: the first is answered, the attack gets a 400, and
    nothing after it is parsed."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port])
    attack = (b"POST /attack HTTP/1.1\r\n" + H + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"0\r\n\r\n%s" % (5 + len(SMUGGLED), SMUGGLED))
    out, closed = send_raw(lp, b"GET /first HTTP/1.1\r\n" + H + b"\r\n" + attack + b"GET /third HTTP/1.1\r\n"
                           + H + b"\r\n")
    assert hb.statuses_of(out) == [200, 400], out[-400:]
    assert closed
    assert [r["target"] for r in b.requests] == ["/first"]


def test_http_max_request_headers_kb(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], max_request_headers_kb=8)
    ok = b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"a" * 6000 + b"\r\n\r\n"
    out, _ = send_raw(lp, ok + b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert hb.statuses_of(out) == [200, 200], out[:200]
    out, closed = send_raw(lp, b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"a" * 9000 + b"\r\n\r\n")
    assert hb.status_of(out) == 431 and closed
    assert b.served() == 2


def test_http_headers_with_underscores_rejected(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], common_http_protocol_options={
        "headers_with_underscores_action": "REJECT_REQUEST"})
    out, closed = send_raw(lp, b"GET / HTTP/1.1\r\n" + H + b"X_Under: 1\r\n\r\n")
    assert hb.status_of(out) == 400, out[:200]
    assert b.served() == 0


def test_http_request_body_too_large_is_413(herald, upstreams, port, tmp_path):
    """Envoy's 413 comes from a filter that buffers the body (the buffer
    filter's max_request_bytes); the router alone streams any size."""
    b = upstreams(HttpBackend, "b")
    buffer_filter = {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1024}}
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(port(), hb.hcm("ingress_http", [hb.route("/", "backend")], [buffer_filter]))],
        "clusters": [hb.http_cluster("backend", [b.port])]}}
    path = tmp_path / "buffer.json"
    path.write_text(json.dumps(cfg))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
    assert r.returncode == 0, r.stderr
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[buffer_filter])
    status, headers, body = hb.request(lp, "/", method="POST", body=b"x" * 4096)
    assert status == 413
    assert hb.request(lp, "/", method="POST", body=b"x" * 100)[0] == 200
    assert h.stat("http.ingress_http.downstream_rq_too_large") == 1
