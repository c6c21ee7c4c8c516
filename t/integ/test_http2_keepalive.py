"""HTTP/2 PING keepalive (http2_protocol_options.connection_keepalive), towards
clients (the connection manager) and towards upstreams (a cluster's
HttpProtocolOptions): a peer that answers neither the PING nor anything else
within timeout loses its connection, counted in http2.keepalive_timeout; a
peer that answers, or that is busy sending other frames, keeps it.

Peers: python3-h2 (which answers PINGs by itself), hand-made frames for a
client that never answers, and a python3-h2 upstream that can be frozen."""

import json
import socket
import threading
import time

import pytest

import conftest
import http_backends as hb
from http_backends import HttpBackend

h2 = pytest.importorskip("h2")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HPO_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HPO_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
PING, SETTINGS, GOAWAY = 6, 4, 7
KEEPALIVE = {"interval": "0.3s", "timeout": "0.3s", "interval_jitter": {"value": 0}}


def frame(ftype, flags=0, stream=0, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def read_frames(sock, until, deadline):
    """Frames (type, flags, payload, seconds since start) until until(frames)
    holds, the peer closes ("closed" last) or deadline passes."""
    t0, buf, out = time.monotonic(), b"", []
    sock.settimeout(0.05)
    while time.monotonic() - t0 < deadline and not until(out):
        try:
            d = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            d = b""
        if not d:
            out.append(("closed", 0, b"", time.monotonic() - t0))
            break
        buf += d
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            out.append((buf[3], buf[4], buf[9:9 + n], time.monotonic() - t0))
            buf = buf[9 + n:]
    return out


def proxy(herald, port, backend_port, keepalive=KEEPALIVE):
    return hb.start_proxy(herald, port, [backend_port],
                          http2_protocol_options={"connection_keepalive": keepalive})


def test_a_client_that_never_answers_is_closed(herald, upstreams, port):
    """The client speaks the preface and SETTINGS, then nothing: herald sends a
    PING after interval and closes the connection timeout later, without the
    GOAWAY nobody would read; counted once."""
    b = upstreams(HttpBackend, "b")
    h, lp = proxy(herald, port, b.port)
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    s.sendall(PREFACE + frame(SETTINGS))
    frames = read_frames(s, lambda f: f and f[-1][0] == "closed", 5)
    kinds = [f[0] for f in frames]
    assert kinds[-1] == "closed", kinds
    pings = [f for f in frames if f[0] == PING and not f[1] & 1]
    assert len(pings) == 1, kinds
    assert GOAWAY not in kinds
    took = frames[-1][3]
    assert 0.5 <= took <= 2.5, took                # interval 0.3 s + timeout 0.3 s
    assert pings[0][3] >= 0.25
    assert h.wait_stat("http.ingress_http.http2.keepalive_timeout", lambda v: v == 1) == 1


def test_a_client_that_answers_keeps_its_connection(herald, upstreams, port):
    """python3-h2 answers each PING: after several intervals the connection
    is still up and a request on it is answered."""
    b = upstreams(HttpBackend, "b")
    h, lp = proxy(herald, port, b.port)
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    pings, t0 = 0, time.monotonic()
    s.settimeout(0.05)
    while time.monotonic() - t0 < 1.6:
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        assert d, "herald closed a connection that answers its PINGs"
        pings += sum(isinstance(e, h2.events.PingReceived) for e in c.receive_data(d))
        s.sendall(c.data_to_send())
    assert pings >= 3, pings
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/still")],
                   end_stream=True)
    s.sendall(c.data_to_send())
    body, status, done = b"", None, False
    s.settimeout(5)
    while not done:
        d = s.recv(65536)
        assert d
        for e in c.receive_data(d):
            if isinstance(e, h2.events.ResponseReceived):
                status = dict(e.headers)[b":status"]
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
            elif isinstance(e, h2.events.StreamEnded):
                done = True
        s.sendall(c.data_to_send())
    assert status == b"200" and json.loads(body)["path"] == "/still"
    assert h.stat("http.ingress_http.http2.keepalive_timeout") == 0


