"""1 GiB streamed each way through the HTTP proxy: bytes intact and herald's
memory bounded (issue 3: RSS growth under 64 MiB). The backends stream too
(sha256 computed as the bytes pass), so nothing here holds a body in memory."""

import hashlib
import socket
import threading
import time

import http_backends as hb

GIB = 1 << 30
BLOCK = hb.pattern_bytes(1 << 20)          # 1 MiB, repeated
RSS_LIMIT_KB = 64 * 1024


def expected_sha(total):
    h = hashlib.sha256()
    for _ in range(total // len(BLOCK)):
        h.update(BLOCK)
    return h.hexdigest()


class StreamBackend:
    """POST: reads the body (content-length or chunked is not needed: the
    test sends content-length) hashing it, answers its sha256. GET /N:
    streams N bytes of BLOCK with a content-length."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop_flag = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop_flag:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, rest = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
            if method == "POST":
                n = int(headers.get("content-length", "0"))
                h = hashlib.sha256(rest)
                got = len(rest)
                while got < n:
                    d = c.recv(1 << 20)
                    if not d:
                        return
                    h.update(d)
                    got += len(d)
                body = h.hexdigest().encode()
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
            else:
                n = int(target.strip("/"))
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % n)
                for _ in range(n // len(BLOCK)):
                    c.sendall(BLOCK)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stop_flag = True
        self.sock.close()


def watch_rss(h, peak, done):
    while not done.is_set():
        peak[0] = max(peak[0], h.rss_kb())
        time.sleep(0.05)


def run_with_rss(h, fn):
    base = h.rss_kb()
    peak = [base]
    done = threading.Event()
    t = threading.Thread(target=watch_rss, args=(h, peak, done), daemon=True)
    t.start()
    try:
        result = fn()
    finally:
        done.set()
        t.join(2)
    return result, peak[0] - base


def test_http_1gib_upload_streams(herald, port):
    be = StreamBackend()
    try:
        h, lp = hb.start_proxy(herald, port, [be.port], routes=[hb.route("/", "backend", timeout="120s")])

        def upload():
            s = socket.create_connection(("127.0.0.1", lp), timeout=60)
            s.sendall(b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % GIB)
            for _ in range(GIB // len(BLOCK)):
                s.sendall(BLOCK)
            data = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
                if b"\r\n\r\n" in data and len(data.split(b"\r\n\r\n", 1)[1]) >= 64:
                    break
            s.close()
            return data

        data, growth = run_with_rss(h, upload)
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert data.split(b"\r\n\r\n", 1)[1][:64].decode() == expected_sha(GIB)
        assert growth < RSS_LIMIT_KB, "RSS grew %d KiB during a 1 GiB upload" % growth
    finally:
        be.stop()


def test_http_1gib_download_streams(herald, port):
    be = StreamBackend()
    try:
        h, lp = hb.start_proxy(herald, port, [be.port], routes=[hb.route("/", "backend", timeout="120s")])

        def download():
            s = socket.create_connection(("127.0.0.1", lp), timeout=60)
            s.sendall(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % GIB)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, rest = buf.split(b"\r\n\r\n", 1)
            h = hashlib.sha256(rest)
            got = len(rest)
            while got < GIB:
                d = s.recv(1 << 20)
                if not d:
                    break
                h.update(d)
                got += len(d)
            s.close()
            return head, got, h.hexdigest()

        (head, got, digest), growth = run_with_rss(h, download)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert got == GIB, "received %d of %d bytes" % (got, GIB)
        assert digest == expected_sha(GIB)
        assert growth < RSS_LIMIT_KB, "RSS grew %d KiB during a 1 GiB download" % growth
    finally:
        be.stop()
