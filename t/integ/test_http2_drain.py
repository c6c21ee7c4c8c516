"""HTTP/2's graceful drain (drain_timeout): a client connection that has to
go (here: max_requests_per_connection reached) first gets a GOAWAY naming the
largest stream id, so a request it sent before it read that is still served;
drain_timeout later the last GOAWAY names the last stream taken and the
connection closes. With drain_timeout 0s there is one GOAWAY at once and such
a request is refused, which is what the two steps are for.

The client is hand-made frames with python3-hpack: python3-h2 refuses to
open a stream once it has seen any GOAWAY, which is the very case here."""

import socket
import struct
import time

import pytest

import http_backends as hb
from http_backends import HttpBackend

hpack = pytest.importorskip("hpack")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, GOAWAY = 0, 1, 4, 7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


class RawClient:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.enc = hpack.Encoder()
        self.buf = b""
        self.frames = []            # (type, flags, stream, payload, seconds since start)
        self.t0 = time.monotonic()
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))

    def get(self, sid, path):
        block = self.enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "front"),
                                 (":path", path)])
        self.sock.sendall(frame(HEADERS, END_STREAM | END_HEADERS, sid, block))

    def read_until(self, pred, timeout=5.0):
        """Frames until pred(frames) or EOF ("EOF" appended) or timeout."""
        deadline = time.monotonic() + timeout
        while not pred(self.frames) and time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                d = b""
            if not d:
                self.frames.append(("EOF", 0, 0, b"", time.monotonic() - self.t0))
                break
            self.buf += d
            while len(self.buf) >= 9:
                n = struct.unpack(">I", b"\0" + self.buf[:3])[0]
                if len(self.buf) < 9 + n:
                    break
                ftype, flags = self.buf[3], self.buf[4]
                sid = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
                self.frames.append((ftype, flags, sid, self.buf[9:9 + n], time.monotonic() - self.t0))
                if ftype == SETTINGS and not flags & ACK:
                    self.sock.sendall(frame(SETTINGS, ACK, 0))
                self.buf = self.buf[9 + n:]
        return self.frames

    def goaways(self):
        return [(struct.unpack(">I", f[3][:4])[0] & 0x7FFFFFFF, struct.unpack(">I", f[3][4:8])[0], f[4])
                for f in self.frames if f[0] == GOAWAY]

    def ended(self, sid):
        return any(f[0] in (DATA, HEADERS) and f[2] == sid and f[1] & END_STREAM for f in self.frames)


def proxy(herald, upstreams, port, drain_timeout):
    b = upstreams(HttpBackend, "b")
    return hb.start_proxy(herald, port, [b.port], drain_timeout=drain_timeout,
                          common_http_protocol_options={"max_requests_per_connection": 1})


def test_a_request_sent_before_the_drain_is_read_is_served(herald, upstreams, port):
    h, lp = proxy(herald, upstreams, port, "0.6s")
    c = RawClient(lp)
    c.get(1, "/one")
    c.read_until(lambda f: c.ended(1) and c.goaways())
    assert c.ended(1)
    assert c.goaways()[0][:2] == (2**31 - 1, 0), c.goaways()     # the announcement
    c.get(3, "/two")                    # on its way before the client read the GOAWAY
    c.read_until(lambda f: c.ended(3) or f[-1][0] == "EOF")
    assert c.ended(3), "a request sent before the last GOAWAY was not answered"
    status = hpack.Decoder().decode([f for f in c.frames if f[0] == HEADERS and f[2] == 1][0][3])
    assert (":status", "200") in status
    c.read_until(lambda f: f[-1][0] == "EOF", timeout=5)
    last = c.goaways()[-1]
    assert last[:2] == (3, 0), c.goaways()                        # the last stream it took
    assert 0.4 <= last[2] - c.goaways()[0][2] <= 3.0, c.goaways() # drain_timeout later
    assert c.frames[-1][0] == "EOF"
    assert h.stat("http.ingress_http.downstream_rq_2xx") == 2


def test_drain_timeout_zero_is_one_goaway(herald, upstreams, port):
    """The single-GOAWAY drain (0s): the same late request is refused."""
    h, lp = proxy(herald, upstreams, port, "0s")
    c = RawClient(lp)
    c.get(1, "/one")
    c.read_until(lambda f: c.ended(1) and c.goaways())
    assert c.goaways()[0][:2] == (1, 0), c.goaways()
    c.get(3, "/two")
    c.read_until(lambda f: c.ended(3) or f[-1][0] == "EOF", timeout=3)
    assert not c.ended(3)
    assert h.stat("http.ingress_http.downstream_rq_2xx") == 1
