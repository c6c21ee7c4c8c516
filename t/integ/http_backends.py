"""HTTP/1.1 backends, clients and config builders for herald's HTTP tests.

HttpBackend is a small threaded HTTP/1.1 server written on raw sockets (so
it can also misbehave on purpose). Every response carries the header
"x-backend: <name>"; the default body is JSON describing the request the
backend received:

    {"backend": "app1", "method": "POST", "target": "/app1/x?y=1",
     "path": "/app1/x", "version": "HTTP/1.1", "headers": [[name, value], ...],
     "body_len": 3, "body_sha256": "...", "chunked": false, "trailers": [...],
     "conn": 2, "conn_req": 1, "peer": "127.0.0.1:40000"}

The query string steers the answer (parameters combine):

    status=N        answer with status N (204/304 and HEAD: no body)
    delay_ms=N      wait N ms before answering
    fail=N&key=K    the first N requests with this key answer 503 (or `status`)
    chunks=N        send the body chunked, in N pieces (with a trailer when
                    trailer=1)
    bytes=N         the body is N bytes of a fixed pattern (sha256 in the
                    x-body-sha256 header) instead of the JSON
    close=now       close the connection without answering
    close=reset     reset it (RST) without answering
    close=mid       announce content-length N+1000, send part, close
    close=after     answer with no content-length and close to end the body
    hdr=name:value  add a response header (repeatable)
    garbage=1       answer with bytes that are not HTTP, then close
    expect=reject   answer "Expect: 100-continue" with 417 instead of 100

"Expect: 100-continue" is answered with "100 Continue" before the body is
read. A request with "Upgrade: websocket" on a path containing /ws is
answered 101 and then every frame is echoed back (close frames end it).

Run as a program, it serves until interrupted, e.g. the four backends of
etc/examples/front-proxy.yaml:

    python3 t/integ/http_backends.py app1:8081 app2:8082 app3:8083 app4:8084
"""

import base64
import hashlib
import http.client
import itertools
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_conn_ids = itertools.count(1)


def pattern_bytes(n):
    """n bytes of a fixed, non-periodic pattern (the same in every process)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"herald-%d" % i).digest()
        i += 1
    return bytes(out[:n])


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ HTTP/1 reading


class Reader:
    """Buffered reads from a socket: lines and exact byte counts."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            return False
        self.buf += d
        return True

    def readline(self, limit=1 << 20):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > limit or not self._fill():
                line = bytes(self.buf)
                self.buf.clear()
                return line

    def read(self, n):
        while len(self.buf) < n:
            if not self._fill():
                break
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_all(self):
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def read_headers(r):
    """Header lines up to the empty line: list of (name, value)."""
    out = []
    while True:
        line = r.readline()
        if line in (b"\r\n", b"\n", b""):
            return out
        name, _, value = line.decode("latin-1").partition(":")
        out.append((name.strip(), value.strip()))


def hget(headers, name, default=None):
    """The values of name (case-insensitive) joined with ", ", or default."""
    vals = [v for k, v in headers if k.lower() == name.lower()]
    return ", ".join(vals) if vals else default


def read_chunked(r):
    """(body, trailers) of a chunked body."""
    body = bytearray()
    while True:
        line = r.readline()
        if not line:
            raise EOFError("eof in chunked body")
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return bytes(body), read_headers(r)
        body += r.read(size)
        r.readline()


def read_response(r, method="GET"):
    """One response from Reader r: (status, headers [(name, value)], body).
    Interim 1xx responses other than 101 are skipped. status None on EOF."""
    while True:
        line = r.readline()
        if not line:
            return None, [], b""
        parts = line.decode("latin-1").split(" ", 2)
        status = int(parts[1])
        headers = read_headers(r)
        if 100 <= status < 200 and status != 101:
            continue
        break
    if method == "HEAD" or status in (101, 204, 304):
        return status, headers, b""
    te = (hget(headers, "transfer-encoding") or "").lower()
    if "chunked" in te:
        body, _ = read_chunked(r)
        return status, headers, body
    cl = hget(headers, "content-length")
    if cl is not None:
        return status, headers, r.read(int(cl))
    return status, headers, r.read_all()


# ------------------------------------------------------------------ the backend


