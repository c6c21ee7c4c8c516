"""HTTP/2 to upstream clusters: an HTTP/1.1 front (herald's HTTP listener) to
a cluster with HttpProtocolOptions explicit_http_config.http2_protocol_options
(h2c prior knowledge, or h2 over TLS) or auto_config (TLS ALPN picks h2, else
HTTP/1.1). The real peer is H2Backend below, an HTTP/2 server on Python's h2
(python3-h2) that can also misbehave: reset streams, send GOAWAY."""

import http.client
import json
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse

import pytest

import http_backends as hb

h2 = pytest.importorskip("h2")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.errors  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402
import h2.settings  # noqa: E402
import hyperframe.frame  # noqa: E402

HPO_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


# ------------------------------------------------------------------ the backend


class H2Backend:
    """A threaded HTTP/2 server (h2c, or h2 over TLS when tls_ctx is given; a
    TLS client that does not pick h2 by ALPN gets HTTP/1.1). Answers with a
    JSON echo of the request ({"proto", "conn", "stream", "method", "path",
    "headers", "body_len", "body_sha256"}); the query steers it:

        bytes=N      N bytes of hb.pattern_bytes (x-body-sha256 header)
        trailers=1   a gRPC-like answer: body "hello", trailers grpc-status/grpc-message
        rst=1        RST_STREAM(INTERNAL_ERROR) instead of an answer
        goaway=1     answer, then GOAWAY with this stream as the last
        delay_ms=N   answer N ms later (other streams go on meanwhile)
    """

    def __init__(self, name="h2", tls_ctx=None, max_streams=1000):
        self.name = name
        self.tls_ctx = tls_ctx
        self.max_streams = max_streams
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = 0
        self.protocols = []
        self.requests = []
        self.max_active = 0
        self.sent_bytes = 0     # response body bytes handed to the socket
        self.resets = 0         # RST_STREAMs received
        self.errors = []
        self._stopping = threading.Event()
        self._threads = []
        self._conns = set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self.lock:
                self.accepted += 1
                n = self.accepted
                self._conns.add(c)
            t = threading.Thread(target=self._run, args=(c, n), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, c, n):
        try:
            proto = "h2"
            if self.tls_ctx:
                c.settimeout(5)
                c = self.tls_ctx.wrap_socket(c, server_side=True)   # takes the socket's descriptor
                proto = c.selected_alpn_protocol() or "none"
            with self.lock:
                self.protocols.append(proto)
                self._conns.add(c)
            if proto == "h2":
                self._serve_h2(c, n)
            else:
                self._serve_h1(c, n, proto)
        except (OSError, ValueError, EOFError, h2.exceptions.ProtocolError) as e:
            if not self._stopping.is_set():
                with self.lock:
                    self.errors.append(repr(e))
        finally:
            try:
                c.close()
            except OSError:
                pass

    def stop(self):
        self._stopping.set()
        self._thread.join(2)
        self.sock.close()
        with self.lock:
            conns = list(self._conns)
        for c in conns:   # a kept-alive HTTP/1.1 connection would hold its thread in recv for 5 s
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(3)

    def served(self):
        with self.lock:
            return len(self.requests)

    # ---- HTTP/2

    def _serve_h2(self, c, conn_no):
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config=cfg)
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
        })
        conn.initiate_connection()
        conn.increment_flow_control_window(16 << 20)
        c.sendall(conn.data_to_send())
        # Waits for input 20 ms at a time (select, below), but a send may
        # block as long as herald applies backpressure: a socket timeout of
        # 20 ms would also cut a big body short when herald reads slowly
        # (a loaded machine, a sanitizer build) and look like its fault.
        c.settimeout(10)
        streams = {}     # id -> {"headers", "body"}
        due = []         # (time, id)
        sending = {}     # id -> [bytearray body, trailers or None]
        goaway_after = set()
        raw_after = []   # frames written behind h2's back (GOAWAY while streams go on)
        while not self._stopping.is_set():
            now = time.monotonic()
            for t, sid in [d for d in due if d[0] <= now]:
                due.remove((t, sid))
                if sid in streams:
                    self._respond(conn, conn_no, sid, streams.pop(sid), sending, goaway_after)
            for sid in list(sending):
                body, trailers = sending[sid]
                try:
                    while body:
                        n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(body))
                        if n <= 0:
                            break
                        conn.send_data(sid, bytes(body[:n]))
                        del body[:n]
                        with self.lock:
                            self.sent_bytes += n
                    if not body:
                        del sending[sid]
                        if trailers:
                            conn.send_headers(sid, trailers, end_stream=True)
                        else:
                            conn.end_stream(sid)
                        if sid in goaway_after:
                            # h2 refuses to send anything after its own GOAWAY: frame it by hand
                            raw_after.append(hyperframe.frame.GoAwayFrame(
                                stream_id=0, last_stream_id=sid, error_code=0).serialize())
                except (h2.exceptions.StreamClosedError, h2.exceptions.FlowControlError, KeyError):
                    sending.pop(sid, None)
            out = conn.data_to_send()
            for f in raw_after:
                out += f
            raw_after.clear()
            if out:
                c.sendall(out)
            # TLS: decrypted bytes already read from the socket do not wake select
            if not (self.tls_ctx and c.pending()) and not select.select([c], [], [], 0.02)[0]:
                continue
            data = c.recv(1 << 16)
            if not data:
                return
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                c.sendall(conn.data_to_send())
                return
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    streams[ev.stream_id] = {"headers": ev.headers, "body": bytearray()}
                    with self.lock:
                        self.max_active = max(self.max_active, len(streams))
                    q = self._query(ev.headers)
                    if q.get("rst") == "1":
                        streams.pop(ev.stream_id)
                        conn.reset_stream(ev.stream_id, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
                        with self.lock:
                            self.requests.append({"stream": ev.stream_id, "reset": True})
                elif isinstance(ev, h2.events.DataReceived):
                    if ev.stream_id in streams:
                        streams[ev.stream_id]["body"] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    if ev.stream_id in streams:
                        q = self._query(streams[ev.stream_id]["headers"])
                        due.append((time.monotonic() + int(q.get("delay_ms", "0")) / 1000.0, ev.stream_id))
                elif isinstance(ev, h2.events.StreamReset):
                    with self.lock:
                        self.resets += 1
                    streams.pop(ev.stream_id, None)
                    sending.pop(ev.stream_id, None)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    c.sendall(conn.data_to_send())
                    return

    @staticmethod
    def _query(headers):
        path = dict(headers).get(":path", "/")
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))

    def _respond(self, conn, conn_no, sid, st, sending, goaway_after):
        hdrs = st["headers"]
        q = self._query(hdrs)
        body = bytes(st["body"])
        info = {"proto": "h2", "conn": conn_no, "stream": sid, "method": dict(hdrs).get(":method"),
                "path": dict(hdrs).get(":path"), "headers": [list(h) for h in hdrs],
                "body_len": len(body), "body_sha256": hb.sha256(body)}
        with self.lock:
            self.requests.append(info)
        extra = []
        trailers = None
        if "bytes" in q:
            out = hb.pattern_bytes(int(q["bytes"]))
            extra.append(("x-body-sha256", hb.sha256(out)))
            ctype = "application/octet-stream"
        elif q.get("trailers") == "1":
            out = b"hello"
            ctype = "application/grpc"
            trailers = [("grpc-status", "0"), ("grpc-message", "all good")]
        else:
            out = json.dumps(info).encode()
            ctype = "application/json"
        head = [(":status", "200"), ("content-type", ctype), ("x-backend", self.name)] + extra
        if not trailers:
            head.append(("content-length", str(len(out))))
        conn.send_headers(sid, head)
        sending[sid] = [bytearray(out), trailers]
        if q.get("goaway") == "1":
            goaway_after.add(sid)

    # ---- HTTP/1.1 (TLS clients that did not pick h2)

    def _serve_h1(self, c, conn_no, proto):
        c.settimeout(10)
        r = hb.Reader(c)
        while not self._stopping.is_set():
            line = r.readline()
            if not line.strip():
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers = hb.read_headers(r)
            cl = hb.hget(headers, "content-length")
            if "chunked" in (hb.hget(headers, "transfer-encoding") or "").lower():
                body, _ = hb.read_chunked(r)
            else:
                body = r.read(int(cl)) if cl else b""
            info = {"proto": "http/1.1", "alpn": proto, "conn": conn_no, "method": method, "path": target,
                    "headers": [list(h) for h in headers], "body_len": len(body), "body_sha256": hb.sha256(body)}
            with self.lock:
                self.requests.append(info)
            out = json.dumps(info).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-backend: %s\r\n"
                      b"content-length: %d\r\n\r\n" % (self.name.encode(), len(out)) + out)


