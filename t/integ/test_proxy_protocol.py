"""PROXY protocol, both ways: the envoy.filters.listener.proxy_protocol
listener filter (v1 and v2 headers from curl --haproxy-protocol, HAProxy
send-proxy / send-proxy-v2 and hand-built ones: addresses, TLVs into dynamic
metadata, malformed and partial headers, allowed versions, TLS after the
header, filter chains and rbac by the restored addresses) and the
envoy.transport_sockets.upstream_proxy_protocol cluster transport (the exact
v1 / v2 bytes a backend gets, added and passed-through TLVs, connection
pooling per downstream address pair, health checks, tcp_proxy, nginx and
HAProxy reading it, herald to herald). Clients that must differ from the
direct peer bind 127.0.0.2; every peer listens on 127.0.0.1."""

import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time

import pytest

import conftest
import helpers
import http_backends as hb
from helpers import wait_lines
from http_backends import HttpBackend
from test_tls import DOWN, INSPECTOR, UP, Pki, certs, tls_socket

PP_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"
UP_PP_TYPE = ("type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3."
              "ProxyProtocolUpstreamTransport")
PER_HOST_TYPE = "type.googleapis.com/envoy.config.core.v3.PerHostConfig"
RAW_BUFFER = {"name": "envoy.transport_sockets.raw_buffer",
              "typed_config": {"@type": "type.googleapis.com/"
                                        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}
NET_RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
DEFAULT_NS = "envoy.filters.listener.proxy_protocol"

SIG = b"\r\n\r\n\x00\r\nQUIT\n"

needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")
needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

# the access log line most tests read: the path, then the addresses the PROXY header restored and the real ones
ADDR_FMT = ("%REQ(:PATH)% remote=%DOWNSTREAM_REMOTE_ADDRESS% direct=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% "
            "local=%DOWNSTREAM_LOCAL_ADDRESS% dlocal=%DOWNSTREAM_DIRECT_LOCAL_ADDRESS% "
            "rport=%DOWNSTREAM_REMOTE_PORT% rip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\n")


# ------------------------------------------------------------------ PROXY headers, built and parsed


def v1(src, dst, sport, dport, proto=None):
    proto = proto or ("TCP6" if ":" in src else "TCP4")
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src, dst, sport, dport)).encode()


def tlv(t, value):
    return bytes([t]) + struct.pack("!H", len(value)) + value


def ip_bytes(a):
    return socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a)


def v2(src=None, dst=None, sport=0, dport=0, tlvs=(), vc=0x21, fam=None, addr=None, length=None):
    """A v2 header: vc is version<<4|command (0x21 PROXY, 0x20 LOCAL), fam the
    family/protocol byte (default from src: 0x11 TCP4, 0x21 TCP6, 0x00 none);
    addr / length replace the address block / the length field."""
    if fam is None:
        fam = 0x00 if src is None else (0x21 if ":" in src else 0x11)
    if addr is None:
        addr = b"" if src is None else ip_bytes(src) + ip_bytes(dst) + struct.pack("!HH", sport, dport)
    body = addr + b"".join(tlv(t, v) for t, v in tlvs)
    return SIG + bytes([vc, fam]) + struct.pack("!H", len(body) if length is None else length) + body


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        d = sock.recv(n - len(out))
        if not d:
            raise EOFError("EOF after %r, wanted %d bytes" % (out, n))
        out += d
    return out


def parse_tlvs(b):
    out = []
    while b:
        if len(b) < 3:
            raise ValueError("truncated TLV %r" % b)
        t, n = b[0], struct.unpack("!H", b[1:3])[0]
        out.append((t, b[3:3 + n]))
        b = b[3 + n:]
    return out


def read_pp(sock):
    """Reads exactly one PROXY header off sock: a dict with raw (the bytes),
    version, and src/dst/sport/dport/tlvs/cmd/fam as they apply."""
    head = read_exact(sock, 12)
    if head == SIG:
        rest = read_exact(sock, 4)
        n = struct.unpack("!H", rest[2:4])[0]
        body = read_exact(sock, n) if n else b""
        h = {"raw": head + rest + body, "version": 2, "vc": rest[0], "fam": rest[1],
             "cmd": {0x21: "PROXY", 0x20: "LOCAL"}.get(rest[0], "?")}
        alen = {0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36}.get(rest[1], 0) if rest[0] == 0x21 else 0
        if alen:
            fam = socket.AF_INET if alen == 12 else socket.AF_INET6
            k = 4 if alen == 12 else 16
            h.update(src=socket.inet_ntop(fam, body[:k]), dst=socket.inet_ntop(fam, body[k:2 * k]),
                     sport=struct.unpack("!H", body[2 * k:2 * k + 2])[0],
                     dport=struct.unpack("!H", body[2 * k + 2:2 * k + 4])[0])
        h["tlvs"] = parse_tlvs(body[alen:]) if rest[0] == 0x21 else []
        return h
    if not head.startswith(b"PROXY "):
        raise ValueError("no PROXY header: %r" % head)
    line = head
    while not line.endswith(b"\r\n"):
        if len(line) > 107:
            raise ValueError("v1 line without CRLF: %r" % line)
        line += read_exact(sock, 1)
    parts = line[:-2].decode().split(" ")
    h = {"raw": line, "version": 1, "proto": parts[1], "tlvs": []}
    if parts[1] in ("TCP4", "TCP6"):
        h.update(src=parts[2], dst=parts[3], sport=int(parts[4]), dport=int(parts[5]))
    return h


class PPHttpBackend(HttpBackend):
    """An HttpBackend whose connections start with a PROXY header: it reads
    the header (exactly its bytes), records it (pp_headers in connection
    order, by_peer keyed like a request's "peer"), then serves HTTP/1.1."""

    def __init__(self, name):
        self.pp_headers = []
        self.by_peer = {}
        super().__init__(name)

    def serve(self, c):
        c.settimeout(5)
        peer = "%s:%d" % c.getpeername()[:2]
        try:
            h = read_pp(c)
        except (ValueError, EOFError, OSError) as e:
            with self.lock:
                self.errors.append("bad PROXY header: %r" % e)
            return
        h["peer"] = peer
        with self.lock:
            self.pp_headers.append(h)
            self.by_peer[peer] = h
        c.settimeout(60)
        super().serve(c)

    def header_of(self, request):
        with self.lock:
            return self.by_peer.get(request["peer"])


class PPEchoServer(helpers.TcpServer):
    """Reads a PROXY header (results: one parsed header per connection), then echoes."""

    def handle(self, c):
        c.settimeout(5)
        try:
            h = read_pp(c)
        except (ValueError, EOFError) as e:
            with self.lock:
                self.errors.append(repr(e))
            return
        with self.lock:
            self.results.append(h)
        c.settimeout(30)
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)


# ------------------------------------------------------------------ clients


class Client:
    """One raw TCP connection to 127.0.0.1:port from src (an address on lo)."""

    def __init__(self, port, src="127.0.0.1", sport=0, timeout=5.0):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind((src, sport))
        self.s.settimeout(timeout)
        self.s.connect(("127.0.0.1", port))
        self.ip, self.port = self.s.getsockname()[:2]
        self.addr = "%s:%d" % (self.ip, self.port)
        self.r = hb.Reader(self.s)

    def send(self, data):
        self.s.sendall(data)

    def request(self, path, pp=b"", close=False, headers=()):
        req = "GET %s HTTP/1.1\r\nhost: pp.test\r\n" % path
        req += "".join("%s: %s\r\n" % kv for kv in headers)
        if close:
            req += "connection: close\r\n"
        self.s.sendall(pp + (req + "\r\n").encode())
        return hb.read_response(self.r)

    def close(self):
        self.s.close()


def get(port, path, pp=b"", src="127.0.0.1"):
    """One request on a new connection (pp sent first): (status, headers, body, client)."""
    c = Client(port, src)
    try:
        status, headers, body = c.request(path, pp, close=True)
    finally:
        c.close()
    return status, headers, body, c


def get_json(port, path, pp=b"", src="127.0.0.1"):
    status, headers, body, c = get(port, path, pp, src)
    assert status == 200, "%s answered %s: %r" % (path, status, body[:300])
    return json.loads(body), c


def xff(info):
    return hb.hget(info["headers"], "x-forwarded-for")


def refused(port, data, src="127.0.0.1", timeout=3.0):
    """Sends data on a new connection; True when herald closes it (EOF or
    reset) without answering a byte."""
    c = Client(port, src)
    try:
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            return True
        return helpers.closed_by_peer(c.s, timeout)
    finally:
        c.close()


def wait_closed(socks, timeout):
    """{name: sock} -> {name: (monotonic time it was closed, bytes it got first)} for those closed in time."""
    pending = dict(socks)
    out = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        r, _, _ = select.select(list(pending.values()), [], [], max(0.0, deadline - time.monotonic()))
        now = time.monotonic()
        for name, s in list(pending.items()):
            if s not in r:
                continue
            try:
                d = s.recv(4096)
            except ConnectionResetError:
                d = b""
            out[name] = (now, d)
            del pending[name]
    return out


# ------------------------------------------------------------------ config builders


def pp_filter(**cfg):
    tc = {"@type": PP_TYPE}
    tc.update(cfg)
    return {"name": "envoy.filters.listener.proxy_protocol", "typed_config": tc}


