"""WebSocket (HTTP/1.1 Upgrade) end to end: client -> herald (http_connection_manager
with upgrade_configs [{upgrade_type: websocket}]) -> router -> upstream pool ->
backend, and back.

The backend here is its own small WebSocket server, written by hand (handshake
with hashlib/base64, RFC 6455 frames, client frames masked): it records the
exact request head it received, so the tests can check that herald sends the
upgrade request upstream as a head only (no chunked framing), that the upstream
connection is never reused after an upgrade, and that either side's close ends
both. Paths:

    /ws...       101, then every frame echoed (a close frame is echoed, then close)
    /raw...      101, then raw bytes echoed until EOF; then the backend closes
    /bye...      101, one text frame "bye", then the backend closes
    /refuse...   a normal 403 with a body (the upgrade is refused)
    anything else (no Upgrade): 200 "ok", keep-alive
"""

import base64
import hashlib
import os
import socket
import struct
import threading
import time

import pytest

import http_backends as hb

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
UPGRADE = [{"upgrade_type": "websocket"}]


# ------------------------------------------------------------------ frames


def ws_frame(opcode, payload, mask=True):
    """One final frame; client frames are masked (RFC 6455 5.3)."""
    head = bytearray([0x80 | opcode])
    mbit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        head += key
        payload = xor_mask(payload, key)
    return bytes(head) + payload


def xor_mask(data, key):
    if not data:
        return b""
    k = (key * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(len(data), "big")


def recv_exact(sock, buf, n):
    while len(buf) < n:
        d = sock.recv(max(65536, n - len(buf)))
        if not d:
            return None
        buf += d
    out = bytes(buf[:n])
    del buf[:n]
    return out


def read_frame(sock, buf):
    """(opcode, payload, masked) of the next frame, or None on EOF."""
    h = recv_exact(sock, buf, 2)
    if h is None:
        return None
    opcode, n, masked = h[0] & 0x0F, h[1] & 0x7F, bool(h[1] & 0x80)
    if n == 126:
        n = struct.unpack("!H", recv_exact(sock, buf, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(sock, buf, 8))[0]
    key = recv_exact(sock, buf, 4) if masked else None
    payload = recv_exact(sock, buf, n) if n else b""
    if payload is None:
        return None
    if key:
        payload = xor_mask(payload, key)
    return opcode, payload, masked


def read_head(sock, buf):
    """The bytes of one HTTP head (up to the blank line), or None on EOF."""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            return None
        buf += d
    i = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:i])
    del buf[:i]
    return head


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers.append((k.strip().lower(), v.strip()))
    return first, headers


def hval(headers, name):
    vals = [v for k, v in headers if k == name]
    return ", ".join(vals) if vals else None


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


# ------------------------------------------------------------------ the backend


class WsBackend:
    def __init__(self):
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = 0
        self.requests = []        # {"head": bytes, "path": str, "headers": [...], "conn": n}
        self.early = []           # bytes that came behind an upgrade head before the 101 went out
        self.events = []          # ("eof", path) when a tunnel's client side ended
        self.stopping = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                n = self.accepted
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()

    def stop(self):
        self.stopping = True
        try:
            self.ls.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass

    def _serve(self, c, n):
        buf = bytearray()
        try:
            while True:
                head = read_head(c, buf)
                if head is None:
                    return
                (method, target, version), headers = parse_head(head)
                with self.lock:
                    self.requests.append({"head": head, "path": target, "headers": headers, "conn": n})
                up = (hval(headers, "upgrade") or "").lower()
                if up != "websocket":
                    cl = int(hval(headers, "content-length") or "0")
                    if cl:
                        recv_exact(c, buf, cl)
                    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    continue
                if target.startswith("/refuse"):
                    c.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\n"
                              b"content-length: 7\r\n\r\nno ws!\n")
                    continue
                # nothing may follow the head of an upgrade request (no chunk terminator)
                c.settimeout(0.2)
                try:
                    extra = c.recv(65536)
                except socket.timeout:
                    extra = b""
                c.settimeout(None)
                with self.lock:
                    self.early.append(extra)
                buf += extra
                accept = accept_key(hval(headers, "sec-websocket-key") or "").encode()
                c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                          b"sec-websocket-accept: " + accept + b"\r\n\r\n")
                if target.startswith("/raw"):
                    self._raw_echo(c, buf)
                elif target.startswith("/bye"):
                    c.sendall(ws_frame(1, b"bye", mask=False))
                    time.sleep(0.1)
                else:
                    self._ws_echo(c, buf, target)
                return
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _ws_echo(self, c, buf, target):
        while True:
            f = read_frame(c, buf)
            if f is None:
                with self.lock:
                    self.events.append(("eof", target))
                return
            opcode, payload, masked = f
            if not masked:
                # RFC 6455 5.1: a server closes on an unmasked client frame
                c.sendall(ws_frame(8, struct.pack("!H", 1002), mask=False))
                return
            c.sendall(ws_frame(opcode, payload, mask=False))
            if opcode == 8:
                return

    def _raw_echo(self, c, buf):
        if buf:
            c.sendall(bytes(buf))
            buf.clear()
        while True:
            d = c.recv(262144)
            if not d:
                with self.lock:
                    self.events.append(("eof", "/raw"))
                c.shutdown(socket.SHUT_WR)
                return
            c.sendall(d)