# ------------------------------------------------------------------ config


def h2_options(kind="explicit", **http2):
    if kind == "explicit":
        cfg = {"explicit_http_config": {"http2_protocol_options": dict(http2)}}
    else:
        cfg = {"auto_config": {"http2_protocol_options": dict(http2)}}
    cfg["@type"] = "type.googleapis.com/" + HPO_KEY
    return {"typed_extension_protocol_options": {HPO_KEY: cfg}}


def tls_transport(alpn=None):
    ctx = {"@type": TLS_TYPE, "common_tls_context": {}}
    if alpn:
        ctx["common_tls_context"]["alpn_protocols"] = list(alpn)
    return {"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": ctx}}


def start(herald, port, backend, kind="explicit", tls=False, alpn=None, http2=None, **hcm_extra):
    extra = h2_options(kind, **(http2 or {}))
    if tls:
        extra.update(tls_transport(alpn))
    return hb.start_proxy(herald, port, [backend.port], cluster_extra=extra, **hcm_extra)


@pytest.fixture
def server_tls(tmp_path):
    """A factory: server_tls(alpn list) -> an ssl.SSLContext with a throwaway certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = str(tmp_path / "srv.pem"), str(tmp_path / "srv.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=backend.test"], check=True, capture_output=True)

    def make(alpn):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx
    return make


def request_conn(lp, method, path, body=None, headers=None, timeout=10):
    """(status, {lower name: value}, body, HTTPResponse) over a new connection."""
    c = http.client.HTTPConnection("127.0.0.1", lp, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
    finally:
        c.close()


# ------------------------------------------------------------------ tests


def test_h2c_one_request(herald, upstreams, port):
    b = upstreams(H2Backend, "h2c")
    h, lp = start(herald, port, b)
    status, headers, body = request_conn(lp, "GET", "/hello?x=1", headers={"x-test": "yes", "Connection": "close",
                                                                          "TE": "gzip"})
    assert status == 200, body[:300]
    info = json.loads(body)
    assert info["proto"] == "h2" and info["method"] == "GET" and info["path"] == "/hello?x=1"
    names = [k for k, v in info["headers"]]
    assert names[:4] == [":method", ":scheme", ":authority", ":path"], names
    hdrs = dict(info["headers"])
    assert hdrs[":scheme"] == "http" and hdrs["x-test"] == "yes"
    assert "connection" not in hdrs and "te" not in hdrs and "host" not in hdrs, hdrs
    assert hdrs[":authority"].startswith("127.0.0.1:")
    assert headers.get("x-backend") == "h2c"
    st = h.stats()
    assert st.get("cluster.backend.upstream_cx_http2_total") == 1
    assert st.get("cluster.backend.upstream_cx_http1_total", 0) == 0


def test_h2c_upstream_wire_bytes_in_access_log(herald, upstreams, port, tmp_path):
    """%UPSTREAM_*_BYTES_*% over HTTP/2: the request's and the response's
    frames with their 9-byte headers; the rest of the wire bytes are the body
    and 9 bytes per DATA frame (the backend sends 16384-byte frames)."""
    b = upstreams(H2Backend, "h2c")
    log = str(tmp_path / "access.log")
    fmt = ("%UPSTREAM_HEADER_BYTES_SENT% %UPSTREAM_WIRE_BYTES_SENT% %UPSTREAM_HEADER_BYTES_RECEIVED% "
           "%UPSTREAM_WIRE_BYTES_RECEIVED% %UPSTREAM_PROTOCOL%\n")
    h, lp = start(herald, port, b, access_log=[hb.file_access_log(log, fmt)])
    status, _, body = request_conn(lp, "POST", "/w?bytes=50000", body=b"x" * 700)
    assert status == 200 and len(body) == 50000
    f = hb_wait_line(log).split()
    assert f[4] == "HTTP/2", f
    hdr_tx, wire_tx, hdr_rx, wire_rx = (int(x) for x in f[:4])
    assert hdr_tx > 9 and hdr_rx > 9, f
    frames_tx, extra_tx = divmod(wire_tx - hdr_tx - 700, 9)
    assert extra_tx == 0 and frames_tx >= 1, f
    frames_rx, extra_rx = divmod(wire_rx - hdr_rx - 50000, 9)
    assert extra_rx == 0 and frames_rx >= 4, "50000 bytes in 16384-byte frames: %r" % f


def hb_wait_line(path, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            text = open(path).read()
            if text.endswith("\n"):
                return text.splitlines()[0]
        time.sleep(0.05)
    raise AssertionError("no access log line in %s" % path)


def test_h2c_100_concurrent_requests_one_connection(herald, upstreams, port):
    b = upstreams(H2Backend, "h2c")
    h, lp = start(herald, port, b)
    results = [None] * 100
    barrier = threading.Barrier(100)

    def one(i):
        barrier.wait(10)
        try:
            results[i] = request_conn(lp, "GET", "/c/%d?delay_ms=300" % i, timeout=20)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    for i, res in enumerate(results):
        assert not isinstance(res, Exception) and res is not None, (i, res)
        status, headers, body = res
        assert status == 200, (i, status, body[:200])
        assert json.loads(body)["path"] == "/c/%d?delay_ms=300" % i
    assert b.accepted == 1, b.accepted
    assert b.max_active > 50, "requests did not overlap (%d)" % b.max_active
    assert elapsed < 15, elapsed
    st = h.stats()
    assert st.get("cluster.backend.upstream_cx_total") == 1, st.get("cluster.backend.upstream_cx_total")
    assert st.get("cluster.backend.upstream_cx_http2_total") == 1
    assert st.get("cluster.backend.upstream_rq_total") == 100
    assert h.wait_stat("cluster.backend.upstream_rq_active", lambda v: v == 0) == 0


def test_h2c_bodies_intact(herald, upstreams, port):
    b = upstreams(H2Backend, "h2c")
    h, lp = start(herald, port, b)
    up = os.urandom(3 << 20)
    status, headers, body = request_conn(lp, "POST", "/upload", body=up,
                                         headers={"content-type": "application/octet-stream"}, timeout=30)
    assert status == 200, body[:300]
    info = json.loads(body)
    assert info["body_len"] == len(up) and info["body_sha256"] == hb.sha256(up)
    n = 5 << 20
    status, headers, body = request_conn(lp, "GET", "/download?bytes=%d" % n, timeout=30)
    assert status == 200
    assert len(body) == n and hb.sha256(body) == headers["x-body-sha256"]
    # several at once, both directions, on the one connection
    results = {}

    def post(i):
        data = os.urandom((1 << 20) + i * 1000)
        s, hd, bd = request_conn(lp, "POST", "/p%d" % i, body=data, timeout=30)
        results[i] = (s, json.loads(bd)["body_sha256"] == hb.sha256(data))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert results == {i: (200, True) for i in range(6)}, results
    assert h.stats().get("cluster.backend.upstream_cx_total") == 1


def test_h2_trailers_reach_http1_client_chunked(herald, upstreams, port):
    b = upstreams(H2Backend, "grpc")
    # Envoy encodes trailers to HTTP/1 clients only with enable_trailers
    h, lp = start(herald, port, b, http_protocol_options={"enable_trailers": True})
    s = socket.create_connection(("127.0.0.1", lp), timeout=10)
    try:
        s.sendall(b"POST /svc.Greeter/Hello?trailers=1 HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n"
                  b"content-type: application/grpc\r\ncontent-length: 3\r\n\r\nabc")
        r = hb.Reader(s)
        line = r.readline()
        assert line.startswith(b"HTTP/1.1 200"), line
        headers = hb.read_headers(r)
        assert "chunked" in (hb.hget(headers, "transfer-encoding") or ""), headers
        body, trailers = hb.read_chunked(r)
    finally:
        s.close()
    assert body == b"hello"
    t = dict((k.lower(), v) for k, v in trailers)
    assert t.get("grpc-status") == "0" and t.get("grpc-message") == "all good", trailers
    req = [x for x in b.requests if "path" in x][0]
    assert dict(req["headers"]).get("te") == "trailers"
    assert h.stats().get("cluster.backend.http2.trailers") == 1


def test_h2_stream_reset_by_backend(herald, upstreams, port):
    b = upstreams(H2Backend, "h2c")
    h, lp = start(herald, port, b)
    status, headers, body = request_conn(lp, "GET", "/boom?rst=1")
    assert status == 503, (status, body)
    # the connection stays up for others
    assert request_conn(lp, "GET", "/fine")[0] == 200
    assert b.accepted == 1
    st = h.stats()
    assert st.get("cluster.backend.http2.rx_reset") == 1
    assert st.get("cluster.backend.upstream_rq_rx_reset") == 1
    assert st.get("cluster.backend.upstream_cx_total") == 1


def test_h2_goaway_new_connection(herald, upstreams, port):
    b = upstreams(H2Backend, "h2c")
    h, lp = start(herald, port, b)
    status, headers, body = request_conn(lp, "GET", "/last?goaway=1")
    assert status == 200 and json.loads(body)["conn"] == 1
    assert h.wait_stat("cluster.backend.upstream_cx_active", lambda v: v == 0) == 0
    status, headers, body = request_conn(lp, "GET", "/next")
    assert status == 200 and json.loads(body)["conn"] == 2, body
    st = h.stats()
    assert st.get("cluster.backend.upstream_cx_total") == 2
    assert st.get("cluster.backend.upstream_cx_http2_total") == 2


def test_h2_goaway_with_streams_in_flight(herald, upstreams, port):
    """A GOAWAY naming a stream as the last: slower streams below it still finish."""
    b = upstreams(H2Backend, "h2c")
    h, lp = start(herald, port, b)
    slow = {}

    def go():
        slow["r"] = request_conn(lp, "GET", "/slow?delay_ms=600")

    t = threading.Thread(target=go)
    t.start()
    time.sleep(0.2)
    assert request_conn(lp, "GET", "/quick?goaway=1")[0] == 200
    t.join(10)
    # the slow stream has a lower id than the GOAWAY's last stream: answered
    assert slow["r"][0] == 200, slow
    assert request_conn(lp, "GET", "/after")[0] == 200
    assert h.stats().get("cluster.backend.upstream_cx_total") == 2


def test_h2_backend_gone(herald, upstreams, port):
    b = upstreams(H2Backend, "h2c")
    h, lp = start(herald, port, b)
    assert request_conn(lp, "GET", "/a")[0] == 200
    b.stop()
    status, headers, body = request_conn(lp, "GET", "/b")
    assert status == 503, status
    b2 = upstreams(H2Backend, "h2c")
    assert b2.port != b.port


def test_h2_max_concurrent_streams_opens_another_connection(herald, upstreams, port):
    b = upstreams(H2Backend, "h2c")
    h, lp = start(herald, port, b, http2={"max_concurrent_streams": 2})
    results = []

    def one(i):
        results.append(request_conn(lp, "GET", "/m%d?delay_ms=400" % i, timeout=10)[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results == [200] * 6
    st = h.stats()
    assert st.get("cluster.backend.upstream_cx_total") >= 3, st.get("cluster.backend.upstream_cx_total")


def test_h2_over_tls_with_alpn(herald, upstreams, port, server_tls):
    b = upstreams(H2Backend, "h2tls", tls_ctx=server_tls(["h2"]))
    h, lp = start(herald, port, b, tls=True)
    status, headers, body = request_conn(lp, "GET", "/secure")
    assert status == 200, body[:300]
    info = json.loads(body)
    assert info["proto"] == "h2" and dict(info["headers"])[":scheme"] == "https"
    assert b.protocols == ["h2"]  # herald offered h2 by itself (no alpn_protocols)


@pytest.mark.parametrize("offered", [None, ["h2", "http/1.1"]])
def test_auto_config_picks_h2(herald, upstreams, port, server_tls, offered):
    b = upstreams(H2Backend, "auto", tls_ctx=server_tls(["h2", "http/1.1"]))
    h, lp = start(herald, port, b, kind="auto", tls=True, alpn=offered)
    for i in range(3):
        status, headers, body = request_conn(lp, "GET", "/auto%d" % i)
        assert status == 200 and json.loads(body)["proto"] == "h2", body[:300]
    st = h.stats()
    assert st.get("cluster.backend.upstream_cx_http2_total") == 1
    assert st.get("cluster.backend.upstream_cx_http1_total", 0) == 0
    assert b.protocols == ["h2"]


def test_auto_config_falls_back_to_http1(herald, upstreams, port, server_tls):
    b = upstreams(H2Backend, "auto1", tls_ctx=server_tls(["http/1.1"]))
    h, lp = start(herald, port, b, kind="auto", tls=True)
    results = []

    def one(i):
        s, hd, bd = request_conn(lp, "POST", "/old%d" % i, body=b"x" * 1000)
        results.append((s, json.loads(bd)["proto"]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [(200, "http/1.1")] * 4, results
    st = h.stats()
    assert st.get("cluster.backend.upstream_cx_http1_total") >= 1
    assert st.get("cluster.backend.upstream_cx_http2_total", 0) == 0
    assert set(b.protocols) == {"http/1.1"}


def test_auto_config_needs_tls(tmp_path):
    import conftest
    cfg = {"static_resources": {"clusters": [hb.http_cluster("backend", [1], **h2_options("auto"))]}}
    path = tmp_path / "auto.json"
    path.write_text(json.dumps(cfg))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path)])
    assert r.returncode != 0
    assert "auto_config" in r.stderr and "TLS" in r.stderr, r.stderr


def test_http2_options_validated(tmp_path):
    import conftest
    bad = {"static_resources": {"clusters": [hb.http_cluster(
        "backend", [1], **h2_options(initial_stream_window_size=100))]}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path)])
    assert r.returncode != 0 and "out of range" in r.stderr, r.stderr
    unsup = {"static_resources": {"clusters": [hb.http_cluster(
        "backend", [1], **h2_options(connection_keepalive={"interval": "1s", "timeout": "1s",
                                                           "connection_idle_interval": "1s"}))]}}
    path.write_text(json.dumps(unsup))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path)])
    assert r.returncode != 0 and "connection_idle_interval: not supported" in r.stderr, r.stderr


def test_h2_client_gone_resets_stream_connection_stays(herald, upstreams, port):
    b = upstreams(H2Backend, "h2c")
    h, lp = start(herald, port, b)
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    s.sendall(b"GET /slow?delay_ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    s.close()
    assert h.wait_stat("cluster.backend.http2.tx_reset", lambda v: v == 1) == 1
    assert hb_wait(lambda: b.resets == 1)
    assert request_conn(lp, "GET", "/again")[0] == 200
    st = h.stats()
    assert st.get("cluster.backend.upstream_cx_total") == 1
    assert st.get("cluster.backend.upstream_rq_tx_reset") == 1


def test_h2_idle_timeout_and_max_requests(herald, upstreams, port):
    b = upstreams(H2Backend, "h2c")
    hpo = h2_options()
    hpo["typed_extension_protocol_options"][HPO_KEY]["common_http_protocol_options"] = {
        "idle_timeout": "0.3s", "max_requests_per_connection": 2}
    h, lp = hb.start_proxy(herald, port, [b.port], cluster_extra=hpo)
    assert request_conn(lp, "GET", "/1")[0] == 200
    assert h.wait_stat("cluster.backend.upstream_cx_idle_timeout", lambda v: v == 1) == 1
    assert h.wait_stat("cluster.backend.upstream_cx_active", lambda v: v == 0) == 0
    assert h.stats().get("cluster.backend.http2.goaway_sent") == 1
    conns = [json.loads(request_conn(lp, "GET", "/n%d" % i)[2])["conn"] for i in range(4)]
    assert conns == [2, 2, 3, 3], conns
    assert h.stats().get("cluster.backend.upstream_cx_max_requests") >= 2


def test_legacy_cluster_protocol_fields(herald, upstreams, port, tmp_path):
    """The deprecated cluster-level http2_protocol_options and
    common_http_protocol_options (v2-era configs, still honoured by Envoy) act
    as their places in typed_extension_protocol_options do, with a warning."""
    import conftest
    b = upstreams(H2Backend, "h2c")
    legacy = {"http2_protocol_options": {"max_concurrent_streams": 2},
              "common_http_protocol_options": {"max_requests_per_connection": 3}}
    cfg = {"static_resources": {"clusters": [hb.http_cluster("backend", [b.port], **legacy)]}}
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(cfg))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path)])
    assert r.returncode == 0, r.stderr
    for field in ("http2_protocol_options", "common_http_protocol_options"):
        assert re.search(r"warning: .*legacy.json:\d+:\d+: static_resources.clusters\[0\]\.%s: "
                         r"'%s' is deprecated: use typed_extension_protocol_options" % (field, field),
                         r.stderr), r.stderr
    h, lp = hb.start_proxy(herald, port, [b.port], cluster_extra=legacy)
    status, headers, body = request_conn(lp, "GET", "/legacy")
    assert status == 200 and json.loads(body)["proto"] == "h2", body[:300]
    conns = [json.loads(request_conn(lp, "GET", "/n%d" % i)[2])["conn"] for i in range(5)]
    assert conns == [1, 1, 2, 2, 2], conns          # 3 requests per connection, the first one included
    results = []

    def one(i):
        results.append(request_conn(lp, "GET", "/m%d?delay_ms=400" % i, timeout=10)[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results == [200] * 4
    st = h.stats()
    assert st.get("cluster.backend.upstream_cx_http2_total") >= 4, st   # 2 streams each at most
    assert st.get("cluster.backend.upstream_cx_http1_total", 0) == 0


@pytest.mark.parametrize("legacy", ["http2_protocol_options", "common_http_protocol_options"])
def test_legacy_cluster_protocol_fields_do_not_mix(tmp_path, legacy):
    import conftest
    extra = h2_options()
    extra[legacy] = {}
    cfg = {"static_resources": {"clusters": [hb.http_cluster("backend", [1], **extra)]}}
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(cfg))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path)])
    assert r.returncode == 1, r.stderr
    assert re.search(r"error: .*mixed.json:\d+:\d+: static_resources.clusters\[0\]\.%s: %s and "
                     r"typed_extension_protocol_options' .* cannot both be set" % (legacy, legacy), r.stderr), r.stderr


def test_h2_download_backpressure(herald, upstreams, port):
    """A client that does not read: herald stops giving the stream window back, the backend stalls."""
    b = upstreams(H2Backend, "h2c")
    h, lp = start(herald, port, b, http2={"initial_stream_window_size": 65535,
                                          "initial_connection_window_size": 65535})
    n = 48 << 20
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(30)
    s.connect(("127.0.0.1", lp))
    try:
        s.sendall(b"GET /big?bytes=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        time.sleep(1.5)
        stalled = b.sent_bytes
        assert stalled < 16 << 20, stalled
        r = hb.Reader(s)
        status, headers, body = hb.read_response(r)
    finally:
        s.close()
    assert status == 200 and len(body) == n
    assert hb.sha256(body) == hb.hget(headers, "x-body-sha256")


def hb_wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False