def with_pp(listener, timeout=None, after=(), **cfg):
    listener["listener_filters"] = [pp_filter(**cfg)] + list(after)
    if timeout:
        listener["listener_filters_timeout"] = timeout
    return listener


def b64(value):
    return base64.b64encode(value).decode()


def pp_transport(version=None, inner=RAW_BUFFER, added=None, pass_through=None, no_inner=False):
    config = {}
    if version:
        config["version"] = version
    if added:
        config["added_tlvs"] = [{"type": t, "value": b64(v)} for t, v in added]
    if pass_through:
        config["pass_through_tlvs"] = pass_through
    tc = {"@type": UP_PP_TYPE, "config": config}
    if not no_inner:
        tc["transport_socket"] = inner
    return {"name": "envoy.transport_sockets.upstream_proxy_protocol", "typed_config": tc}


def pp_cluster(name, ports, version=None, host_tlvs=None, **kw):
    """An HTTP cluster over 127.0.0.1:ports whose transport sends a PROXY
    header; host_tlvs {port: [(type, value)]}: that host's PerHostConfig."""
    c = hb.http_cluster(name, ports, transport_socket=pp_transport(version, **kw))
    for ep in c["load_assignment"]["endpoints"][0]["lb_endpoints"]:
        p = ep["endpoint"]["address"]["socket_address"]["port_value"]
        if host_tlvs and p in host_tlvs:
            ep["metadata"] = {"typed_filter_metadata": {"envoy.transport_sockets.proxy_protocol": {
                "@type": PER_HOST_TYPE, "added_tlvs": [{"type": t, "value": b64(v)} for t, v in host_tlvs[p]]}}}
    return c


def log_hcm(stat_prefix, routes, log, fmt=ADDR_FMT, http_filters=None, **extra):
    extra.setdefault("use_remote_address", True)
    return hb.hcm(stat_prefix, routes, http_filters, access_log=[hb.file_access_log(log, fmt)], **extra)


def pp_proxy(herald, port, tmp_path, clusters, routes=None, fmt=ADDR_FMT, timeout=None, http_filters=None,
             hcm_extra=None, **pp_cfg):
    """A herald with one HTTP listener (proxy_protocol listener filter with
    pp_cfg, use_remote_address, an access log in fmt): (herald, port, log path)."""
    lp = port()
    log = str(tmp_path / ("access_%d.log" % lp))
    routes = routes or [hb.route("/", clusters[0]["name"])]
    lst = with_pp(hb.http_listener(lp, log_hcm("pp", routes, log, fmt, http_filters, **(hcm_extra or {}))),
                  timeout, **pp_cfg)
    h = herald({"static_resources": {"listeners": [lst], "clusters": list(clusters)}})
    return h, lp, log


PP_COUNTERS = ["versions.v1.found", "versions.v1.disallowed", "versions.v1.error",
               "versions.v2.found", "versions.v2.disallowed", "versions.v2.error",
               "not_found_allowed", "not_found_disallowed"]


def pp_stats(h, prefix=None):
    st = h.stats()
    root = "proxy_proto." + (prefix + "." if prefix else "")
    return {k: st.get(root + k, 0) for k in PP_COUNTERS}


def expect_pp_stats(h, prefix=None, **want):
    """The proxy_proto counters are exactly want (v1_found=2 means
    versions.v1.found; unnamed ones 0), waiting a moment for the workers'."""
    full = {k: 0 for k in PP_COUNTERS}
    for k, v in want.items():
        full["versions.%s.%s" % (k[:2], k[3:]) if k[:2] in ("v1", "v2") else k] = v
    got = helpers.wait_for(lambda: (lambda g: g if g == full else None)(pp_stats(h, prefix)), 3.0)
    got = got or pp_stats(h, prefix)
    assert got == full, "proxy_proto.%s counters" % (prefix + "." if prefix else "")


def pre_cx_timeout(lp):
    return "listener.127.0.0.1_%d.downstream_pre_cx_timeout" % lp


# ------------------------------------------------------------------ real peers: haproxy, nginx


class Daemon:
    """haproxy or nginx in the foreground, stopped by its PID; up once each of
    ports accepts a connection."""

    def __init__(self, cmd, log_path, ports, timeout=5.0):
        self.cmd = cmd
        self.log_path = log_path
        self.logf = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        for p in ports:
            while True:
                if self.proc.poll() is not None:
                    self.stop()
                    pytest.fail("%s exited with %s at start:\n%s" % (cmd[0], self.proc.returncode, self.log()))
                try:
                    socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        pytest.fail("%s not listening on %d within %ss:\n%s" % (cmd[0], p, timeout, self.log()))
                    time.sleep(0.05)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.logf:
            self.logf.close()
            self.logf = None