# ------------------------------------------------------------------ client side


def handshake(lp, path="/ws", timeout=10):
    s = socket.create_connection(("127.0.0.1", lp), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
    buf = bytearray()
    head = read_head(s, buf)
    assert head is not None, "herald closed during the handshake"
    (version, status, _), headers = parse_head(head)
    return s, buf, int(status), headers, key


def start(herald, upstreams, port, **kw):
    b = upstreams(WsBackend)
    h, lp = hb.start_proxy(herald, port, [b.port], upgrade_configs=UPGRADE, **kw)
    return h, lp, b


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def recv_until_close(s, buf, timeout=5.0):
    """Everything until the peer closes; None if it does not within timeout."""
    s.settimeout(timeout)
    out = bytearray(buf)
    buf.clear()
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return bytes(out)
            out += d
    except socket.timeout:
        return None
    except ConnectionResetError:
        return bytes(out)


# ------------------------------------------------------------------ tests


def test_http_websocket_echo_frames(herald, upstreams, port):
    h, lp, b = start(herald, upstreams, port)
    s, buf, status, headers, key = handshake(lp)
    try:
        assert status == 101, headers
        assert hval(headers, "sec-websocket-accept") == accept_key(key)
        assert (hval(headers, "upgrade") or "").lower() == "websocket"
        assert "upgrade" in (hval(headers, "connection") or "").lower()
        assert hval(headers, "transfer-encoding") is None and hval(headers, "content-length") is None
        big = os.urandom(200 * 1024)
        frames = [(1, b"hello"), (1, "h\u00e9llo w\u00f6rld".encode()), (2, os.urandom(1000)),
                  (1, big.hex()[:200 * 1024].encode()), (2, big), (9, b"ping?"), (1, b"")]
        for opcode, payload in frames:
            s.sendall(ws_frame(opcode, payload))
            f = read_frame(s, buf)
            assert f is not None, "herald closed the tunnel"
            assert f[0] == opcode and f[1] == payload and not f[2], (opcode, len(payload), f[0], len(f[1]))
        # pipelined: several frames in one write, echoes in order
        burst = [(1, ("m%d" % i).encode() * (i * 100 + 1)) for i in range(20)]
        s.sendall(b"".join(ws_frame(o, p) for o, p in burst))
        for opcode, payload in burst:
            assert read_frame(s, buf)[:2] == (opcode, payload)
        s.sendall(ws_frame(8, struct.pack("!H", 1000) + b"done"))
        assert read_frame(s, buf)[:2] == (8, struct.pack("!H", 1000) + b"done")
        # the backend closes after the close frame: herald closes the client too
        assert recv_until_close(s, buf) == b"", "the client connection stays open after the upstream closed"
    finally:
        s.close()

    # upstream: the head only, no body framing, upgrade headers kept
    assert len(b.requests) == 1
    req = b.requests[0]
    assert req["path"] == "/ws"
    up = req["headers"]
    assert (hval(up, "upgrade") or "").lower() == "websocket", req["head"]
    assert "upgrade" in (hval(up, "connection") or "").lower(), req["head"]
    assert hval(up, "transfer-encoding") is None, req["head"]
    assert hval(up, "content-length") is None, req["head"]
    assert hval(up, "sec-websocket-key") == key
    assert b.early == [b""], "bytes after the upgrade head before the 101: %r" % b.early
    assert h.wait_stat("http.ingress_http.downstream_cx_upgrades_total", lambda v: v >= 1) == 1
    assert h.wait_stat("http.ingress_http.downstream_cx_upgrades_active", lambda v: v == 0) == 0
    assert h.wait_stat("cluster.backend.upstream_cx_active", lambda v: v == 0) == 0
    assert h.wait_stat("cluster.backend.upstream_rq_active", lambda v: v == 0) == 0


def test_http_websocket_raw_5mib_sha256(herald, upstreams, port):
    """After the 101 the bytes are opaque: 5 MiB of arbitrary bytes (not frames)
    go up and come back intact; the client's half-close reaches the backend,
    whose close then reaches the client."""
    h, lp, b = start(herald, upstreams, port)
    s, buf, status, headers, _ = handshake(lp, "/raw", timeout=30)
    data = os.urandom(5 * 1024 * 1024)
    got = bytearray(buf)
    try:
        assert status == 101, headers
        errors = []

        def send():
            try:
                view = memoryview(data)
                for i in range(0, len(data), 100000):
                    s.sendall(view[i:i + 100000])
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=send)
        t.start()
        s.settimeout(30)
        while True:
            d = s.recv(262144)
            if not d:
                break
            got += d
        t.join(30)
        assert not errors, errors
    finally:
        s.close()
    assert len(got) == len(data)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    assert wait_for(lambda: ("eof", "/raw") in b.events), "the backend never saw the client's end"
    assert h.wait_stat("cluster.backend.upstream_cx_active", lambda v: v == 0) == 0
    assert h.wait_stat("http.ingress_http.downstream_cx_active", lambda v: v == 0) == 0


