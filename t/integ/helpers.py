"""Peers and config builders for herald's integration tests.

Upstream servers are plain threaded TCP servers on 127.0.0.1 (one thread per
connection); each records what it saw so a test can check both ends. The
config builders return Envoy v3 bootstrap fragments as dicts."""

import hashlib
import os
import socket
import threading
import time

# ------------------------------------------------------------------ ports

_given_ports = set()


def _worker_slot():
    """(this worker's index, number of workers) under pytest-xdist, else (0, 1)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if name.startswith("gw") and name[2:].isdigit() and count > 1:
        return int(name[2:]) % count, count
    return 0, 1


_slot, _slots = _worker_slot()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now (and that this
    session has not handed out before). Under pytest-xdist each worker takes
    only the ports of its own class, (port >> 1) % workers, so two workers
    never hand out the same port between its probe and its bind (not port %
    workers: Linux gives bind() odd ports and keeps even ones for connect())."""
    for _ in range(100 * _slots):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if (port >> 1) % _slots == _slot and port not in _given_ports:
            _given_ports.add(port)
            return port
    raise RuntimeError("no free port")


# ------------------------------------------------------------------ config builders

TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def sock_addr(port, host="127.0.0.1"):
    return {"socket_address": {"address": host, "port_value": port}}


def tcp_proxy_filter(cluster, stat_prefix="tcp", **extra):
    cfg = {"@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix, "cluster": cluster}
    cfg.update(extra)
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": cfg}


def tcp_listener(port, cluster, stat_prefix="tcp", name=None, before=(), **tcp_extra):
    """A listener on 127.0.0.1:port whose chain is `before` filters + tcp_proxy."""
    filters = list(before) + [tcp_proxy_filter(cluster, stat_prefix, **tcp_extra)]
    return {
        "name": name or "tcp_%d" % port,
        "address": sock_addr(port),
        "filter_chains": [{"filters": filters}],
    }


def cluster(name, endpoints, type="STATIC", lb_policy="ROUND_ROBIN", connect_timeout="1s", **extra):
    """endpoints: list of (host, port)."""
    c = {
        "name": name,
        "type": type,
        "connect_timeout": connect_timeout,
        "lb_policy": lb_policy,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": sock_addr(p, h)}} for h, p in endpoints]}],
        },
    }
    c.update(extra)
    return c


def bootstrap(listeners, clusters):
    return {"static_resources": {"listeners": list(listeners), "clusters": list(clusters)}}


# ------------------------------------------------------------------ data pattern

_PATTERN = os.urandom(4 << 20)
_CHUNK = 1 << 20


def pattern_chunks(total):
    """Yields memoryviews adding up to `total` bytes: slices of a random buffer
    at shifting offsets and sizes, so the stream is not periodic and a lost,
    duplicated or reordered chunk changes its hash."""
    mv = memoryview(_PATTERN)
    sent = 0
    i = 0
    while sent < total:
        n = min(_CHUNK - (i % 7) * 4093, total - sent)
        start = (i * 7919 * 13) % (len(_PATTERN) - _CHUNK)
        yield mv[start:start + n]
        sent += n
        i += 1


def send_pattern(sock, total):
    """Sends `total` pattern bytes; returns (bytes sent, sha256 hex)."""
    h = hashlib.sha256()
    n = 0
    for chunk in pattern_chunks(total):
        sock.sendall(chunk)
        h.update(chunk)
        n += len(chunk)
    return n, h.hexdigest()


def recv_all(sock, limit=None, hash=True):
    """Reads until EOF (or `limit` bytes); returns (bytes received, sha256 hex or None)."""
    h = hashlib.sha256() if hash else None
    buf = bytearray(1 << 20)
    mv = memoryview(buf)
    n = 0
    while limit is None or n < limit:
        want = len(buf) if limit is None else min(len(buf), limit - n)
        k = sock.recv_into(mv[:want])
        if k == 0:
            break
        if h:
            h.update(mv[:k])
        n += k
    return n, h.hexdigest() if h else None


def send_and_read(sock, payload, prefix=b""):
    """Sends payload then a half-close from a thread while reading; returns
    prefix + all that came back until the peer closed (a tunnel's round trip)."""
    def send():
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=send, daemon=True)
    t.start()
    got = bytearray(prefix)
    while True:
        d = sock.recv(1 << 16)
        if not d:
            break
        got += d
    t.join(10)
    return bytes(got)


def recv_until_eof(sock, max_bytes=1 << 24):
    out = bytearray()
    while len(out) < max_bytes:
        d = sock.recv(65536)
        if not d:
            break
        out += d
    return bytes(out)


def recv_line(sock, max_bytes=4096):
    """Reads one '\\n'-terminated line (without it); b'' on EOF before any byte."""
    out = bytearray()
    while len(out) < max_bytes:
        d = sock.recv(1)
        if not d:
            break
        if d == b"\n":
            return bytes(out)
        out += d
    return bytes(out)


