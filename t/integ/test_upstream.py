"""Upstream failures and discovery: refused connections, connect retries
over hosts, STRICT_DNS / LOGICAL_DNS clusters and a name that never
resolves; what tcp_proxy's access log says about both connections."""

import socket
import time

from helpers import EchoServer, bootstrap, closed_by_peer, cluster, connect, recv_line, tcp_listener, wait_lines
from http_backends import file_access_log


def test_refused_upstream_closes_downstream(herald, port):
    dead = port()  # nothing listens there
    lport = port()
    h = herald(bootstrap([tcp_listener(lport, "dead")], [cluster("dead", [("127.0.0.1", dead)])]))
    for _ in range(3):
        s = connect(lport)
        assert closed_by_peer(s, 5), "herald kept the downstream open after the upstream refused"
        s.close()
    assert h.wait_stat("cluster.dead.upstream_cx_connect_fail", lambda v: v >= 3) >= 3


def test_max_connect_attempts_tries_next_host(herald, upstreams, port):
    good = upstreams(EchoServer, tag="good")
    dead = port()
    lport = port()
    cfg = bootstrap([tcp_listener(lport, "two", max_connect_attempts=2)],
                    [cluster("two", [("127.0.0.1", dead), good.addr])])
    h = herald(cfg)
    for i in range(6):
        s = connect(lport)
        try:
            assert recv_line(s) == b"good", "connection %d did not reach the live host" % i
            s.sendall(b"x\n")
            assert recv_line(s) == b"x"
        finally:
            s.close()
    # Round robin sends every other first attempt to the refusing host.
    assert h.wait_stat("cluster.two.upstream_cx_connect_fail", lambda v: v >= 3) >= 3
    assert good.accepted == 6


def dns_cluster(name, type, host, port_):
    return cluster(name, [(host, port_)], type=type, dns_lookup_family="V4_ONLY", dns_refresh_rate="1s")


def check_dns_cluster(herald, upstreams, port, type):
    backend = upstreams(EchoServer, tag="via-dns")
    lport = port()
    cfg = bootstrap([tcp_listener(lport, "dns")], [dns_cluster("dns", type, "localhost", backend.port)])
    h = herald(cfg)  # waits for /ready == 200: after the first resolution
    status, body = h.admin_get("/ready")
    assert (status, body.strip()) == (200, "LIVE")
    for _ in range(3):
        s = connect(lport)
        try:
            assert recv_line(s) == b"via-dns"
        finally:
            s.close()
    assert backend.accepted == 3


def test_strict_dns_localhost(herald, upstreams, port):
    check_dns_cluster(herald, upstreams, port, "STRICT_DNS")


def test_logical_dns_localhost(herald, upstreams, port):
    check_dns_cluster(herald, upstreams, port, "LOGICAL_DNS")


def test_unresolvable_name_does_not_block_startup(herald, port, report):
    """As in Envoy, a STRICT_DNS cluster is initialized once its name has
    answered, even with a failure: start-up never waits on it. While it
    waits, /ready is 503 and names the cluster; connections close at once."""
    lport = port()
    cfg = bootstrap([tcp_listener(lport, "nowhere")],
                    [dns_cluster("nowhere", "STRICT_DNS", "nonexistent.invalid", 9)])
    h = herald(cfg, wait="admin")
    status, body = h.admin_get("/ready")
    if status != 200:
        assert status == 503 and "nowhere" in body, \
            "/ready while resolving: %s %r (expected 503 naming the cluster)" % (status, body)
    # The listener is up as soon as the admin answers, resolved or not.
    t0 = time.monotonic()
    try:
        s = connect(lport, timeout=2)
    except (ConnectionRefusedError, socket.timeout) as e:
        raise AssertionError("listener not accepting while the cluster resolves: %r" % e)
    assert time.monotonic() - t0 < 1.0
    assert closed_by_peer(s, 10), "connection to a cluster with no hosts was not closed"
    s.close()
    assert h.wait_stat("cluster.nowhere.upstream_cx_none_healthy", lambda v: v >= 1) >= 1
    failures = h.wait_stat("cluster.nowhere.update_failure", lambda v: v >= 1, timeout=10)
    status2, body2 = h.admin_get("/ready")
    report("unresolvable STRICT_DNS: /ready %s at start, %s after %s failed resolution(s)"
           % (status, status2, failures))
    assert failures and failures >= 1, "the failed resolution was not counted (update_failure)"
    assert h.stat("cluster.nowhere.membership_total") == 0


