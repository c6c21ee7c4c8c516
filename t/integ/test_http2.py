"""HTTP/2 from clients (issue 4, items 3 and 4, downstream half): h2c with
prior knowledge and h2 over TLS (ALPN) through the front proxy to HTTP/1
backends, with real peers (curl, h2load, nghttp) for the protocol and
python3-h2 for the abuse cases (rapid reset, CONTINUATION / SETTINGS / PING
floods, too many streams)."""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

import http_backends as hb

h2 = pytest.importorskip("h2")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip("needs " + tool)


def curl(*args, timeout=60):
    return subprocess.run(["curl", "-sS", "--max-time", "50"] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def front(herald, upstreams, port, tls=None, **hcm_extra):
    """The front proxy; tls=(cert, key) puts a DownstreamTlsContext with ALPN h2,http/1.1 on it."""
    backends = [upstreams(hb.HttpBackend, n) for n in ("app1", "app2", "app3", "app4")]
    fp = port()
    cfg = hb.front_proxy(fp, [b.port for b in backends], **hcm_extra)
    if tls:
        cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": DOWN, "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{"certificate_chain": {"filename": tls[0]},
                                      "private_key": {"filename": tls[1]}}]}}}
    h = herald(cfg)
    return h, fp, backends


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    need("openssl")
    d = str(tmp_path_factory.mktemp("h2pki"))
    crt, key = os.path.join(d, "h.crt"), os.path.join(d, "h.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-subj", "/CN=localhost", "-days", "2", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return crt, key


def stat(h, name):
    return h.stats().get(name, 0)


def wait_stat(h, name, pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    v = None
    while time.monotonic() < deadline:
        v = stat(h, name)
        if pred(v):
            return v
        time.sleep(0.05)
    return v


def header(out, name):
    m = re.search(r"(?im)^%s: *(.*?)\r?$" % re.escape(name), out)
    return m.group(1) if m else None


# ------------------------------------------------------------------ h2 client helpers (python3-h2)


class H2Client:
    def __init__(self, port, settings=None, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                         header_encoding="utf-8"))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.events = []

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def read_events(self, until, timeout=5.0):
        """Reads until until(events) is true or the connection closes; returns all events."""
        deadline = time.monotonic() + timeout
        saved = self.sock.gettimeout()
        while not until(self.events) and time.monotonic() < deadline:
            # recv waits no longer than what is left of timeout (the socket's own is 5 s)
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            finally:
                try:
                    self.sock.settimeout(saved)
                except OSError:
                    pass
            if not data:
                self.events.append("EOF")
                break
            try:
                self.events += self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.events.append("PROTOCOL_ERROR")
                break
            self.flush()
        return self.events

    def closed(self):
        return "EOF" in self.events or any(isinstance(e, h2.events.ConnectionTerminated) for e in self.events)

    def goaway(self):
        for e in self.events:
            if isinstance(e, h2.events.ConnectionTerminated):
                return e
        return None


def req_headers(path, method="GET", authority="front"):
    return [(":method", method), (":path", path), (":scheme", "http"), (":authority", authority)]


def raw_frame(ftype, flags, stream_id, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream_id.to_bytes(4, "big") + payload


def raw_conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(PREFACE + raw_frame(4, 0, 0))   # empty SETTINGS
    return s


def drain_until_closed(s, timeout=10.0):
    """Reads (and drops) until the peer closes; returns (closed, bytes seen)."""
    deadline = time.monotonic() + timeout
    seen = b""
    s.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            d = s.recv(1 << 16)
        except socket.timeout:
            continue
        except OSError:
            return True, seen
        if not d:
            return True, seen
        seen += d[:4096] if len(seen) < 65536 else b""
    return False, seen


def goaway_code(data):
    """The error code of the first GOAWAY frame in data, or None."""
    i = 0
    while i + 9 <= len(data):
        ln = int.from_bytes(data[i:i + 3], "big")
        if data[i + 3] == 7 and i + 9 + 8 <= len(data):
            return int.from_bytes(data[i + 13:i + 17], "big")
        i += 9 + ln
    return None


def still_serves(port):
    r = curl("--http2-prior-knowledge", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             "http://127.0.0.1:%d/app1/ok" % port)
    return r.stdout.decode() == "200"


# ------------------------------------------------------------------ real peers


def test_h2c_prior_knowledge_routes_and_headers(herald, upstreams, port, tmp_path):
    need("curl")
    log = str(tmp_path / "access.log")
    h, fp, (a1, a2, a3, a4) = front(herald, upstreams, port,
                                    access_log=[hb.file_access_log(log, "%PROTOCOL% %RESPONSE_CODE% %REQ(:PATH)%\n")])
    r = curl("--http2-prior-knowledge", "-i", "http://127.0.0.1:%d/app2/hello?x=1" % fp)
    out = r.stdout.decode("latin-1")
    assert r.returncode == 0, r.stderr
    assert out.startswith("HTTP/2 200"), out[:300]
    assert header(out, "x-backend") == "app2"
    assert header(out, "server") == "herald"
    req = a2.requests[-1]
    assert req["target"] == "/app2/hello?x=1" and req["method"] == "GET"
    hdrs = {k.lower(): v for k, v in req["headers"]}
    assert hdrs["host"] == "127.0.0.1:%d" % fp, "the :authority becomes the backend's Host"
    assert "x-request-id" in hdrs and "x-forwarded-proto" in hdrs
    # rbac and no-route behave as over HTTP/1
    r = curl("--http2-prior-knowledge", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             "http://127.0.0.1:%d/admin/x" % fp)
    assert r.stdout.decode() == "403"
    assert stat(h, "http.ingress_http.downstream_cx_http2_total") >= 2
    assert stat(h, "http.ingress_http.downstream_rq_http2_total") >= 2
    # HTTP/1.1 on the same AUTO listener still works
    r = curl("-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "http://127.0.0.1:%d/app1/" % fp)
    assert r.stdout.decode() == "1.1 200"
    assert stat(h, "http.ingress_http.downstream_cx_http1_total") >= 1
    deadline = time.monotonic() + 5
    lines = []
    while time.monotonic() < deadline and len(lines) < 3:
        lines = open(log).read().splitlines() if os.path.exists(log) else []
        time.sleep(0.05)
    assert lines[:3] == ["HTTP/2 200 /app2/hello?x=1", "HTTP/2 403 /admin/x", "HTTP/1.1 200 /app1/"], lines


def test_h2_over_tls_alpn(herald, upstreams, port, cert):
    need("curl")
    h, fp, backends = front(herald, upstreams, port, tls=cert)
    r = curl("--http2", "-k", "-i", "https://localhost:%d/app1/tls" % fp,
             "--resolve", "localhost:%d:127.0.0.1" % fp)
    out = r.stdout.decode("latin-1")
    assert r.returncode == 0, r.stderr
    assert out.startswith("HTTP/2 200"), out[:300]
    assert header(out, "x-backend") == "app1"
    r = curl("--http1.1", "-k", "-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             "https://localhost:%d/app1/tls" % fp, "--resolve", "localhost:%d:127.0.0.1" % fp)
    assert r.stdout.decode() == "1.1 200", "ALPN http/1.1 picks HTTP/1.1"
    assert stat(h, "http.ingress_http.downstream_cx_http2_total") == 1


def test_h2_bodies_intact_both_ways(herald, upstreams, port, tmp_path):
    need("curl")
    h, fp, (a1, a2, a3, a4) = front(herald, upstreams, port)
    # upload 20 MiB
    data = os.urandom(20 << 20)
    path = tmp_path / "up.bin"
    path.write_bytes(data)
    r = curl("--http2-prior-knowledge", "-s", "--data-binary", "@" + str(path),
             "-H", "content-type: application/octet-stream", "http://127.0.0.1:%d/app1/up" % fp)
    assert r.returncode == 0, r.stderr
    import json
    body = json.loads(r.stdout)
    assert body["body_len"] == len(data)
    assert body["body_sha256"] == hashlib.sha256(data).hexdigest()
    # download 20 MiB (content-length) and chunked
    for q in ("bytes=%d" % (20 << 20), "bytes=%d&chunks=37" % (3 << 20)):
        r = curl("--http2-prior-knowledge", "-s", "-D", "-", "-o", str(tmp_path / "down.bin"),
                 "http://127.0.0.1:%d/app2/down?%s" % (fp, q))
        assert r.returncode == 0, r.stderr
        got = (tmp_path / "down.bin").read_bytes()
        want = header(r.stdout.decode("latin-1"), "x-body-sha256")
        assert hashlib.sha256(got).hexdigest() == want, q


def test_h2load_100_concurrent_streams_one_connection(herald, upstreams, port):
    need("h2load")
    h, fp, backends = front(herald, upstreams, port)
    r = subprocess.run(["h2load", "-n", "1000", "-c", "1", "-m", "100", "http://127.0.0.1:%d/" % fp],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert re.search(r"requests: 1000 total, 1000 started, 1000 done, 1000 succeeded", out), out
    assert re.search(r"status codes: 1000 2xx", out), out
    assert stat(h, "http.ingress_http.downstream_cx_http2_total") == 1
    assert stat(h, "http.ingress_http.downstream_rq_http2_total") == 1000
    served = [b.served() for b in backends]
    assert sum(served) == 1000 and min(served) >= 200, served


def test_h2_trailers_reach_the_client(herald, upstreams, port):
    need("nghttp")
    h, fp, backends = front(herald, upstreams, port)
    r = subprocess.run(["nghttp", "-v", "http://127.0.0.1:%d/app1/t?chunks=3&trailer=1" % fp],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    out = r.stdout.decode("latin-1")
    assert r.returncode == 0, out + r.stderr.decode()
    # the response HEADERS, DATA, then a HEADERS frame with END_STREAM carrying the trailer
    # nghttp prints a frame's header fields before the frame line
    data = out.rfind("recv DATA frame")
    last = out.rfind("recv HEADERS frame")
    assert 0 < data < last, out
    assert re.match(r"recv HEADERS frame <[^>]*flags=0x05", out[last:]), "END_STREAM | END_HEADERS"
    assert "x-trailer: done" in out[data:last], out
    assert stat(h, "http.ingress_http.downstream_rq_2xx") == 1


def test_h2_request_trailers_and_grpc_style_response(herald, upstreams, port):
    """A request with trailers reaches the backend (chunked, trailer kept); a
    response with trailers keeps them over h2 (here from a chunked backend)."""
    h, fp, (a1, a2, a3, a4) = front(herald, upstreams, port)
    c = H2Client(fp)
    c.conn.send_headers(1, req_headers("/app1/g?chunks=2&trailer=1", "POST") + [("te", "trailers")])
    c.conn.send_data(1, b"hello")
    c.conn.send_headers(1, [("x-req-trailer", "yes")], end_stream=True)
    c.flush()
    ev = c.read_events(lambda e: any(isinstance(x, h2.events.StreamEnded) for x in e))
    resp = [x for x in ev if isinstance(x, h2.events.ResponseReceived)]
    trl = [x for x in ev if isinstance(x, h2.events.TrailersReceived)]
    assert resp and dict(resp[0].headers)[":status"] == "200", ev
    assert trl and ("x-trailer", "done") in trl[0].headers, ev
    rq = a1.requests[-1]
    assert rq["body_len"] == 5
    assert ["x-req-trailer", "yes"] in [list(t) for t in rq["trailers"]], rq


def test_codec_type_http2_and_http1(herald, upstreams, port):
    need("curl")
    h, fp, backends = front(herald, upstreams, port, codec_type="HTTP2")
    r = curl("--http2-prior-knowledge", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             "http://127.0.0.1:%d/app1/" % fp)
    assert r.stdout.decode() == "200"
    r = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:%d/app1/" % fp)
    assert r.stdout.decode() != "200", "HTTP2 forces the codec: HTTP/1 gets nothing"
    h2_, fp2, _ = front(herald, upstreams, port, codec_type="HTTP1")
    r = curl("--http2-prior-knowledge", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             "http://127.0.0.1:%d/app1/" % fp2)
    assert r.stdout.decode() != "200", "HTTP1 forbids HTTP/2"


def test_h2_drain_sends_goaway(herald, upstreams, port):
    h, fp, backends = front(herald, upstreams, port)
    c = H2Client(fp)
    c.conn.send_headers(1, req_headers("/app1/x"), end_stream=True)
    c.flush()
    c.read_events(lambda e: any(isinstance(x, h2.events.StreamEnded) for x in e))
    h.admin_post("/drain_listeners?graceful") if hasattr(h, "admin_post") else None
    h.signal(__import__("signal").SIGTERM)
    c.read_events(lambda e: c.closed(), timeout=10)
    g = c.goaway()
    assert g is not None and g.error_code == 0, c.events
    h.expected_rc = None


# ------------------------------------------------------------------ abuse


def test_more_streams_than_max_concurrent_are_refused(herald, upstreams, port):
    h, fp, backends = front(herald, upstreams, port,
                            http2_protocol_options={"max_concurrent_streams": 5})
    c = H2Client(fp)
    # open 12 streams at once, before herald's SETTINGS can be read
    for i in range(12):
        c.conn.send_headers(1 + 2 * i, req_headers("/app1/slow?delay_ms=300"), end_stream=True)
    c.flush()
    ev = c.read_events(lambda e: sum(isinstance(x, (h2.events.StreamEnded, h2.events.StreamReset))
                                     for x in e) >= 12, timeout=10)
    resets = [x for x in ev if isinstance(x, h2.events.StreamReset)]
    ended = [x for x in ev if isinstance(x, h2.events.StreamEnded)]
    assert len(ended) == 5, ev
    assert len(resets) == 7 and all(x.error_code == h2.errors.ErrorCodes.REFUSED_STREAM for x in resets), ev
    assert wait_stat(h, "http.ingress_http.http2.stream_refused_errors", lambda v: v == 7) == 7
    assert still_serves(fp)


def test_rapid_reset_goaway_and_counted(herald, upstreams, port):
    h, fp, backends = front(herald, upstreams, port)
    c = H2Client(fp)
    sid = 1
    for i in range(1000):
        if c.closed():
            break
        try:
            c.conn.send_headers(sid, req_headers("/app1/slow?delay_ms=2000"))
            c.conn.reset_stream(sid)
        except h2.exceptions.ProtocolError:
            break
        sid += 2
        if i % 50 == 49:
            try:
                c.flush()
            except OSError:
                break
            c.read_events(lambda e: False, timeout=0.01)
    try:
        c.flush()
    except OSError:
        pass
    c.read_events(lambda e: c.closed(), timeout=10)
    g = c.goaway()
    assert g is not None and g.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, c.events[-5:]
    assert stat(h, "http.ingress_http.downstream_rq_too_many_premature_resets") == 1
    assert stat(h, "http.ingress_http.http2.rx_reset") >= 250
    assert still_serves(fp), "other connections are served"


def test_stream_reset_keeps_the_upstream_connection(herald, upstreams, port):
    """A client resets a stream whose request reached an HTTP/1.1 backend:
    herald reads that response to its end and drops it, and the next request
    reuses the connection instead of opening another."""
    h, fp, backends = front(herald, upstreams, port)
    c = H2Client(fp)
    c.conn.send_headers(1, req_headers("/app1/slow?delay_ms=400"), end_stream=True)
    c.flush()
    assert hb.wait_for_count(backends[0], 1)
    c.conn.reset_stream(1)
    c.flush()
    assert wait_stat(h, "cluster.app1.upstream_cx_drained_after_cancel", lambda v: v == 1) == 1
    c.conn.send_headers(3, req_headers("/app1/next"), end_stream=True)
    c.flush()
    ev = c.read_events(lambda e: any(isinstance(x, h2.events.StreamEnded) and x.stream_id == 3 for x in e))
    body = b"".join(x.data for x in ev if isinstance(x, h2.events.DataReceived) and x.stream_id == 3)
    assert json.loads(body)["conn_req"] == 2, body
    assert backends[0].accepted == 1
    assert stat(h, "cluster.app1.upstream_cx_destroy_with_active_rq") == 0


def test_continuation_flood_closed_and_counted(herald, upstreams, port):
    h, fp, backends = front(herald, upstreams, port)
    rss0 = h.rss_kb()
    s = raw_conn(fp)
    # HEADERS without END_HEADERS, then CONTINUATIONs of 4 KB never-indexed literals
    import hpack
    enc = hpack.Encoder()
    s.sendall(raw_frame(1, 0x0, 1, enc.encode(req_headers("/app1/"), huffman=False)))
    one = enc.encode([("x-a", "v" * 4000, True)], huffman=False)
    closed = False
    try:
        for i in range(5000):
            s.sendall(raw_frame(9, 0x0, 1, one))
    except OSError:
        closed = True
    closed2, seen = drain_until_closed(s)
    assert closed or closed2
    assert wait_stat(h, "http.ingress_http.http2.header_overflow", lambda v: v >= 1) >= 1
    assert h.rss_kb() - rss0 < 64 * 1024, "RSS bounded"
    assert still_serves(fp)


def test_many_small_continuations_closed(herald, upstreams, port):
    h, fp, backends = front(herald, upstreams, port)
    s = raw_conn(fp)
    import hpack
    enc = hpack.Encoder()
    s.sendall(raw_frame(1, 0x0, 1, enc.encode(req_headers("/app1/"), huffman=False)))
    try:
        for i in range(200):
            s.sendall(raw_frame(9, 0x0, 1, enc.encode([("a", "b", True)], huffman=False)))
    except OSError:
        pass
    closed, seen = drain_until_closed(s)
    assert closed
    assert wait_stat(h, "http.ingress_http.http2.header_overflow", lambda v: v >= 1) >= 1


def flood_control(herald, upstreams, port, frame):
    h, fp, backends = front(herald, upstreams, port)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", fp))
    s.settimeout(0.2)
    s.sendall(PREFACE + raw_frame(4, 0, 0))
    burst = frame * 2000
    closed = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            s.sendall(burst)
        except socket.timeout:
            pass
        except OSError:
            closed = True
            break
        if stat(h, "http.ingress_http.http2.outbound_control_flood") >= 1:
            break
    assert wait_stat(h, "http.ingress_http.http2.outbound_control_flood", lambda v: v >= 1) >= 1
    s.settimeout(1)
    if not closed:
        closed, _ = drain_until_closed(s, timeout=15)
    assert closed
    assert still_serves(fp)
    return h


def test_ping_flood_closed_and_counted(herald, upstreams, port):
    flood_control(herald, upstreams, port, raw_frame(6, 0, 0, b"12345678"))


def test_settings_flood_closed_and_counted(herald, upstreams, port):
    flood_control(herald, upstreams, port, raw_frame(4, 0, 0))


def test_empty_data_frames_flood(herald, upstreams, port):
    h, fp, backends = front(herald, upstreams, port)
    c = H2Client(fp)
    c.conn.send_headers(1, req_headers("/app1/x", "POST"))
    c.flush()
    c.sock.sendall(raw_frame(0, 0, 1) * 10)
    c.read_events(lambda e: c.closed(), timeout=5)
    assert c.closed()
    assert stat(h, "http.ingress_http.http2.inbound_empty_frames_flood") == 1


def test_slow_upstream_holds_the_client_window(herald, upstreams, port):
    """Backpressure per stream: a backend that does not read leaves the
    client's stream window shut; herald does not buffer the upload."""
    # a backend that accepts and never reads
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    bp = lsock.getsockname()[1]
    cfg = hb.front_proxy(port(), [bp, bp, bp, bp])
    fp = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    h = herald(cfg)
    c = H2Client(fp)
    c.conn.send_headers(1, req_headers("/app1/up", "POST"))
    c.flush()
    sent = 0
    chunk = b"x" * 16384
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        win = c.conn.local_flow_control_window(1)
        if win <= 0:
            c.read_events(lambda e: c.conn.local_flow_control_window(1) > 0, timeout=1.0)
            if c.conn.local_flow_control_window(1) <= 0:
                break
            continue
        n = min(win, len(chunk), c.conn.max_outbound_frame_size)
        c.conn.send_data(1, chunk[:n])
        c.flush()
        sent += n
    # the upstream socket buffers take some MiB; the window stops the rest
    assert c.conn.local_flow_control_window(1) <= 0, sent
    assert sent < 64 << 20, sent
    # herald holds at most its buffer limit (1 MiB) and the stream window (64 KiB) of it
    assert stat(h, "http.ingress_http.downstream_rq_active") == 1
    lsock.close()