def start_haproxy(upstreams, tmp_path, body, ports):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\n    log stderr format raw local0 err\n"
                   "defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n"
                   "    timeout server 5s\n" + body)
    r = subprocess.run(["haproxy", "-c", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=10)
    assert r.returncode == 0, r.stdout.decode("utf-8", "replace")
    return upstreams(Daemon, ["haproxy", "-db", "-f", str(cfg)], str(tmp_path / "haproxy.log"), ports)


def start_nginx(upstreams, tmp_path, server_body, ports):
    d = tmp_path / "nginx"
    (d / "tmp").mkdir(parents=True)
    conf = d / "nginx.conf"
    conf.write_text("""daemon off;
master_process off;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %(d)s/tmp;
    proxy_temp_path %(d)s/tmp;
    fastcgi_temp_path %(d)s/tmp;
    uwsgi_temp_path %(d)s/tmp;
    scgi_temp_path %(d)s/tmp;
    server {
%(body)s
    }
}
""" % {"d": d, "body": server_body})
    return upstreams(Daemon, ["nginx", "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf)],
                     str(d / "out.log"), ports)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    p = Pki(str(tmp_path_factory.mktemp("pp_pki")))
    p.a = p.issue("a_ec", "a.example", kind="ec")
    p.backend = p.issue("backend_ec", "backend.internal", kind="ec")
    return p


# ================================================================== downstream: the listener filter


@needs_curl
def test_curl_haproxy_protocol_v1(herald, upstreams, port, tmp_path):
    """curl --haproxy-protocol from 127.0.0.2:P: the backend's
    x-forwarded-for and the access log show that source; curl without the
    header is closed unanswered and counted."""
    b = upstreams(HttpBackend, "b")
    h, lp, log = pp_proxy(herald, port, tmp_path, [hb.http_cluster("backend", [b.port])])
    cport = port()
    r = hb.curl("-s", "--haproxy-protocol", "--interface", "127.0.0.2", "--local-port", str(cport),
                "http://127.0.0.1:%d/curl" % lp)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["path"] == "/curl"
    assert xff(info) == "127.0.0.2"
    assert hb.hget(info["headers"], "x-envoy-internal") == "true"   # a loopback source is internal
    assert wait_lines(log, 1) == [
        "/curl remote=127.0.0.2:%d direct=127.0.0.2:%d local=127.0.0.1:%d dlocal=127.0.0.1:%d rport=%d rip=127.0.0.2"
        % (cport, cport, lp, lp, cport)]
    # no header: closed without an answer
    r = hb.curl("-s", "http://127.0.0.1:%d/plain" % lp)
    assert r.returncode != 0 and r.stdout == "", (r.returncode, r.stdout)
    assert b.served() == 1
    expect_pp_stats(h, v1_found=1, not_found_disallowed=1)


@needs_haproxy
def test_haproxy_send_proxy_v1_and_v2_in_front(herald, upstreams, port, tmp_path):
    """HAProxy in front: send-proxy (v1) on one frontend, send-proxy-v2 with
    the unique-id TLV (0x05) on another. A client bound to 127.0.0.2: the
    backend's x-forwarded-for is 127.0.0.2, the access log shows the client
    as the remote, HAProxy (127.0.0.1) as the direct peer, HAProxy's frontend
    as the local address, and the unique id (a rule puts TLV 0x05 into
    dynamic metadata) equal to the x-unique-id header HAProxy added."""
    b = upstreams(HttpBackend, "b")
    fmt = ADDR_FMT.rstrip("\n") + " uid=%DYNAMIC_METADATA(haproxy:uid)%\n"
    h, lp, log = pp_proxy(herald, port, tmp_path, [hb.http_cluster("backend", [b.port])], fmt=fmt,
                          rules=[{"tlv_type": 5, "on_tlv_present": {"metadata_namespace": "haproxy",
                                                                     "key": "uid"}}])
    f1, f2 = port(), port()
    start_haproxy(upstreams, tmp_path, """
frontend fe_v1
    bind 127.0.0.1:%(f1)d
    default_backend be_v1
frontend fe_v2
    bind 127.0.0.1:%(f2)d
    unique-id-format uid-%%{+X}o%%ci:%%cp_%%Ts_%%rt
    default_backend be_v2
backend be_v1
    http-reuse never
    server herald 127.0.0.1:%(lp)d send-proxy
backend be_v2
    http-reuse never
    http-request set-header x-unique-id %%[unique-id]
    server herald 127.0.0.1:%(lp)d send-proxy-v2 proxy-v2-options unique-id
""" % {"f1": f1, "f2": f2, "lp": lp}, [f1, f2])
    i1, c1 = get_json(f1, "/one", src="127.0.0.2")
    i2, c2 = get_json(f2, "/two", src="127.0.0.2")
    assert xff(i1) == "127.0.0.2" and xff(i2) == "127.0.0.2", (i1["headers"], i2["headers"])
    uid = hb.hget(i2["headers"], "x-unique-id")
    assert uid and uid.startswith("uid-"), i2["headers"]
    lines = wait_lines(log, 2)
    assert len(lines) == 2, lines
    pat = (r"^(/\w+) remote=127\.0\.0\.2:(\d+) direct=127\.0\.0\.1:(\d+) local=127\.0\.0\.1:(\d+) "
           r"dlocal=127\.0\.0\.1:%d rport=(\d+) rip=127\.0\.0\.2 uid=(.*)$" % lp)
    got = {}
    for line in lines:
        m = re.match(pat, line)
        assert m, (line, pat)
        got[m.group(1)] = m.groups()[1:]
    assert got["/one"][0] == str(c1.port) and got["/one"][3] == str(c1.port)
    assert got["/two"][0] == str(c2.port) and got["/two"][3] == str(c2.port)
    assert got["/one"][1] not in (str(c1.port), str(lp)), "the direct peer is HAProxy's own socket"
    assert got["/one"][2] == str(f1) and got["/two"][2] == str(f2), "local: HAProxy's frontend"
    assert got["/one"][4] == "-" and got["/two"][4] == uid
    expect_pp_stats(h, v1_found=1, v2_found=1)


def test_v1_tcp4_tcp6_unknown(herald, upstreams, port, tmp_path):
    """Hand-built v1 headers: TCP4 and TCP6 set x-forwarded-for,
    x-envoy-external-address and every access log address; UNKNOWN (bare or
    with addresses after it) keeps the real ones."""
    b = upstreams(HttpBackend, "b")
    h, lp, log = pp_proxy(herald, port, tmp_path, [hb.http_cluster("backend", [b.port])], stat_prefix="hand")
    i, c = get_json(lp, "/tcp4", v1("203.0.113.7", "198.51.100.1", 40000, 8080))
    assert xff(i) == "203.0.113.7" and hb.hget(i["headers"], "x-envoy-external-address") == "203.0.113.7"
    i, c6 = get_json(lp, "/tcp6", v1("2001:db8::7", "2001:db8::1", 40001, 443))
    assert xff(i) == "2001:db8::7" and hb.hget(i["headers"], "x-envoy-external-address") == "2001:db8::7"
    i, cu = get_json(lp, "/unknown", b"PROXY UNKNOWN\r\n")
    assert xff(i) == "127.0.0.1"
    i, cu2 = get_json(lp, "/unknown2", b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n")
    assert xff(i) == "127.0.0.1"
    assert wait_lines(log, 4) == [
        "/tcp4 remote=203.0.113.7:40000 direct=127.0.0.1:%d local=198.51.100.1:8080 dlocal=127.0.0.1:%d "
        "rport=40000 rip=203.0.113.7" % (c.port, lp),
        "/tcp6 remote=[2001:db8::7]:40001 direct=127.0.0.1:%d local=[2001:db8::1]:443 dlocal=127.0.0.1:%d "
        "rport=40001 rip=2001:db8::7" % (c6.port, lp),
        "/unknown remote=127.0.0.1:%d direct=127.0.0.1:%d local=127.0.0.1:%d dlocal=127.0.0.1:%d "
        "rport=%d rip=127.0.0.1" % (cu.port, cu.port, lp, lp, cu.port),
        "/unknown2 remote=127.0.0.1:%d direct=127.0.0.1:%d local=127.0.0.1:%d dlocal=127.0.0.1:%d "
        "rport=%d rip=127.0.0.1" % (cu2.port, cu2.port, lp, lp, cu2.port),
    ]
    expect_pp_stats(h, "hand", v1_found=4)


def test_v2_proxy_local_unspec_tlvs(herald, upstreams, port, tmp_path):
    """Hand-built v2 headers: PROXY over TCP4 (with TLVs, which change
    nothing without rules) and TCP6 set the addresses; LOCAL (even with
    addresses and TLVs) and UNSPEC keep the real ones."""
    b = upstreams(HttpBackend, "b")
    h, lp, log = pp_proxy(herald, port, tmp_path, [hb.http_cluster("backend", [b.port])], stat_prefix="hand2")
    tl = [(0x05, b"some-id"), (0xE0, b"x" * 300), (0x04, b"")]
    i, c4 = get_json(lp, "/tcp4", v2("203.0.113.8", "198.51.100.2", 50000, 8443, tlvs=tl))
    assert xff(i) == "203.0.113.8"
    i, c6 = get_json(lp, "/tcp6", v2("2001:db8:0:1::8", "2001:db8::2", 50001, 443))
    assert xff(i) == "2001:db8:0:1::8"
    i, cl = get_json(lp, "/local", v2("203.0.113.9", "198.51.100.3", 1, 2, tlvs=tl, vc=0x20))
    assert xff(i) == "127.0.0.1"
    i, cl0 = get_json(lp, "/local0", v2(vc=0x20))
    assert xff(i) == "127.0.0.1"
    i, cu = get_json(lp, "/unspec", v2(fam=0x00, addr=b""))
    assert xff(i) == "127.0.0.1"

    def real(path, c):
        return ("%s remote=127.0.0.1:%d direct=127.0.0.1:%d local=127.0.0.1:%d dlocal=127.0.0.1:%d "
                "rport=%d rip=127.0.0.1" % (path, c.port, c.port, lp, lp, c.port))
    assert wait_lines(log, 5) == [
        "/tcp4 remote=203.0.113.8:50000 direct=127.0.0.1:%d local=198.51.100.2:8443 dlocal=127.0.0.1:%d "
        "rport=50000 rip=203.0.113.8" % (c4.port, lp),
        "/tcp6 remote=[2001:db8:0:1::8]:50001 direct=127.0.0.1:%d local=[2001:db8::2]:443 dlocal=127.0.0.1:%d "
        "rport=50001 rip=2001:db8:0:1::8" % (c6.port, lp),
        real("/local", cl), real("/local0", cl0), real("/unspec", cu)]
    expect_pp_stats(h, "hand2", v2_found=5)


@pytest.mark.parametrize("allow", [False, True], ids=["strict", "allow_without"])
def test_headers_split_across_sends(herald, upstreams, port, tmp_path, allow):
    """A v1 and a v2 header arriving in small pieces (the first one shorter
    than the signature), the request right after the last one; a plain
    request split after its first byte (served when
    allow_requests_without_proxy_protocol, else refused)."""
    b = upstreams(HttpBackend, "b")
    h, lp, log = pp_proxy(herald, port, tmp_path, [hb.http_cluster("backend", [b.port])],
                          allow_requests_without_proxy_protocol=allow)
    req = b"GET /%s HTTP/1.1\r\nhost: pp.test\r\nconnection: close\r\n\r\n"

    def pieces(chunks):
        c = Client(lp)
        for ch in chunks[:-1]:
            c.send(ch)
            time.sleep(0.03)
        c.send(chunks[-1])
        status, headers, body = hb.read_response(c.r)
        c.close()
        assert status == 200, (chunks, status, body[:200])
        return json.loads(body)

    h1 = v1("203.0.113.10", "198.51.100.10", 1111, 2222)
    i = pieces([h1[:3], h1[3:20], h1[20:-1], h1[-1:] + req % b"v1"])
    assert xff(i) == "203.0.113.10" and i["path"] == "/v1"
    h2 = v2("203.0.113.11", "198.51.100.11", 3333, 4444, tlvs=[(0xE0, b"abc")])
    i = pieces([h2[:3], h2[3:12], h2[12:15], h2[15:22], h2[22:-2], h2[-2:], req % b"v2"])
    assert xff(i) == "203.0.113.11" and i["path"] == "/v2"
    i = pieces([h2 + (req % b"same")[:5], (req % b"same")[5:]])
    assert xff(i) == "203.0.113.11" and i["path"] == "/same"
    plain = req % b"plain"
    if allow:
        i = pieces([plain[:1], plain[1:]])
        assert xff(i) == "127.0.0.1" and i["path"] == "/plain"
    else:
        c = Client(lp)
        c.send(plain[:1])
        time.sleep(0.03)
        try:
            c.send(plain[1:])
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert helpers.closed_by_peer(c.s, 3)
        c.close()
    assert [r["path"] for r in b.requests] == ["/v1", "/v2", "/same"] + (["/plain"] if allow else [])
    expect_pp_stats(h, v1_found=1, v2_found=2, **({"not_found_allowed": 1} if allow else {"not_found_disallowed": 1}))


def test_malformed_headers_closed_and_counted(herald, upstreams, port, tmp_path):
    """Each bad header closes the connection before anything reaches the
    backend, counted as its version's error; bytes without a signature are
    not_found_disallowed."""
    b = upstreams(HttpBackend, "b")
    h, lp, log = pp_proxy(herald, port, tmp_path, [hb.http_cluster("backend", [b.port])], stat_prefix="bad")
    req = b"GET /leak HTTP/1.1\r\nhost: pp.test\r\n\r\n"
    a4 = ip_bytes("203.0.113.1") + ip_bytes("198.51.100.1") + struct.pack("!HH", 1, 2)
    bad_v1 = [
        b"PROXY TCP4 203.0.113.999 198.51.100.1 1 2\r\n",      # bad address
        b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",        # IPv6 address in TCP4
        b"PROXY TCP5 203.0.113.1 198.51.100.1 1 2\r\n",        # no such protocol
        b"PROXY TCP4 203.0.113.1 198.51.100.1 70000 2\r\n",    # port out of range
        b"PROXY TCP4 203.0.113.1 198.51.100.1 1\r\n",          # a field missing
        b"PROXY TCP4 203.0.113.1 198.51.100.1 " + b"1" * 80,   # no CRLF within 107 bytes
    ]
    bad_v2 = [
        SIG + b"\x11\x11" + struct.pack("!H", 12) + a4,          # version 1 in a v2 header
        SIG + b"\x22\x11" + struct.pack("!H", 12) + a4,          # command 2
        v2("203.0.113.1", "198.51.100.1", 1, 2, fam=0x12),       # UDP over IPv4
        SIG + b"\x21\x31" + struct.pack("!H", 216) + b"/tmp/a".ljust(108, b"\0") + b"/tmp/b".ljust(108, b"\0"),
        v2("203.0.113.1", "198.51.100.1", 1, 2, addr=a4[:8]),   # length 8 for TCP4
        v2("2001:db8::1", "2001:db8::2", 1, 2, addr=a4),          # length 12 for TCP6
    ]
    for data in bad_v1 + bad_v2:
        assert refused(lp, data + req), data
    assert refused(lp, req)   # no PROXY signature at all
    # the listener still serves a good one
    assert get_json(lp, "/good", v1("203.0.113.1", "198.51.100.1", 1, 2))[0]["path"] == "/good"
    assert [r["path"] for r in b.requests] == ["/good"]
    expect_pp_stats(h, "bad", v1_found=1, v1_error=len(bad_v1), v2_error=len(bad_v2), not_found_disallowed=1)
    # a broken v2 signature is refused too (counted as a v2 error or as no PROXY signature)
    assert refused(lp, b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + a4 + req)

    def refusals():
        st = pp_stats(h, "bad")
        return st["versions.v2.error"] + st["not_found_disallowed"]
    assert helpers.wait_for(lambda: refusals() == len(bad_v2) + 2, 3), pp_stats(h, "bad")
    assert b.served() == 1


def test_allow_requests_without_proxy_protocol(herald, upstreams, port, tmp_path):
    """allow_requests_without_proxy_protocol: plain requests (even one that
    starts with "P") go on untouched with the real addresses, headers are
    still read, and a malformed header is still refused."""
    b = upstreams(HttpBackend, "b")
    h, lp, log = pp_proxy(herald, port, tmp_path, [hb.http_cluster("backend", [b.port])],
                          allow_requests_without_proxy_protocol=True, stat_prefix="opt")
    i, c = get_json(lp, "/plain")
    assert xff(i) == "127.0.0.1"
    # POST shares its first byte with PROXY: not one byte of it may be lost
    cl = Client(lp)
    cl.send(b"POST /post HTTP/1.1\r\nhost: pp.test\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
    status, _, body = hb.read_response(cl.r)
    cl.close()
    assert status == 200, body[:200]
    i = json.loads(body)
    assert (i["method"], i["path"], i["body_len"], i["body_sha256"]) == ("POST", "/post", 5, hb.sha256(b"hello"))
    i, c1 = get_json(lp, "/v1", v1("203.0.113.20", "198.51.100.20", 1, 2))
    assert xff(i) == "203.0.113.20"
    i, c2 = get_json(lp, "/v2", v2("203.0.113.21", "198.51.100.21", 1, 2))
    assert xff(i) == "203.0.113.21"
    assert refused(lp, b"PROXY TCP4 203.0.113.999 198.51.100.1 1 2\r\nGET / HTTP/1.1\r\n\r\n")
    assert b.served() == 4
    lines = wait_lines(log, 4)
    assert lines[0] == ("/plain remote=127.0.0.1:%d direct=127.0.0.1:%d local=127.0.0.1:%d dlocal=127.0.0.1:%d "
                        "rport=%d rip=127.0.0.1" % (c.port, c.port, lp, lp, c.port)), lines
    expect_pp_stats(h, "opt", v1_found=1, v2_found=1, v1_error=1, not_found_allowed=2)


def test_allowed_versions(herald, upstreams, port, tmp_path):
    """allowed_versions [V1] refuses a v2 header and [V2] a v1 one, each
    counted as disallowed; the allowed one works."""
    b = upstreams(HttpBackend, "b")
    l1, l2 = port(), port()
    routes = [hb.route("/", "backend")]
    lst1 = with_pp(hb.http_listener(l1, hb.hcm("only1", routes, use_remote_address=True)),
                   allowed_versions=["V1"], stat_prefix="only1")
    lst2 = with_pp(hb.http_listener(l2, hb.hcm("only2", routes, use_remote_address=True)),
                   allowed_versions=["V2"], stat_prefix="only2")
    h = herald({"static_resources": {"listeners": [lst1, lst2], "clusters": [hb.http_cluster("backend", [b.port])]}})
    hv1 = v1("203.0.113.30", "198.51.100.30", 1, 2)
    hv2 = v2("203.0.113.31", "198.51.100.31", 1, 2)
    req = b"GET / HTTP/1.1\r\nhost: pp.test\r\n\r\n"
    assert xff(get_json(l1, "/a", hv1)[0]) == "203.0.113.30"
    assert refused(l1, hv2 + req)
    assert xff(get_json(l2, "/b", hv2)[0]) == "203.0.113.31"
    assert refused(l2, hv1 + req)
    assert [r["path"] for r in b.requests] == ["/a", "/b"]
    expect_pp_stats(h, "only1", v1_found=1, v2_disallowed=1)
    expect_pp_stats(h, "only2", v2_found=1, v1_disallowed=1)


def test_listener_filters_timeout(herald, upstreams, port, tmp_path):
    """listener_filters_timeout 0.5s: a connection that sends nothing or a
    partial header is closed after it (not before) and counted in
    downstream_pre_cx_timeout; one that completes its header in time is served."""
    b = upstreams(HttpBackend, "b")
    h, lp, log = pp_proxy(herald, port, tmp_path, [hb.http_cluster("backend", [b.port])], timeout="0.5s")
    full = v2("203.0.113.40", "198.51.100.40", 1, 2)
    t0 = time.monotonic()
    socks = {}
    for name, data in (("silent", b""), ("v1-partial", b"PROXY TCP4 203.0."), ("v2-signature", SIG[:7]),
                       ("v2-addresses", full[:20])):
        c = Client(lp)
        if data:
            c.send(data)
        socks[name] = c.s
    late = Client(lp)
    hv1 = v1("203.0.113.41", "198.51.100.41", 1, 2)
    late.send(hv1[:10])
    time.sleep(0.2)
    status, _, body = late.request("/late", hv1[10:], close=True)
    late.close()
    assert status == 200 and xff(json.loads(body)) == "203.0.113.41"
    closed = wait_closed(socks, 4.0)
    for name in socks:
        assert name in closed, "%s still open after 4s" % name
        at, data = closed[name]
        assert data == b"", (name, data)
        assert 0.45 <= at - t0 <= 2.5, "%s closed after %.2fs" % (name, at - t0)
        socks[name].close()
    assert h.wait_stat(pre_cx_timeout(lp), lambda v: v >= 4) == 4
    assert b.served() == 1


def test_rules_into_dynamic_metadata(herald, upstreams, port, tmp_path):
    """rules: a v2 TLV's value (up to its first NUL) lands in dynamic
    metadata, shown by %DYNAMIC_METADATA(ns:key)% in the HCM access log (every
    request of the connection) and in a tcp_proxy access log; the default
    namespace is envoy.filters.listener.proxy_protocol."""
    b = upstreams(HttpBackend, "b")
    rules = [{"tlv_type": 0xE0, "on_tlv_present": {"metadata_namespace": "pp.test", "key": "tenant"}},
             {"tlv_type": 0xE1, "on_tlv_present": {"key": "region"}}]
    fmt = "%REQ(:PATH)% %DYNAMIC_METADATA(pp.test:tenant)% %DYNAMIC_METADATA(" + DEFAULT_NS + ":region)%\n"
    lp, tp = port(), port()
    hlog, tlog = str(tmp_path / "http.log"), str(tmp_path / "tcp.log")
    http_l = with_pp(hb.http_listener(lp, log_hcm("pp", [hb.route("/", "backend")], hlog, fmt)), rules=rules)
    tcp_fmt = "%DOWNSTREAM_REMOTE_ADDRESS% %DYNAMIC_METADATA(pp.test:tenant)% %DYNAMIC_METADATA(" + \
              DEFAULT_NS + ":region)%\n"
    tcp_l = with_pp(helpers.tcp_listener(tp, "backend", access_log=[hb.file_access_log(tlog, tcp_fmt)]),
                    rules=rules)
    herald({"static_resources": {"listeners": [http_l, tcp_l], "clusters": [hb.http_cluster("backend", [b.port])]}})
    both = v2("203.0.113.50", "198.51.100.50", 1, 2,
              tlvs=[(0xE2, b"other"), (0xE0, b"acme"), (0xE1, b"eu-west\x00junk")])
    c = Client(lp)
    assert c.request("/a1", both)[0] == 200
    assert c.request("/a2")[0] == 200
    c.close()
    assert get(lp, "/b", v2("203.0.113.51", "198.51.100.51", 1, 2, tlvs=[(0xE1, b"us")]))[0] == 200
    assert get(lp, "/c", v1("203.0.113.52", "198.51.100.52", 1, 2))[0] == 200
    assert wait_lines(hlog, 4) == ["/a1 acme eu-west", "/a2 acme eu-west", "/b - us", "/c - -"]
    c = Client(tp)
    assert c.request("/tcp", both, close=True)[0] == 200
    c.close()
    assert wait_lines(tlog, 1) == ["203.0.113.50:1 acme eu-west"]


def test_tls_after_proxy_header(herald, upstreams, port, tmp_path, pki):
    """[proxy_protocol, tls_inspector] and a DownstreamTlsContext: curl
    --haproxy-protocol over https, and a v2 header then a TLS handshake from
    Python, are terminated with the PROXY source in x-forwarded-for; a plain
    connection after a header goes to the plain chain."""
    b = upstreams(HttpBackend, "b")
    lp = port()
    log = str(tmp_path / "tls.log")
    fmt = ADDR_FMT.rstrip("\n") + " sni=%REQUESTED_SERVER_NAME%\n"
    routes = [hb.route("/", "backend")]
    tls_chain = {"filter_chain_match": {"transport_protocol": "tls"},
                 "transport_socket": tls_socket(certs(pki.a)),
                 "filters": [log_hcm("pptls", routes, log, fmt)]}
    plain_chain = {"filters": [hb.hcm("ppplain", [hb.route("/", direct_response={
        "status": 200, "body": {"inline_string": "plain chain"}})])]}
    lst = {"name": "pptls", "stat_prefix": "pptls", "address": hb.sock_addr(lp),
           "filter_chains": [tls_chain, plain_chain]}
    with_pp(lst, after=[INSPECTOR])
    h = herald({"static_resources": {"listeners": [lst], "clusters": [hb.http_cluster("backend", [b.port])]}})
    cport = port()
    if shutil.which("curl"):
        r = hb.curl("-s", "--haproxy-protocol", "--interface", "127.0.0.2", "--local-port", str(cport),
                    "--cacert", pki.ca, "--resolve", "a.example:%d:127.0.0.1" % lp,
                    "https://a.example:%d/curl-tls" % lp)
        assert r.returncode == 0, r.stderr
        i = json.loads(r.stdout)
        assert xff(i) == "127.0.0.2" and hb.hget(i["headers"], "x-forwarded-proto") == "https"
    ctx = ssl.create_default_context(cafile=pki.ca)
    raw = Client(lp)
    raw.send(v2("203.0.113.60", "198.51.100.60", 6000, 443, tlvs=[(0xE0, b"x")]))
    s = ctx.wrap_socket(raw.s, server_hostname="a.example")
    s.sendall(b"GET /py-tls HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n")
    status, _, body = hb.read_response(hb.Reader(s))
    s.close()
    assert status == 200, body[:200]
    i = json.loads(body)
    assert xff(i) == "203.0.113.60" and hb.hget(i["headers"], "x-forwarded-proto") == "https"
    # a plain request after a header: the plain chain
    status, _, body, _ = get(lp, "/p", v1("203.0.113.61", "198.51.100.61", 1, 2))
    assert (status, body) == (200, b"plain chain")
    lines = wait_lines(log, 2 if shutil.which("curl") else 1)
    want = ["/py-tls remote=203.0.113.60:6000 direct=127.0.0.1:%d local=198.51.100.60:443 dlocal=127.0.0.1:%d "
            "rport=6000 rip=203.0.113.60 sni=a.example" % (raw.port, lp)]
    if shutil.which("curl"):
        want.insert(0, "/curl-tls remote=127.0.0.2:%d direct=127.0.0.2:%d local=127.0.0.1:%d dlocal=127.0.0.1:%d "
                       "rport=%d rip=127.0.0.2 sni=a.example" % (cport, cport, lp, lp, cport))
    assert lines == want
    n = len(want)
    assert h.wait_stat("listener.pptls.ssl.handshake", lambda v: v >= n) == n
    expect_pp_stats(h, v1_found=1 + (1 if shutil.which("curl") else 0), v2_found=1)


def test_filter_chain_match_by_restored_addresses(herald, port):
    """destination_port / prefix_ranges match the PROXY destination,
    source_prefix_ranges / source_ports the PROXY source,
    direct_source_prefix_ranges the real peer (127.0.0.1 or 127.0.0.2), in
    Envoy's order."""
    lp = port()

    def chain(name, match):
        fc = {"filters": [hb.hcm("fc_" + name, [hb.route("/", direct_response={
            "status": 200, "body": {"inline_string": name}})])]}
        if match:
            fc["filter_chain_match"] = match
        return fc

    def cidr(a, n):
        return [{"address_prefix": a, "prefix_len": n}]
    chains = [chain("port8443", {"destination_port": 8443}),
              chain("src10", {"source_prefix_ranges": cidr("10.0.0.0", 8)}),
              chain("src10port4000", {"source_prefix_ranges": cidr("10.0.0.0", 8), "source_ports": [4000]}),
              chain("src6", {"source_prefix_ranges": cidr("2001:db8::", 32)}),
              chain("dst198", {"prefix_ranges": cidr("198.51.100.0", 24)}),
              chain("direct2", {"direct_source_prefix_ranges": cidr("127.0.0.2", 32)}),
              chain("default", None)]
    lst = with_pp({"name": "fcm", "address": hb.sock_addr(lp), "filter_chains": chains})
    h = herald({"static_resources": {"listeners": [lst], "clusters": []}})
    cases = [
        ("127.0.0.1", v1("10.1.2.3", "192.0.2.1", 5555, 8443), "port8443"),
        ("127.0.0.1", v1("10.1.2.3", "192.0.2.1", 5555, 80), "src10"),
        ("127.0.0.1", v1("10.1.2.3", "192.0.2.1", 4000, 80), "src10port4000"),
        ("127.0.0.1", v1("172.16.0.1", "198.51.100.7", 5555, 80), "dst198"),
        ("127.0.0.1", v1("172.16.0.1", "192.0.2.1", 5555, 80), "default"),
        ("127.0.0.2", v1("172.16.0.1", "192.0.2.1", 5555, 80), "direct2"),
        ("127.0.0.2", v1("10.1.2.3", "192.0.2.1", 5555, 80), "direct2"),
        ("127.0.0.2", v1("10.1.2.3", "192.0.2.1", 5555, 8443), "port8443"),
        ("127.0.0.1", v2("2001:db8::5", "2001:db8::1", 5555, 80), "src6"),
        ("127.0.0.1", v2("2001:db9::5", "2001:db8::1", 5555, 80), "default"),
        ("127.0.0.1", v2("10.9.9.9", "192.0.2.1", 4000, 80), "src10port4000"),
    ]
    got = []
    for src, pp, _ in cases:
        status, _, body, _ = get(lp, "/", pp, src=src)
        got.append((src, pp, body.decode() if status == 200 else status))
    assert got == [(src, pp, want) for src, pp, want in cases]
    expect_pp_stats(h, v1_found=8, v2_found=3)


def test_rbac_remote_ip_and_direct_remote_ip(herald, upstreams, port, tmp_path):
    """HTTP and network rbac: remote_ip matches the PROXY source,
    direct_remote_ip the real peer."""
    b = upstreams(HttpBackend, "b")
    echo = upstreams(helpers.EchoServer)

    def cidr(a, n):
        return {"address_prefix": a, "prefix_len": n}
    http_rbac = {"name": "envoy.filters.http.rbac", "typed_config": {"@type": hb.RBAC_TYPE, "rules": {
        "action": "ALLOW", "policies": {
            "src": {"permissions": [{"url_path": {"path": {"prefix": "/src"}}}],
                    "principals": [{"remote_ip": cidr("10.0.0.0", 8)}]},
            "direct": {"permissions": [{"url_path": {"path": {"prefix": "/direct"}}}],
                       "principals": [{"direct_remote_ip": cidr("127.0.0.1", 32)}]}}}}}
    hp, t1, t2 = port(), port(), port()

    def net_rbac(prefix, principal):
        return {"name": "envoy.filters.network.rbac", "typed_config": {
            "@type": NET_RBAC_TYPE, "stat_prefix": prefix, "rules": {"action": "ALLOW", "policies": {
                "p": {"permissions": [{"any": True}], "principals": [principal]}}}}}
    listeners = [
        with_pp(hb.http_listener(hp, hb.hcm("pprbac", [hb.route("/", "backend")], [http_rbac],
                                            use_remote_address=True))),
        with_pp(helpers.tcp_listener(t1, "echo", before=[net_rbac("r1", {"remote_ip": cidr("10.0.0.0", 8)})])),
        with_pp(helpers.tcp_listener(t2, "echo", before=[net_rbac("r2",
                                                                  {"direct_remote_ip": cidr("127.0.0.2", 32)})])),
    ]
    h = herald({"static_resources": {"listeners": listeners, "clusters": [
        hb.http_cluster("backend", [b.port]), helpers.cluster("echo", [echo.addr])]}})
    cases = [("/src", "10.1.1.1", "127.0.0.1", 200), ("/src", "192.0.2.9", "127.0.0.1", 403),
             ("/src", "10.1.1.1", "127.0.0.2", 200), ("/src", "127.0.0.1", "127.0.0.1", 403),
             ("/direct", "10.1.1.1", "127.0.0.1", 200), ("/direct", "127.0.0.1", "127.0.0.2", 403),
             ("/direct", "192.0.2.9", "127.0.0.1", 200)]
    got = [(p, s, d, get(hp, p, v1(s, "192.0.2.1", 1000, 80), src=d)[0]) for p, s, d, _ in cases]
    assert got == cases
    assert h.wait_stat("http.pprbac.rbac.denied", lambda v: v >= 3) == 3
    assert h.stat("http.pprbac.rbac.allowed") == 4

    def echoed(port_, src, direct):
        c = Client(port_, direct)
        try:
            c.send(v1(src, "192.0.2.1", 1000, 80) + b"ping\n")
            try:
                return helpers.recv_line(c.s) == b"ping"
            except (ConnectionResetError, socket.timeout):
                return False
        finally:
            c.close()
    net = [(t1, "10.1.1.1", "127.0.0.1", True), (t1, "192.0.2.9", "127.0.0.1", False),
           (t1, "192.0.2.9", "127.0.0.2", False), (t1, "10.1.1.1", "127.0.0.2", True),
           (t2, "10.1.1.1", "127.0.0.1", False), (t2, "192.0.2.9", "127.0.0.2", True),
           (t2, "127.0.0.2", "127.0.0.1", False)]
    assert [(p, s, d, echoed(p, s, d)) for p, s, d, _ in net] == net
    assert h.wait_stat("r1.rbac.denied", lambda v: v >= 2) == 2 and h.stat("r1.rbac.allowed") == 2
    assert h.wait_stat("r2.rbac.denied", lambda v: v >= 2) == 2 and h.stat("r2.rbac.allowed") == 1


# ================================================================== upstream: the transport socket


def test_upstream_v1_v2_exact_bytes(herald, upstreams, port, tmp_path):
    """The exact header a backend reads first: V1 text and V2 binary with the
    client's address (127.0.0.2:P -> herald's listener) or the address a
    downstream header restored (IPv4 and IPv6); no version means V1."""
    b1, b2, bd = (upstreams(PPHttpBackend, n) for n in ("v1", "v2", "dflt"))
    clusters = [pp_cluster("c1", [b1.port], "V1"), pp_cluster("c2", [b2.port], "V2"),
                pp_cluster("cd", [bd.port])]
    routes = [hb.route("/v1", "c1"), hb.route("/v2", "c2"), hb.route("/dflt", "cd")]
    h, lp, log = pp_proxy(herald, port, tmp_path, clusters, routes=routes,
                          allow_requests_without_proxy_protocol=True)

    def one(path, pp=b""):
        i, c = get_json(lp, path, pp, src="127.0.0.2")
        be = {"v1": b1, "v2": b2, "dflt": bd}[path.split("/")[1]]
        hdr = be.header_of(i)
        assert hdr is not None, (path, be.errors)
        assert i["path"] == path
        return hdr["raw"], c
    raw, c = one("/v1/plain")
    assert raw == b"PROXY TCP4 127.0.0.2 127.0.0.1 %d %d\r\n" % (c.port, lp)
    raw, c = one("/v2/plain")
    assert raw == v2("127.0.0.2", "127.0.0.1", c.port, lp)
    raw, c = one("/dflt/plain")
    assert raw == b"PROXY TCP4 127.0.0.2 127.0.0.1 %d %d\r\n" % (c.port, lp)
    six = v1("2001:db8::1", "2001:db8::2", 1234, 443)
    assert one("/v1/six", six)[0] == b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n"
    assert one("/v2/six", six)[0] == v2("2001:db8::1", "2001:db8::2", 1234, 443)
    four = v2("203.0.113.70", "198.51.100.70", 7000, 80, tlvs=[(0xE0, b"not passed")])
    assert one("/v1/four", four)[0] == b"PROXY TCP4 203.0.113.70 198.51.100.70 7000 80\r\n"
    assert one("/v2/four", four)[0] == v2("203.0.113.70", "198.51.100.70", 7000, 80)
    assert not (b1.errors or b2.errors or bd.errors), (b1.errors, b2.errors, bd.errors)


def test_upstream_added_tlvs_cluster_and_per_host(herald, upstreams, port, tmp_path):
    """added_tlvs of the cluster go to every host; a host's PerHostConfig
    adds its own and replaces the cluster's of the same type (sent once)."""
    ba, bb = upstreams(PPHttpBackend, "a"), upstreams(PPHttpBackend, "b")
    cl = pp_cluster("tlv", [ba.port, bb.port], "V2",
                    added=[(0xEE, b"cluster-ee"), (0xEF, b"\x00\x01\xffbin")],
                    host_tlvs={ba.port: [(0xEE, b"host-a"), (0xF0, b"only-a")]})
    h, lp, log = pp_proxy(herald, port, tmp_path, [cl], allow_requests_without_proxy_protocol=True)
    seen = {}
    for n in range(4):
        i, c = get_json(lp, "/t%d" % n)
        hdr = (ba if i["backend"] == "a" else bb).header_of(i)
        assert (hdr["src"], hdr["sport"], hdr["dst"], hdr["dport"]) == ("127.0.0.1", c.port, "127.0.0.1", lp)
        seen.setdefault(i["backend"], []).append(hdr["tlvs"])
    assert sorted(seen) == ["a", "b"] and len(seen["a"]) == len(seen["b"]) == 2, seen
    for tl in seen["a"]:
        assert sorted(t for t, _ in tl) == [0xEE, 0xEF, 0xF0], tl
        assert dict(tl) == {0xEE: b"host-a", 0xEF: b"\x00\x01\xffbin", 0xF0: b"only-a"}
    for tl in seen["b"]:
        assert sorted(tl) == [(0xEE, b"cluster-ee"), (0xEF, b"\x00\x01\xffbin")], tl


def test_upstream_pass_through_tlvs(herald, upstreams, port, tmp_path):
    """TLVs of a downstream v2 header reach the upstream header when both the
    listener filter's pass_through_tlvs kept them and the cluster's passes
    them, in the order received, then added_tlvs (which replace a passed one
    of the same type); no pass_through_tlvs on either side: none."""
    names = ("all", "some", "over", "none", "nolst")
    bes = {n: upstreams(PPHttpBackend, n) for n in names}
    clusters = [
        pp_cluster("all", [bes["all"].port], "V2", pass_through={"match_type": "INCLUDE_ALL"}),
        pp_cluster("some", [bes["some"].port], "V2", pass_through={"match_type": "INCLUDE", "tlv_type": [0xE2, 0xE3]},
                   added=[(0xE4, b"added")]),
        pp_cluster("over", [bes["over"].port], "V2", pass_through={"match_type": "INCLUDE_ALL"},
                   added=[(0xE2, b"from-cluster")]),
        pp_cluster("none", [bes["none"].port], "V2"),
        pp_cluster("nolst", [bes["nolst"].port], "V2", pass_through={"match_type": "INCLUDE_ALL"}),
    ]
    routes = [hb.route("/" + n, n) for n in names[:4]]
    lp, lp2 = port(), port()
    lst = with_pp(hb.http_listener(lp, hb.hcm("pt", routes)),
                  pass_through_tlvs={"match_type": "INCLUDE", "tlv_type": [0xE1, 0xE2, 0x05]})
    lst2 = with_pp(hb.http_listener(lp2, hb.hcm("pt2", [hb.route("/", "nolst")])))   # keeps no TLVs
    herald({"static_resources": {"listeners": [lst, lst2], "clusters": clusters}})
    sent = [(0xE1, b"one"), (0xE2, b"t\x00wo"), (0xE3, b"three"), (0x05, b"uid-1")]
    pp = v2("203.0.113.80", "198.51.100.80", 8000, 80, tlvs=sent)
    got = {}
    for n in names:
        i, _ = get_json(lp2 if n == "nolst" else lp, "/" + n, pp)
        hdr = bes[n].header_of(i)
        assert (hdr["src"], hdr["dst"], hdr["sport"], hdr["dport"]) == ("203.0.113.80", "198.51.100.80", 8000, 80)
        got[n] = hdr["tlvs"]
    assert got["all"] == [(0xE1, b"one"), (0xE2, b"t\x00wo"), (0x05, b"uid-1")]
    assert got["some"] == [(0xE2, b"t\x00wo"), (0xE4, b"added")]
    # the cluster's 0xE2 replaces the passed-through one (sent once; where in the list is not specified)
    assert sorted(got["over"]) == [(0x05, b"uid-1"), (0xE1, b"one"), (0xE2, b"from-cluster")], got["over"]
    assert got["none"] == [] and got["nolst"] == [], (got["none"], got["nolst"])


def test_upstream_pool_per_downstream_address_pair(herald, upstreams, port, tmp_path):
    """A pooled upstream connection carries one downstream's addresses: two
    requests on one client connection share one upstream connection, a
    client from 127.0.0.2 gets its own (with its own header), and the first
    client's next request goes back to its connection. Without the PROXY
    transport the same sequence uses a single upstream connection."""
    b = upstreams(PPHttpBackend, "pp")
    plain = upstreams(HttpBackend, "plain")
    clusters = [pp_cluster("pp", [b.port], "V1"), hb.http_cluster("plain", [plain.port])]
    routes = [hb.route("/pp", "pp"), hb.route("/plain", "plain")]
    h, lp, log = pp_proxy(herald, port, tmp_path, clusters, routes=routes, allow_requests_without_proxy_protocol=True)

    def run(prefix):
        ca, cb = Client(lp, "127.0.0.1"), Client(lp, "127.0.0.2")
        out = []
        for c, n in ((ca, 1), (ca, 2), (cb, 3), (ca, 4), (cb, 5)):
            status, _, body = c.request("%s/%d" % (prefix, n))
            assert status == 200, body[:200]
            out.append((c, json.loads(body)))
        ca.close()
        cb.close()
        return ca, cb, out
    ca, cb, out = run("/pp")
    conns = [i["conn"] for _, i in out]
    assert conns[0] == conns[1] == conns[3] and conns[2] == conns[4] and conns[0] != conns[2], conns
    assert b.accepted == 2
    for c, i in out:
        assert b.header_of(i)["raw"] == b"PROXY TCP4 %s 127.0.0.1 %d %d\r\n" % (c.ip.encode(), c.port, lp)
    assert h.wait_stat("cluster.pp.upstream_cx_total", lambda v: v >= 2) == 2
    # the clients left: their upstream connections, which nobody else may use, close too
    assert h.wait_stat("cluster.pp.upstream_cx_active", lambda v: v == 0) == 0
    _, _, out = run("/plain")
    assert len({i["conn"] for _, i in out}) == 1 and plain.accepted == 1


def test_health_checks_send_unknown_and_local(herald, upstreams, port, tmp_path):
    """Health check connections have no downstream: a V1 cluster's start
    with PROXY UNKNOWN, a V2 cluster's with the LOCAL command; the hosts turn
    healthy and traffic still carries the client's addresses."""
    b1, b2 = upstreams(PPHttpBackend, "hc1"), upstreams(PPHttpBackend, "hc2")
    hc = {"timeout": "0.5s", "interval": "0.1s", "no_traffic_interval": "0.1s", "unhealthy_threshold": 2,
          "healthy_threshold": 1, "http_health_check": {"path": "/healthz"}}
    clusters = [pp_cluster("hc1", [b1.port], "V1", ), pp_cluster("hc2", [b2.port], "V2")]
    for c in clusters:
        c["health_checks"] = [hc]
    routes = [hb.route("/hc1", "hc1"), hb.route("/hc2", "hc2")]
    h, lp, log = pp_proxy(herald, port, tmp_path, clusters, routes=routes, allow_requests_without_proxy_protocol=True)
    for be in (b1, b2):
        assert helpers.wait_for(lambda: any(r["path"] == "/healthz" for r in be.requests), 5), be.name
    hc_v1 = [b1.header_of(r) for r in b1.requests if r["path"] == "/healthz"]
    hc_v2 = [b2.header_of(r) for r in b2.requests if r["path"] == "/healthz"]
    assert {x["raw"] for x in hc_v1} == {b"PROXY UNKNOWN\r\n"}
    assert {x["cmd"] for x in hc_v2} == {"LOCAL"}, hc_v2
    assert {x["raw"] for x in hc_v2} == {SIG + b"\x20\x00\x00\x00"}

    def flags():
        status, body = h.admin_get("/clusters")
        return sorted(ln for ln in body.splitlines() if "::health_flags::" in ln)
    want = ["hc1::127.0.0.1:%d::health_flags::healthy" % b1.port, "hc2::127.0.0.1:%d::health_flags::healthy" % b2.port]
    assert helpers.wait_for(lambda: flags() == want, 3) or flags() == want, flags()
    i, c = get_json(lp, "/hc1/x", src="127.0.0.2")
    assert b1.header_of(i)["raw"] == b"PROXY TCP4 127.0.0.2 127.0.0.1 %d %d\r\n" % (c.port, lp)
    i, c = get_json(lp, "/hc2/x", src="127.0.0.2")
    assert b2.header_of(i)["raw"] == v2("127.0.0.2", "127.0.0.1", c.port, lp)


def test_tcp_proxy_sends_header(herald, upstreams, port, tmp_path):
    """tcp_proxy to a PROXY transport cluster: the upstream reads the header
    (the downstream header's addresses, or the real client's), then the
    stream both ways; the tcp_proxy access log shows the PROXY source and
    destination and the direct peer."""
    e1, e2 = upstreams(PPEchoServer), upstreams(PPEchoServer)
    t1, t2 = port(), port()
    log = str(tmp_path / "tcp.log")
    fmt = "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% " \
          "%DOWNSTREAM_DIRECT_LOCAL_ADDRESS%\n"
    l1 = with_pp(helpers.tcp_listener(t1, "up1", access_log=[hb.file_access_log(log, fmt)]))
    l2 = with_pp(helpers.tcp_listener(t2, "up2"), allow_requests_without_proxy_protocol=True)
    c1 = helpers.cluster("up1", [e1.addr], transport_socket=pp_transport("V1"))
    c2 = helpers.cluster("up2", [e2.addr], transport_socket=pp_transport("V2"))
    herald(helpers.bootstrap([l1, l2], [c1, c2]))
    payload = os.urandom(64 << 10)
    c = Client(t1)
    c.send(v2("192.0.2.10", "192.0.2.20", 7777, 9999, tlvs=[(0xE0, b"x")]) + payload)
    got = read_exact(c.s, len(payload))
    c.close()
    assert got == payload
    c = Client(t2, "127.0.0.2")
    c.send(b"hello\n")
    assert helpers.recv_line(c.s) == b"hello"
    c.close()
    assert helpers.wait_for(lambda: e1.results and e2.results, 3)
    assert [r["raw"] for r in e1.results] == [b"PROXY TCP4 192.0.2.10 192.0.2.20 7777 9999\r\n"]
    assert [r["raw"] for r in e2.results] == [v2("127.0.0.2", "127.0.0.1", c.port, t2)]
    lines = wait_lines(log, 1)
    assert re.fullmatch(r"192\.0\.2\.10:7777 127\.0\.0\.1:\d+ 192\.0\.2\.20:9999 127\.0\.0\.1:%d" % t1,
                        lines[0] if lines else ""), lines


def block_range(lines, marker):
    """1-based (first, last) line of the JSON object whose key line holds marker."""
    start = next(i for i, ln in enumerate(lines) if marker in ln)
    depth = 0
    for j in range(start, len(lines)):
        depth += lines[j].count("{") + lines[j].count("[") - lines[j].count("}") - lines[j].count("]")
        if depth <= 0 and j > start:
            return start + 1, j + 1
    return start + 1, len(lines)


def validate(tmp_path, cfg, name="pp.json"):
    path = tmp_path / name
    text = json.dumps(cfg, indent=1)
    path.write_text(text)
    r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
    return r, text.splitlines()


def test_upstream_transport_config_errors(tmp_path):
    """The transport needs an inner raw_buffer or UpstreamTlsContext: a
    missing one, another type, a downstream TLS context, a nested PROXY
    transport or an unknown version stop the config at their file:line:col."""
    alts = {"name": "envoy.transport_sockets.alts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts"}}
    down = {"name": "envoy.transport_sockets.tls", "typed_config": {"@type": DOWN, "common_tls_context": {}}}
    cases = [
        (pp_transport("V1", no_inner=True), r"transport_socket"),
        (pp_transport("V1", inner=alts), r"alts"),
        (pp_transport("V1", inner=down), r"DownstreamTlsContext"),
        (pp_transport("V1", inner=pp_transport("V1")), r"ProxyProtocolUpstreamTransport|upstream_proxy_protocol"),
        (pp_transport("V3"), r"V3"),
    ]
    listener = hb.http_listener(1, hb.hcm("x", [hb.route("/", "c")]))
    good = {"static_resources": {"listeners": [listener], "clusters": [
        hb.http_cluster("c", [2], transport_socket=pp_transport("V2", added=[(0xEE, b"v")]))]}}
    r, _ = validate(tmp_path, good)
    assert r.returncode == 0, r.stderr
    for ts, want in cases:
        cfg = {"static_resources": {"listeners": [listener], "clusters": [
            hb.http_cluster("c", [2], transport_socket=ts)]}}
        r, lines = validate(tmp_path, cfg)
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert r.returncode == 1 and errors, (want, r.stderr)
        # its own error only: no follow-up claiming the PROXY transport itself is not supported
        assert len(errors) == 1, errors
        m = re.search(r"pp\.json:(\d+):(\d+): (.*)", errors[0])
        assert m, errors[0]
        first, last = block_range(lines, '"transport_socket"')
        assert first <= int(m.group(1)) <= last, (errors[0], first, last)
        assert "transport_socket" in m.group(3) and re.search(want, m.group(3)), errors[0]


def test_listener_filter_config_errors(tmp_path):
    """Bad proxy_protocol listener filter fields stop the config at their file:line:col."""
    cases = [
        ({"rules": [{"tlv_type": 256, "on_tlv_present": {"key": "k"}}]}, "tlv_type"),
        ({"rules": [{"tlv_type": 5, "on_tlv_present": {"metadata_namespace": "ns"}}]}, "key"),
        ({"allowed_versions": ["V3"]}, "allowed_versions"),
        ({"pass_through_tlvs": {"match_type": "SOME"}}, "match_type"),
    ]
    for cfg, key in cases:
        lst = with_pp(hb.http_listener(1, hb.hcm("x", [hb.route("/", "c")])), **cfg)
        r, lines = validate(tmp_path, {"static_resources": {"listeners": [lst], "clusters": [
            hb.http_cluster("c", [2])]}})
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert r.returncode == 1 and errors, (cfg, r.stderr)
        m = re.search(r"pp\.json:(\d+):(\d+): (.*)", errors[0])
        assert m, errors[0]
        first, last = block_range(lines, '"listener_filters"')
        assert first <= int(m.group(1)) <= last and key in m.group(3), (cfg, errors[0], first, last)


# ================================================================== real peers behind herald, herald to herald


def test_herald_to_herald(herald, upstreams, port, tmp_path):
    """front herald (V2 transport, passing TLVs through) -> back herald
    (proxy_protocol listener filter): the back sees the client 127.0.0.2 (or
    the client's own PROXY header) as the remote, the front as the direct
    peer, and a TLV the client sent in its rules' metadata."""
    b = upstreams(HttpBackend, "b")
    bp, fp = port(), port()
    blog = str(tmp_path / "back.log")
    fmt = ADDR_FMT.rstrip("\n") + " md=%DYNAMIC_METADATA(front:tag)%\n"
    back_l = with_pp(hb.http_listener(bp, log_hcm("back", [hb.route("/", "backend")], blog, fmt)),
                     rules=[{"tlv_type": 0xE5, "on_tlv_present": {"metadata_namespace": "front", "key": "tag"}}],
                     stat_prefix="back")
    back = herald({"static_resources": {"listeners": [back_l], "clusters": [hb.http_cluster("backend", [b.port])]}})
    front_l = with_pp(hb.http_listener(fp, hb.hcm("front", [hb.route("/", "back")])),
                      allow_requests_without_proxy_protocol=True, pass_through_tlvs={"match_type": "INCLUDE_ALL"},
                      stat_prefix="front")
    front = herald({"static_resources": {"listeners": [front_l], "clusters": [
        pp_cluster("back", [bp], "V2", pass_through={"match_type": "INCLUDE_ALL"})]}})
    i, c = get_json(fp, "/plain", src="127.0.0.2")
    assert xff(i) == "127.0.0.2", i["headers"]
    i, c2 = get_json(fp, "/tagged", v2("203.0.113.90", "198.51.100.90", 4321, 80,
                                       tlvs=[(0xE5, b"via-front"), (0xE6, b"other")]), src="127.0.0.2")
    assert xff(i) == "203.0.113.90" and hb.hget(i["headers"], "x-envoy-external-address") == "203.0.113.90"
    lines = wait_lines(blog, 2)
    assert len(lines) == 2, lines
    assert re.fullmatch(r"/plain remote=127\.0\.0\.2:%d direct=127\.0\.0\.1:(\d+) local=127\.0\.0\.1:%d "
                        r"dlocal=127\.0\.0\.1:%d rport=%d rip=127\.0\.0\.2 md=-" % (c.port, fp, bp, c.port),
                        lines[0]), lines[0]
    assert re.fullmatch(r"/tagged remote=203\.0\.113\.90:4321 direct=127\.0\.0\.1:(\d+) local=198\.51\.100\.90:80 "
                        r"dlocal=127\.0\.0\.1:%d rport=4321 rip=203\.0\.113\.90 md=via-front" % bp,
                        lines[1]), lines[1]
    expect_pp_stats(back, "back", v2_found=2)
    expect_pp_stats(front, "front", v2_found=1, not_found_allowed=1)


@needs_nginx
def test_nginx_reads_herald_header(herald, upstreams, port, tmp_path):
    """nginx listen ... proxy_protocol behind herald reads the V1 and V2
    headers: $proxy_protocol_addr/_port are the client (or the address a
    downstream header restored), _server_addr/_port herald's listener, and
    nginx's own $remote_addr is herald."""
    np_ = port()
    answer = ("$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port "
              "$remote_addr\\n")
    start_nginx(upstreams, tmp_path, """        listen 127.0.0.1:%d proxy_protocol;
        location / {
            return 200 "%s";
        }""" % (np_, answer), [np_])
    clusters = [pp_cluster("n1", [np_], "V1"), pp_cluster("n2", [np_], "V2")]
    routes = [hb.route("/v1", "n1"), hb.route("/v2", "n2")]
    h, lp, log = pp_proxy(herald, port, tmp_path, clusters, routes=routes, allow_requests_without_proxy_protocol=True)
    for path in ("/v1", "/v2"):
        status, _, body, c = get(lp, path, src="127.0.0.2")
        assert (status, body.decode()) == (200, "127.0.0.2 %d 127.0.0.1 %d 127.0.0.1\n" % (c.port, lp)), path
        status, _, body, c = get(lp, path, v1("2001:db8::1", "2001:db8::2", 1234, 443))
        assert (status, body.decode()) == (200, "2001:db8::1 1234 2001:db8::2 443 127.0.0.1\n"), path
        status, _, body, c = get(lp, path, v2("203.0.113.95", "198.51.100.95", 5555, 8080))
        assert (status, body.decode()) == (200, "203.0.113.95 5555 198.51.100.95 8080 127.0.0.1\n"), path


@needs_haproxy
def test_haproxy_accept_proxy_behind_herald(herald, upstreams, port, tmp_path, pki):
    """HAProxy bind ... accept-proxy behind herald: it sees the client as
    src, herald's listener as dst, and fc_pp_unique_id is TLV 0x05 that herald
    added or passed through from the client's header; with the TLS inner
    socket the header comes before the handshake (bind ... accept-proxy ssl)."""
    ap, tp = port(), port()
    pem = tmp_path / "backend.pem"
    pem.write_text(open(pki.backend[0]).read() + open(pki.backend[1]).read())
    ret = '    http-request return status 200 content-type text/plain lf-string ' \
          '"%[src] %[src_port] %[dst] %[dst_port] uid=%[fc_pp_unique_id] ssl=%[ssl_fc]\\n"\n'
    start_haproxy(upstreams, tmp_path, "frontend plain\n    bind 127.0.0.1:%d accept-proxy\n%s"
                  "frontend tls\n    bind 127.0.0.1:%d accept-proxy ssl crt %s\n%s" % (ap, ret, tp, pem, ret),
                  [ap, tp])
    up_tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": UP, "sni": "backend.internal",
        "common_tls_context": {"validation_context": {"trusted_ca": {"filename": pki.ca}}}}}
    clusters = [pp_cluster("added", [ap], "V2", added=[(0x05, b"herald-added-uid")]),
                pp_cluster("passed", [ap], "V2", pass_through={"match_type": "INCLUDE", "tlv_type": [5]}),
                pp_cluster("v1", [ap], "V1"),
                pp_cluster("tls", [tp], "V2", inner=up_tls, added=[(0x05, b"herald-tls-uid")])]
    routes = [hb.route("/" + c["name"], c["name"]) for c in clusters]
    h, lp, log = pp_proxy(herald, port, tmp_path, clusters, routes=routes,
                          allow_requests_without_proxy_protocol=True,
                          pass_through_tlvs={"match_type": "INCLUDE", "tlv_type": [5]})
    status, _, body, c = get(lp, "/added", src="127.0.0.2")
    assert (status, body.decode()) == (200, "127.0.0.2 %d 127.0.0.1 %d uid=herald-added-uid ssl=0\n" % (c.port, lp))
    client_pp = v2("203.0.113.77", "198.51.100.77", 5000, 80, tlvs=[(0x05, b"client-uid"), (0xE0, b"x")])
    status, _, body, c = get(lp, "/passed", client_pp, src="127.0.0.2")
    assert (status, body.decode()) == (200, "203.0.113.77 5000 198.51.100.77 80 uid=client-uid ssl=0\n")
    status, _, body, c = get(lp, "/v1", src="127.0.0.2")
    assert (status, body.decode()) == (200, "127.0.0.2 %d 127.0.0.1 %d uid= ssl=0\n" % (c.port, lp))
    status, _, body, c = get(lp, "/tls", src="127.0.0.2")
    assert (status, body.decode()) == (200, "127.0.0.2 %d 127.0.0.1 %d uid=herald-tls-uid ssl=1\n" % (c.port, lp))
    assert h.wait_stat("cluster.tls.ssl.handshake", lambda v: v >= 1) == 1


@needs_haproxy
def test_http2_upstream_carries_each_clients_header(herald, upstreams, port, tmp_path):
    """An HTTP/2 upstream (http2_protocol_options) behind a V2 PROXY transport:
    HAProxy (bind ... accept-proxy proto h2) sees each client's own address,
    because each downstream connection gets HTTP/2 connections of its own;
    two requests of one client share one; when the clients leave, herald
    closes them (GOAWAY once their streams are done)."""
    hp = port()
    start_haproxy(upstreams, tmp_path, "frontend h2c\n    bind 127.0.0.1:%d accept-proxy proto h2\n"
                  '    http-request return status 200 content-type text/plain lf-string '
                  '"%%[src] %%[src_port] %%[dst] %%[dst_port] %%[req.ver]\\n"\n' % hp, [hp])
    c = pp_cluster("h2", [hp], "V2")
    c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}
    h, lp, log = pp_proxy(herald, port, tmp_path, [c], routes=[hb.route("/", "h2")],
                          allow_requests_without_proxy_protocol=True)
    a, b = Client(lp, "127.0.0.2"), Client(lp, "127.0.0.3")
    for cl in (a, b, a):
        status, _, body = cl.request("/x")
        assert (status, body.decode()) == (200, "%s %d 127.0.0.1 %d 2.0\n" % (cl.ip, cl.port, lp)), body
    assert h.wait_stat("cluster.h2.upstream_cx_http2_total", lambda v: v >= 2) == 2
    a.close()
    b.close()
    assert h.wait_stat("cluster.h2.upstream_cx_active", lambda v: v == 0) == 0