def test_other_frames_count_as_an_answer(herald, upstreams, port):
    """A client that never ACKs herald's PING but keeps sending frames of its
    own (here its own PINGs, every 0.1 s) is alive, only behind: it keeps the
    connection, as in Envoy, where any frame extends the timeout."""
    b = upstreams(HttpBackend, "b")
    h, lp = proxy(herald, port, b.port)
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    s.sendall(PREFACE + frame(SETTINGS))
    seen, t0 = [], time.monotonic()
    while time.monotonic() - t0 < 1.5:
        s.sendall(frame(PING, payload=b"12345678"))
        got = read_frames(s, lambda f: False, 0.1)
        seen += got
        assert not got or got[-1][0] != "closed", "closed although the client keeps talking"
    assert any(f[0] == PING and not f[1] & 1 for f in seen), "herald sent no PING of its own"
    assert h.stat("http.ingress_http.http2.keepalive_timeout") == 0


# ------------------------------------------------------------------ upstream


class FreezableH2Backend:
    """An h2c server answering every request 200 with its path; frozen, it
    stops reading its connections (a host that hangs)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.frozen = threading.Event()
        self.stopping = threading.Event()
        self.accepted = 0
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, c):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        c.sendall(conn.data_to_send())
        c.settimeout(0.05)
        paths = {}
        try:
            while not self.stopping.is_set():
                if self.frozen.is_set():
                    time.sleep(0.05)
                    continue
                try:
                    d = c.recv(65536)
                except socket.timeout:
                    continue
                if not d:
                    return
                for e in conn.receive_data(d):
                    if isinstance(e, h2.events.RequestReceived):
                        paths[e.stream_id] = dict(e.headers)[b":path"].decode()
                    if isinstance(e, h2.events.StreamEnded) and e.stream_id in paths:
                        body = json.dumps({"path": paths.pop(e.stream_id), "conn": self.accepted}).encode()
                        conn.send_headers(e.stream_id, [(":status", "200"), ("content-length", str(len(body)))])
                        conn.send_data(e.stream_id, body, end_stream=True)
                c.sendall(conn.data_to_send())
        except OSError:
            return
        finally:
            c.close()

    def stop(self):
        self.stopping.set()
        self.sock.close()
        for t in self.threads:
            t.join(2)


def test_an_upstream_that_hangs_is_closed_and_replaced(herald, upstreams, port):
    """The cluster's HTTP/2 connection pings its host; once the host hangs, the
    connection is closed after interval + timeout (cluster.<name>.http2.
    keepalive_timeout), and the next request, after the host recovers, gets
    a new connection instead of waiting on the dead one."""
    be = upstreams(FreezableH2Backend)
    extra = {"typed_extension_protocol_options": {HPO_KEY: {
        "@type": HPO_TYPE,
        "explicit_http_config": {"http2_protocol_options": {"connection_keepalive": KEEPALIVE}}}}}
    h, lp = hb.start_proxy(herald, port, [be.port], cluster_extra=extra)
    status, _, body = hb.request(lp, "/first")
    assert status == 200 and json.loads(body) == {"path": "/first", "conn": 1}
    time.sleep(1.0)                               # PINGs answered meanwhile: the connection stays
    status, _, body = hb.request(lp, "/second")
    assert status == 200 and json.loads(body)["conn"] == 1
    assert h.stat("cluster.backend.http2.keepalive_timeout") == 0
    be.frozen.set()
    assert h.wait_stat("cluster.backend.http2.keepalive_timeout", lambda v: v == 1, timeout=5) == 1
    be.frozen.clear()
    status, _, body = hb.request(lp, "/third")
    assert status == 200 and json.loads(body)["conn"] == 2
    assert be.accepted == 2


def test_keepalive_config_errors(tmp_path):
    """Bad KeepaliveSettings stop validation with the position and the field."""
    def cfg(keepalive):
        return {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "c")],
                                                     http2_protocol_options={"connection_keepalive": keepalive}))],
            "clusters": [hb.http_cluster("c", [1])]}}
    cases = [
        ({"interval": "0s", "timeout": "1s"}, r"interval: interval must be at least 1ms"),
        ({"interval": "1s"}, r"connection_keepalive: .*timeout"),
        ({"interval": "1s", "timeout": "1s", "interval_jitter": {"value": 150}},
         r"interval_jitter must be from 0 to 100"),
        ({"interval": "1s", "timeout": "1s", "connection_idle_interval": "1s"},
         r"connection_idle_interval: not supported"),
    ]
    for ka, want in cases:
        conftest.config_refused(tmp_path, cfg(ka), want, "ka.json")