def test_http_websocket_backpressure(herald, upstreams, port):
    """A client that does not read: herald stops reading the backend, the
    backend stops reading herald, herald stops reading the client; nothing is
    lost once the client reads again, and herald did not buffer it all."""
    h, lp, b = start(herald, upstreams, port)
    s, buf, status, headers, _ = handshake(lp, "/raw", timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    total = 48 * 1024 * 1024
    chunk = os.urandom(1024 * 1024)
    sent = [0]
    try:
        assert status == 101, headers
        rss0 = h.rss_kb()

        def send():
            try:
                while sent[0] < total:
                    s.sendall(chunk)
                    sent[0] += len(chunk)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        t = threading.Thread(target=send, daemon=True)
        t.start()
        # not reading: the sender stalls well short of the total
        time.sleep(1.5)
        stalled_at = sent[0]
        rss_stalled = h.rss_kb()
        assert stalled_at < total, "48 MiB went in without anybody reading the echo"
        got = len(buf)
        digest = hashlib.sha256(bytes(buf))
        s.settimeout(30)
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            got += len(d)
            digest.update(d)
        t.join(30)
    finally:
        s.close()
    print("backpressure: stalled at %d MiB, herald grew %d KiB" % (stalled_at >> 20, rss_stalled - rss0))
    assert got == total
    expect = hashlib.sha256()
    for _ in range(total // len(chunk)):
        expect.update(chunk)
    assert digest.hexdigest() == expect.hexdigest()
    # the kernel's socket buffers hold a few MiB; herald itself must not hold the rest
    grew = rss_stalled - rss0
    assert grew < 32 * 1024, "herald grew by %d KiB while the client did not read (stalled at %d)" % (
        grew, stalled_at)


def test_http_websocket_upstream_close_ends_downstream(herald, upstreams, port):
    h, lp, b = start(herald, upstreams, port)
    s, buf, status, headers, _ = handshake(lp, "/bye")
    try:
        assert status == 101, headers
        assert read_frame(s, buf)[:2] == (1, b"bye")
        assert recv_until_close(s, buf) == b"", "herald did not close the client after the backend closed"
    finally:
        s.close()
    assert h.wait_stat("cluster.backend.upstream_cx_active", lambda v: v == 0) == 0
    assert h.wait_stat("http.ingress_http.downstream_cx_active", lambda v: v == 0) == 0


def test_http_websocket_downstream_close_ends_upstream(herald, upstreams, port):
    h, lp, b = start(herald, upstreams, port)
    s, buf, status, headers, _ = handshake(lp, "/ws-dc")
    try:
        assert status == 101, headers
        s.sendall(ws_frame(1, b"one"))
        assert read_frame(s, buf)[:2] == (1, b"one")
    finally:
        s.close()
    assert wait_for(lambda: ("eof", "/ws-dc") in b.events), "the backend never saw the client go"
    assert h.wait_stat("cluster.backend.upstream_cx_active", lambda v: v == 0) == 0
    assert h.wait_stat("http.ingress_http.downstream_cx_active", lambda v: v == 0) == 0


def test_http_websocket_connection_not_reused(herald, upstreams, port):
    """The pool never puts an upgraded connection back: after a WebSocket
    session (and after a refused upgrade) plain requests get new connections."""
    h, lp, b = start(herald, upstreams, port)
    assert hb.request(lp, "/plain1")[0] == 200
    assert b.accepted == 1
    s, buf, status, headers, _ = handshake(lp, "/ws")
    try:
        assert status == 101, headers
        s.sendall(ws_frame(1, b"x"))
        assert read_frame(s, buf)[:2] == (1, b"x")
        # while the tunnel is open, a plain request cannot have its connection
        assert hb.request(lp, "/plain2")[0] == 200
        s.sendall(ws_frame(8, b""))
        assert read_frame(s, buf)[:2] == (8, b"")
        assert recv_until_close(s, buf) == b""
    finally:
        s.close()
    assert h.wait_stat("cluster.backend.upstream_cx_active", lambda v: v <= 1) <= 1
    assert hb.request(lp, "/plain3")[0] == 200
    conns = {r["path"]: r["conn"] for r in b.requests}
    # an idle connection may carry the upgrade (it was clean); it never comes back
    assert conns["/plain2"] != conns["/ws"], "a plain request went into the tunnel's connection"
    assert conns["/plain3"] != conns["/ws"], "a plain request went on the upgraded connection"
    assert conns["/plain3"] == conns["/plain2"], "plain connections are pooled"


def test_http_websocket_refused_upstream_is_normal_response(herald, upstreams, port):
    """A non-101 answer to an upgrade is an ordinary response; the upstream
    connection that carried it is not reused and the client's connection closes."""
    h, lp, b = start(herald, upstreams, port)
    s, buf, status, headers, _ = handshake(lp, "/refuse")
    try:
        assert status == 403, headers
        assert hval(headers, "upgrade") is None
        n = int(hval(headers, "content-length") or "-1")
        assert n == 7, headers
        assert recv_exact(s, buf, n) == b"no ws!\n"
        assert recv_until_close(s, buf) == b"", "the client connection stays open after a refused upgrade"
    finally:
        s.close()
    assert hval(b.requests[0]["headers"], "transfer-encoding") is None, b.requests[0]["head"]
    assert hb.request(lp, "/after")[0] == 200
    conns = {r["path"]: r["conn"] for r in b.requests}
    assert conns["/after"] != conns["/refuse"]
    assert h.wait_stat("http.ingress_http.downstream_cx_upgrades_total", lambda v: True) == 0


# ------------------------------------------------------------------ RFC 8441: WebSocket over HTTP/2


def h2_ws_client(lp):
    """A cleartext HTTP/2 connection (python3-h2) after the server's SETTINGS."""
    h2c = pytest.importorskip("h2.connection")
    h2cfg = pytest.importorskip("h2.config")
    s = socket.create_connection(("127.0.0.1", lp), timeout=10)
    c = h2c.H2Connection(h2cfg.H2Configuration(client_side=True, validate_outbound_headers=False))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c


def h2_pump(s, c, events):
    import h2.events
    d = s.recv(65536)
    assert d, "herald closed the HTTP/2 connection"
    for e in c.receive_data(d):
        if isinstance(e, h2.events.DataReceived):
            c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        events.append(e)
    s.sendall(c.data_to_send())


def frames_in(data):
    """The server's (unmasked) WebSocket frames in data: [(opcode, payload)]."""
    out, buf = [], bytearray(data)
    while len(buf) >= 2:
        n = buf[1] & 0x7F
        head = 2 + (2 if n == 126 else 8 if n == 127 else 0)
        if n >= 126:
            n = int.from_bytes(buf[2:head], "big")
        if len(buf) < head + n:
            break
        out.append((buf[0] & 0x0F, bytes(buf[head:head + n])))
        del buf[:head + n]
    return out


def test_websocket_over_http2_extended_connect(herald, upstreams, port):
    """With allow_connect herald offers SETTINGS_ENABLE_CONNECT_PROTOCOL; an
    extended CONNECT (:protocol websocket) reaches the HTTP/1.1 backend as a
    GET Upgrade with a Sec-WebSocket-Key of herald's, its 101 comes back as
    a 200 on the stream, and frames are echoed both ways until the close."""
    import h2.events
    h, lp, b = start(herald, upstreams, port, http2_protocol_options={"allow_connect": True})
    s, c = h2_ws_client(lp)
    events = []
    while not any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events):
        h2_pump(s, c, events)
    assert c.remote_settings.get(8) == 1, dict(c.remote_settings)   # SETTINGS_ENABLE_CONNECT_PROTOCOL
    c.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                       (":path", "/ws/h2"), (":authority", "ws.test"), ("sec-websocket-version", "13")])
    s.sendall(c.data_to_send())
    while not any(isinstance(e, h2.events.ResponseReceived) for e in events):
        h2_pump(s, c, events)
    resp = dict((k.decode(), v.decode()) for k, v in
                next(e for e in events if isinstance(e, h2.events.ResponseReceived)).headers)
    assert resp[":status"] == "200" and "sec-websocket-accept" not in resp, resp
    c.send_data(1, ws_frame(1, b"hello over h2"))
    s.sendall(c.data_to_send())
    got = bytearray()
    while not frames_in(got):
        before = len(events)
        h2_pump(s, c, events)
        for e in events[before:]:
            if isinstance(e, h2.events.DataReceived):
                got += e.data
    assert frames_in(got) == [(1, b"hello over h2")]
    req = b.requests[0]
    assert req["path"] == "/ws/h2" and req["head"].startswith(b"GET /ws/h2 HTTP/1.1\r\n"), req["head"]
    assert (hval(req["headers"], "upgrade") or "").lower() == "websocket"
    assert len(hval(req["headers"], "sec-websocket-key") or "") == 24
    assert hval(req["headers"], "sec-websocket-version") == "13"
    c.send_data(1, ws_frame(8, struct.pack("!H", 1000)), end_stream=True)
    s.sendall(c.data_to_send())
    while not any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 1 for e in events):
        before = len(events)
        h2_pump(s, c, events)
        for e in events[before:]:
            if isinstance(e, h2.events.DataReceived):
                got += e.data
    assert frames_in(got)[-1][0] == 8
    assert h.stat("http.ingress_http.downstream_cx_upgrades_total") == 1
    s.close()


def test_no_extended_connect_without_allow_connect(herald, upstreams, port):
    """Without allow_connect the setting is not offered and a :protocol
    request is refused; nothing reaches the backend."""
    import h2.events
    h, lp, b = start(herald, upstreams, port)
    s, c = h2_ws_client(lp)
    events = []
    while not any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events):
        h2_pump(s, c, events)
    assert not c.remote_settings.get(8)
    c.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                       (":path", "/ws/h2"), (":authority", "ws.test")])
    s.sendall(c.data_to_send())
    done = lambda: any(isinstance(e, (h2.events.StreamReset, h2.events.StreamEnded, h2.events.ConnectionTerminated))
                       for e in events)
    while not done():
        try:
            h2_pump(s, c, events)
        except AssertionError:
            break
    assert not any(isinstance(e, h2.events.ResponseReceived) and dict(e.headers).get(b":status") == b"200"
                   for e in events)
    assert b.requests == []