class PeerEchoServer(EchoServer):
    """Tells each client the address it came from ("ip:port\\n"), then echoes."""

    def handle(self, c):
        c.sendall(("%s:%d\n" % c.getpeername()[:2]).encode())
        super().handle(c)


def test_tcp_access_log_names_both_connections(herald, upstreams, port, tmp_path):
    """tcp_proxy's access log: the upstream operators name the connection the
    backend saw, its id is not the client connection's, the byte counts are
    the client's; a refused connect logs its flags and no upstream connection."""
    backend = upstreams(PeerEchoServer)
    live_port, dead_port, dead = port(), port(), port()
    log = str(tmp_path / "tcp.log")
    fmt = ("%CONNECTION_ID% %UPSTREAM_CONNECTION_ID% %UPSTREAM_LOCAL_ADDRESS% "
           "%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_PORT% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% "
           "%DOWNSTREAM_REMOTE_PORT% %BYTES_RECEIVED% %BYTES_SENT% %RESPONSE_FLAGS% %ACCESS_LOG_TYPE% "
           "%UPSTREAM_WIRE_BYTES_SENT% %UPSTREAM_WIRE_BYTES_RECEIVED% %DOWNSTREAM_WIRE_BYTES_RECEIVED% "
           "%DOWNSTREAM_WIRE_BYTES_SENT% %FILTER_CHAIN_NAME% %UPSTREAM_HOST_NAME%\n")
    al = [file_access_log(log, fmt)]
    live = tcp_listener(live_port, "live", access_log=al)
    live["filter_chains"][0]["name"] = "live_chain"
    herald(bootstrap([live, tcp_listener(dead_port, "dead", access_log=al)],
                     [cluster("live", [backend.addr]), cluster("dead", [("127.0.0.1", dead)])]))
    seen = {}
    for i in range(2):
        s = connect(live_port)
        try:
            peer = recv_line(s).decode()
            s.sendall(b"hello %d\n" % i)
            assert recv_line(s) == b"hello %d" % i
            seen[str(s.getsockname()[1])] = peer
        finally:
            s.close()
    s = connect(dead_port)
    client_port = str(s.getsockname()[1])
    assert closed_by_peer(s, 5)
    s.close()

    lines = [ln.split(" ") for ln in wait_lines(log, 3)]
    assert len(lines) == 3, lines
    by_client = {f[7]: f for f in lines}
    assert set(by_client) == set(seen) | {client_port}, by_client
    up_ids = set()
    for cport, peer in seen.items():
        f = by_client[cport]
        ip, pport = peer.rsplit(":", 1)
        assert f[2:5] == [peer, ip, pport], (f, peer)
        assert f[5:7] == ["%s:%d" % backend.addr, "live"], f
        sent = str(len(peer) + 1 + 8)
        assert f[8:11] == ["8", sent, "-"], f
        # no framing on TCP: the wire bytes each way are the bytes
        assert f[11:18] == ["TcpConnectionEnd", "8", sent, "8", sent, "live_chain", "%s:%d" % backend.addr], f
        assert f[0].isdigit() and f[1].isdigit() and f[0] != f[1], f
        up_ids.add(f[1])
    assert len(up_ids) == 2
    f = by_client[client_port]
    assert f[1:5] == ["-", "-", "-", "-"] and f[6] == "dead", f
    assert set(f[10].split(",")) >= {"UF", "URX"}, f
    assert f[11:17] == ["TcpConnectionEnd", "0", "0", "0", "0", "-"], f


def test_half_close_before_the_upstream_is_up(herald, upstreams, port):
    """Clients that connect and half-close at once, with no bytes: each end
    reaches the echo server even when it comes before herald's connection to
    it is up, so the server closes and herald closes the client in turn
    (no connection waits for an idle timeout). Twenty tries make the early
    case likely."""
    echo = upstreams(EchoServer)
    lport = port()
    herald(bootstrap([tcp_listener(lport, "echo")], [cluster("echo", [echo.addr])]))
    socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", lport), timeout=5)
        s.shutdown(socket.SHUT_WR)
        socks.append(s)
    for i, s in enumerate(socks):
        try:
            assert s.recv(16) == b"", "connection %d: bytes out of nowhere" % i
        except socket.timeout:
            raise AssertionError("connection %d: the client's end never reached the upstream" % i)
        finally:
            s.close()