def connect(port, timeout=5.0, host="127.0.0.1", rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def closed_by_peer(sock, timeout=5.0):
    """True when the peer closes (EOF or reset) within timeout without sending data."""
    sock.settimeout(timeout)
    try:
        d = sock.recv(4096)
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return d == b""


def connect_refused(port):
    """True when nothing listens on 127.0.0.1:port (a closed listener)."""
    try:
        connect(port).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_for(pred, timeout=5.0, interval=0.05):
    """Polls pred() until it returns something true; returns that or the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def wait_lines(path, n, timeout=5.0):
    """The lines of a file (an access log) once it has at least n, or what it
    has when timeout passes."""
    def lines():
        try:
            with open(path) as f:
                return f.read().splitlines()
        except OSError:
            return []
    return wait_for(lambda: len(lines()) >= n and lines(), timeout) or lines()


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User + system CPU time of process pid so far (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ upstream servers


class TcpServer:
    """A threaded TCP server on 127.0.0.1; subclasses implement handle(conn)."""

    def __init__(self, host="127.0.0.1", rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((host, 0))
        self.sock.listen(1024)
        self.sock.settimeout(0.1)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = 0
        self.errors = []
        self.results = []
        self._conns = set()
        self._threads = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def addr(self):
        return (self.host, self.port)

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            c.settimeout(60)
            with self.lock:
                self.accepted += 1
                self._conns.add(c)
            t = threading.Thread(target=self._run, args=(c,), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, c):
        try:
            self.handle(c)
        except OSError as e:
            if not self._stopping.is_set():
                with self.lock:
                    self.errors.append(repr(e))
        finally:
            with self.lock:
                self._conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def handle(self, conn):
        raise NotImplementedError

    def track(self, wrapped):
        """A socket that took over a connection's descriptor (a TLS wrap): stop()
        shuts it down too, so its thread does not sit in recv until a timeout."""
        with self.lock:
            self._conns.add(wrapped)

    def stop(self):
        self._stopping.set()
        self._thread.join(2)
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(2)


class EchoServer(TcpServer):
    """Echoes every byte. With a tag, first sends "<tag>\\n" on connect."""

    def __init__(self, tag=None):
        self.tag = tag
        super().__init__()

    def handle(self, c):
        if self.tag is not None:
            c.sendall(self.tag.encode() + b"\n")
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)


class HashServer(TcpServer):
    """Sink and source: sends `send_bytes` pattern bytes (then shuts down its
    write side) while hashing all it receives until EOF. One result per
    connection: dict(sent, sent_sha, recv, recv_sha)."""

    def __init__(self, send_bytes):
        self.send_bytes = send_bytes
        super().__init__()

    def handle(self, c):
        res = {}

        def sender():
            try:
                res["sent"], res["sent_sha"] = send_pattern(c, self.send_bytes)
                c.shutdown(socket.SHUT_WR)
            except OSError as e:
                res["send_error"] = repr(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        res["recv"], res["recv_sha"] = recv_all(c)
        t.join(120)
        with self.lock:
            self.results.append(res)


class ReplyAfterEofServer(TcpServer):
    """Reads until the client's FIN, then answers "got N bytes: <data>" after a
    short pause and closes."""

    def handle(self, c):
        data = recv_until_eof(c)
        time.sleep(0.2)
        c.sendall(b"got %d bytes: " % len(data) + data)
        with self.lock:
            self.results.append(data)


class CloseFirstServer(TcpServer):
    """Sends a greeting and shuts down its write side at once, then keeps
    reading until the client's FIN; records what arrived after its own FIN."""

    def handle(self, c):
        c.sendall(b"hello, closing my side\n")
        c.shutdown(socket.SHUT_WR)
        data = recv_until_eof(c)
        with self.lock:
            self.results.append(data)


class SourceServer(TcpServer):
    """Sends `total` pattern bytes as fast as the peer takes them, then closes.
    self.progress holds the bytes handed to the kernel so far (per connection
    the latest one)."""

    def __init__(self, total, hash=False):
        self.total = total
        self.hash = hash
        self.progress = 0
        super().__init__()

    def handle(self, c):
        h = hashlib.sha256() if self.hash else None
        n = 0
        for chunk in pattern_chunks(self.total):
            c.sendall(chunk)
            if h:
                h.update(chunk)
            n += len(chunk)
            self.progress = n
        with self.lock:
            self.results.append({"sent": n, "sent_sha": h.hexdigest() if h else None})


class NeverReadServer(TcpServer):
    """Accepts and never reads; holds each connection until stopped."""

    def __init__(self, rcvbuf=65536):
        super().__init__(rcvbuf=rcvbuf)

    def handle(self, c):
        self._stopping.wait()