class HttpBackend:
    """A threaded HTTP/1.1 server on host:port (0: any free port)."""

    def __init__(self, name, port=0, host="127.0.0.1", delay_ms=0):
        self.name = name
        self.delay_ms = delay_ms    # default for delay_ms=
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.sock.settimeout(0.1)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = 0
        self.requests = []      # one dict per request (the JSON body's fields)
        self.errors = []
        self.fail_counts = {}
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
            self.serve(c)
        except (OSError, ValueError, EOFError) as e:
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

    def served(self):
        with self.lock:
            return len(self.requests)

    # ---- one connection

    def serve(self, c):
        r = Reader(c)
        conn_id = next(_conn_ids)
        peer = "%s:%d" % c.getpeername()[:2]
        n = 0
        while True:
            line = r.readline()
            if not line:
                return
            if line in (b"\r\n", b"\n"):
                continue
            method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            headers = read_headers(r)
            n += 1
            path, _, query = target.partition("?")
            q = urllib.parse.parse_qs(query)

            def arg(k, default=None):
                return q[k][0] if k in q else default

            if (hget(headers, "expect") or "").lower() == "100-continue":
                if arg("expect") == "reject":
                    c.sendall(b"HTTP/1.1 417 Expectation Failed\r\nx-backend: %s\r\ncontent-length: 0\r\n"
                              b"connection: close\r\n\r\n" % self.name.encode())
                    self._record(dict(backend=self.name, method=method, target=target, path=path,
                                      version=version, headers=headers, rejected_expect=True))
                    return
                c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

            te = (hget(headers, "transfer-encoding") or "").lower()
            trailers = []
            if "chunked" in te:
                body, trailers = read_chunked(r)
            elif hget(headers, "content-length") is not None:
                body = r.read(int(hget(headers, "content-length")))
            else:
                body = b""

            info = dict(backend=self.name, method=method, target=target, path=path, version=version,
                        headers=headers, body_len=len(body), body_sha256=sha256(body), chunked="chunked" in te,
                        trailers=trailers, conn=conn_id, conn_req=n, peer=peer)
            self._record(info)

            if "/ws" in path and (hget(headers, "upgrade") or "").lower() == "websocket":
                self._websocket(c, r, headers)
                return

            delay = int(arg("delay_ms", self.delay_ms))
            if delay:
                time.sleep(delay / 1000.0)

            close = arg("close")
            if close == "now":
                return
            if close == "reset":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if arg("garbage"):
                c.sendall(b"this is not HTTP\r\n\r\n")
                time.sleep(0.05)
                return

            status = int(arg("status", "200"))
            key = arg("key")
            if arg("fail") is not None and key is not None:
                with self.lock:
                    done = self.fail_counts.get(key, 0)
                    self.fail_counts[key] = done + 1
                status = int(arg("status", "503")) if done < int(arg("fail")) else 200
            info["status"] = status

            if arg("bytes") is not None:
                payload = pattern_bytes(int(arg("bytes")))
                extra = [("x-body-sha256", sha256(payload)), ("content-type", "application/octet-stream")]
            else:
                payload = (json.dumps(info) + "\n").encode()
                extra = [("content-type", "application/json")]
            for h in q.get("hdr", []):
                k, _, v = h.partition(":")
                extra.append((k, v))

            keep = self._keep_alive(version, headers) and close not in ("mid", "after")
            no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
            head = ["HTTP/1.1 %d %s" % (status, http.client.responses.get(status, "Status")),
                    "x-backend: %s" % self.name]
            head += ["%s: %s" % kv for kv in extra]
            chunks = int(arg("chunks", "0"))
            if not keep:
                head.append("connection: close")
            if close == "after":
                c.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (b"" if no_body else payload))
                return
            if close == "mid":
                head.append("content-length: %d" % (len(payload) + 1000))
                c.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload[:len(payload) // 2])
                time.sleep(0.05)
                return
            if chunks and not no_body:
                head.append("transfer-encoding: chunked")
                if arg("trailer"):
                    head.append("trailer: x-trailer")
                out = bytearray(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
                step = max(1, -(-len(payload) // chunks))
                for i in range(0, len(payload), step):
                    piece = payload[i:i + step]
                    out += b"%x\r\n" % len(piece) + piece + b"\r\n"
                out += b"0\r\n" + (b"x-trailer: done\r\n" if arg("trailer") else b"") + b"\r\n"
                c.sendall(bytes(out))
            else:
                if status != 204 and not (100 <= status < 200):
                    head.append("content-length: %d" % len(payload))
                c.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (b"" if no_body else payload))
            if not keep:
                return

    def _record(self, info):
        with self.lock:
            self.requests.append(info)

    @staticmethod
    def _keep_alive(version, headers):
        conn = (hget(headers, "connection") or "").lower()
        if version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn

    def _websocket(self, c, r, headers):
        key = hget(headers, "sec-websocket-key") or ""
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        c.sendall(("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                   "sec-websocket-accept: %s\r\nx-backend: %s\r\n\r\n" % (accept, self.name)).encode())
        while True:
            frame = ws_read_frame(r)
            if frame is None:
                return
            opcode, payload = frame
            c.sendall(ws_frame(opcode, payload, mask=False))
            if opcode == 8:
                return


# ------------------------------------------------------------------ websocket frames


def ws_frame(opcode, payload, mask=True):
    head = bytearray([0x80 | opcode])
    mbit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + payload


def ws_read_frame(r):
    """(opcode, payload) of the next frame from Reader r, or None on EOF."""
    h = r.read(2)
    if len(h) < 2:
        return None
    opcode = h[0] & 0x0F
    n = h[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", r.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", r.read(8))[0]
    key = r.read(4) if h[1] & 0x80 else None
    payload = r.read(n)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return opcode, payload


# ------------------------------------------------------------------ clients


def wait_for_count(backend, n, timeout=5.0):
    """Waits until backend has received n requests; True if it did."""
    deadline = time.monotonic() + timeout
    while backend.served() < n:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def request(port, path, method="GET", headers=None, body=None, timeout=5.0, host="127.0.0.1"):
    """One request on a new connection with http.client: (status, {lower name: value}, body bytes)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
    finally:
        c.close()


def get_json(port, path, **kw):
    """GET path expecting a backend's JSON echo: (status, headers, parsed JSON or None)."""
    status, headers, body = request(port, path, **kw)
    try:
        return status, headers, json.loads(body)
    except ValueError:
        return status, headers, None


def raw(port, data, timeout=3.0, read_until_close=True):
    """Sends raw bytes on a new connection and returns all that comes back
    until the peer closes (or timeout passes: then what arrived so far)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not d:
                break
            out += d
            if not read_until_close:
                break
        return bytes(out)
    finally:
        s.close()


def status_of(response_bytes):
    """The status code of the first response in raw bytes, or None."""
    try:
        return int(response_bytes.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


class _BytesSock:
    def __init__(self, data):
        self.data = data

    def recv(self, n):
        out, self.data = self.data[:n], self.data[n:]
        return out


def statuses_of(response_bytes):
    """Status codes of the responses in raw bytes, parsed one after the other
    (for pipelining); parsing stops at the first thing that is not one."""
    r = Reader(_BytesSock(response_bytes))
    out = []
    while True:
        try:
            status, headers, body = read_response(r)
        except (ValueError, IndexError, EOFError):
            break
        if status is None:
            break
        out.append(status)
    return out


def curl(*args, timeout=15):
    """Runs curl -sS with args; returns CompletedProcess (text)."""
    return subprocess.run(["curl", "-sS", "--max-time", "10"] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, errors="replace", timeout=timeout)


# ------------------------------------------------------------------ config builders


def sock_addr(port, host="127.0.0.1"):
    return {"socket_address": {"address": host, "port_value": port}}


def router_filter(**extra):
    cfg = {"@type": ROUTER_TYPE}
    cfg.update(extra)
    return {"name": "envoy.filters.http.router", "typed_config": cfg}


def rbac_deny_prefix(prefix, policy="deny-admin"):
    """envoy.filters.http.rbac denying every request whose path starts with prefix."""
    return {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": RBAC_TYPE,
        "rules": {"action": "DENY", "policies": {policy: {
            "permissions": [{"url_path": {"path": {"prefix": prefix}}}],
            "principals": [{"any": True}]}}}}}


def route(prefix, cluster=None, match=None, **action):
    """A route on prefix (or a full `match`) forwarding to cluster; action
    keys go into its RouteAction. Pass direct_response=/redirect= for those."""
    r = {"match": match or {"prefix": prefix}}
    if "direct_response" in action:
        r["direct_response"] = action.pop("direct_response")
    elif "redirect" in action:
        r["redirect"] = action.pop("redirect")
    else:
        a = {"cluster": cluster} if cluster else {}
        a.update(action)
        r["route"] = a
    return r


def file_access_log(path, fmt=None):
    cfg = {"@type": FILE_LOG_TYPE, "path": path}
    if fmt:
        cfg["log_format"] = {"text_format_source": {"inline_string": fmt}}
    return {"name": "envoy.access_loggers.file", "typed_config": cfg}


def hcm(stat_prefix, routes, http_filters=None, domains=("*",), vhost_extra=None, route_config_extra=None,
        **extra):
    """An http_connection_manager network filter with one virtual host."""
    vh = {"name": stat_prefix + "_vh", "domains": list(domains), "routes": list(routes)}
    vh.update(vhost_extra or {})
    rc = {"name": stat_prefix + "_routes", "virtual_hosts": [vh]}
    rc.update(route_config_extra or {})
    cfg = {"@type": HCM_TYPE, "stat_prefix": stat_prefix, "codec_type": "AUTO",
           "route_config": rc,
           "http_filters": list(http_filters or []) + [router_filter()]}
    cfg.update(extra)
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": cfg}


def http_listener(port, hcm_filter, name=None):
    return {"name": name or "http_%d" % port, "address": sock_addr(port),
            "filter_chains": [{"filters": [hcm_filter]}]}


def h2_protocol_options(**http2):
    """A cluster's typed_extension_protocol_options for HTTP/2 to its hosts
    (explicit_http_config.http2_protocol_options with http2's fields)."""
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": dict(http2)}}}


def http_cluster(name, ports, lb_policy="ROUND_ROBIN", connect_timeout="1s", **extra):
    c = {"name": name, "type": "STATIC", "connect_timeout": connect_timeout, "lb_policy": lb_policy,
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": sock_addr(p)}} for p in ports]}]}}
    c.update(extra)
    return c


def front_proxy(front_port, app_ports, stat_prefix="ingress_http", http_filters=None, extra_routes=(), **hcm_extra):
    """The issue's front proxy: /app1 -> app1, /app2 -> app2, / -> all_backends
    (round robin over app_ports), /admin denied by rbac."""
    filters = [rbac_deny_prefix("/admin")] + list(http_filters or [])
    routes = list(extra_routes) + [route("/app1", "app1"), route("/app2", "app2"), route("/", "all_backends")]
    return {"static_resources": {
        "listeners": [http_listener(front_port, hcm(stat_prefix, routes, filters, **hcm_extra), "front")],
        "clusters": [http_cluster("app1", [app_ports[0]]), http_cluster("app2", [app_ports[1]]),
                     http_cluster("all_backends", app_ports)]}}


# ------------------------------------------------------------------ test set-ups


def start_front(herald, upstreams, port, names=("app1", "app2", "app3", "app4"), concurrency=1, **front_kw):
    """Four HttpBackends and a herald running front_proxy() over them:
    (herald, front port, [backends])."""
    backends = [upstreams(HttpBackend, n) for n in names]
    fp = port()
    h = herald(front_proxy(fp, [b.port for b in backends], **front_kw), concurrency=concurrency)
    return h, fp, backends


def start_proxy(herald, port, cluster_ports, routes=None, http_filters=None, cluster_extra=None,
                concurrency=1, stat_prefix="ingress_http", extra_clusters=(), **hcm_extra):
    """A herald with one HTTP listener whose routes (default: everything to
    cluster "backend") use the cluster "backend" over cluster_ports:
    (herald, listener port)."""
    lp = port()
    routes = routes or [route("/", "backend")]
    cfg = {"static_resources": {
        "listeners": [http_listener(lp, hcm(stat_prefix, routes, http_filters, **hcm_extra), "proxy")],
        "clusters": [http_cluster("backend", cluster_ports, **(cluster_extra or {}))] + list(extra_clusters)}}
    return herald(cfg, concurrency=concurrency), lp


# ------------------------------------------------------------------ as a program


def main(argv):
    if not argv or any(":" not in a for a in argv):
        sys.stderr.write("usage: %s NAME:PORT [NAME:PORT ...]\n" % os.path.basename(sys.argv[0]))
        return 2
    servers = []
    for a in argv:
        name, _, port = a.rpartition(":")
        servers.append(HttpBackend(name, int(port)))
        print("backend %s on http://127.0.0.1:%s/" % (name, port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    for s in servers:
        s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
