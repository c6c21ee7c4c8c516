"""Bytes through tcp_proxy: bulk transfer both ways with hashes, half-close
in both directions, and backpressure (herald's memory stays bounded when one
side stops reading). Each runs twice: with tcp_proxy's default forwarding
(splice(2) in the kernel where it can) and with HERALD_NO_SPLICE=1 (bytes
copied through buffers, so the watermarks do the backpressure)."""

import socket
import threading
import time

import pytest

from helpers import (CloseFirstServer, HashServer, NeverReadServer, ReplyAfterEofServer, SourceServer,
                     bootstrap, cluster, connect, recv_all, recv_until_eof, send_pattern, tcp_listener,
                     wait_for)

MiB = 1 << 20


@pytest.fixture(params=["splice", "copy"])
def forwarding(request):
    return request.param


@pytest.fixture
def proxy_to(herald, port, forwarding):
    """proxy_to(server, **start_options) -> (herald, listener port)."""
    def start(server, **kw):
        lport = port()
        env = {"HERALD_NO_SPLICE": "1"} if forwarding == "copy" else {}
        h = herald(bootstrap([tcp_listener(lport, "up")], [cluster("up", [server.addr])]), env=env, **kw)
        h.forwarding = forwarding
        return h, lport
    return start


def test_bulk_256mib_each_way_hashes_match(upstreams, proxy_to, report):
    size = 256 * MiB
    server = upstreams(HashServer, send_bytes=size)
    h, lport = proxy_to(server, log_level="info")
    t0 = time.monotonic()
    s = connect(lport, timeout=30)
    sent = {}

    def sender():
        try:
            sent["n"], sent["sha"] = send_pattern(s, size)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            sent["error"] = repr(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got, got_sha = recv_all(s)
    t.join(60)
    s.close()
    elapsed = time.monotonic() - t0
    assert "error" not in sent, sent
    assert wait_for(lambda: server.results, 30), "the server never saw EOF"
    res = server.results[0]
    report("bulk (%s): 2 x 256 MiB through tcp_proxy in %.1f s (%.0f MiB/s each way)"
           % (h.forwarding, elapsed, 256 / elapsed))
    assert res["recv"] == size, "server received %d of %d bytes" % (res["recv"], size)
    assert res["recv_sha"] == sent["sha"], "client->server data corrupted"
    assert got == size, "client received %d of %d bytes" % (got, size)
    assert got_sha == res["sent_sha"], "server->client data corrupted"
    assert elapsed < 60
    # Every pause of the client's reads was lifted again (one may be cut short by the close).
    paused = h.stat("tcp.tcp.downstream_flow_control_paused_reading_total")
    resumed = h.stat("tcp.tcp.downstream_flow_control_resumed_reading_total")
    assert resumed <= paused <= resumed + 1, "paused %d times, resumed %d times" % (paused, resumed)


def test_half_close_client_first(upstreams, proxy_to):
    """The client shuts down its write side and still gets the answer the
    server sends after seeing that FIN."""
    server = upstreams(ReplyAfterEofServer)
    h, lport = proxy_to(server)
    s = connect(lport)
    s.sendall(b"question")
    s.shutdown(socket.SHUT_WR)
    assert recv_until_eof(s) == b"got 8 bytes: question"
    s.close()
    assert server.results == [b"question"]


def test_half_close_server_first(upstreams, proxy_to):
    """The server shuts down its write side first: the client sees EOF after
    the greeting and can still send; the server receives it."""
    server = upstreams(CloseFirstServer)
    h, lport = proxy_to(server)
    s = connect(lport)
    assert recv_until_eof(s) == b"hello, closing my side\n"
    time.sleep(0.2)
    s.sendall(b"still talking after your FIN")
    s.shutdown(socket.SHUT_WR)
    assert wait_for(lambda: server.results, 5), "the server never got the client's FIN"
    assert server.results == [b"still talking after your FIN"]
    s.close()


def watch_rss(h, seconds):
    """Highest VmRSS (kB) of herald over `seconds`."""
    peak = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, h.rss_kb())
        time.sleep(0.05)
    return peak


def test_backpressure_client_stops_reading(upstreams, proxy_to, report):
    size = 1024 * MiB
    server = upstreams(SourceServer, total=size)
    h, lport = proxy_to(server, log_level="info")
    base = h.rss_kb()
    s = connect(lport, timeout=30, rcvbuf=64 * 1024)
    # Not reading: the upstream fills herald's buffers, then must be paused.
    assert wait_for(lambda: server.progress > 0, 5), "the upstream never started sending"
    peak = watch_rss(h, 3.0)
    stalled_at = server.progress
    growth = (peak - base) / 1024
    report("backpressure (%s, downstream not reading): RSS %d -> %d kB (+%.1f MiB), "
           "upstream stalled after %.1f MiB" % (h.forwarding, base, peak, growth, stalled_at / MiB))
    assert growth < 64, "herald grew %.1f MiB while the client was not reading" % growth
    assert stalled_at < 256 * MiB, "upstream was not paused: it sent %.0f MiB" % (stalled_at / MiB)
    t0 = time.monotonic()
    got, _ = recv_all(s, hash=False)
    s.close()
    assert got == size, "client received %d of %d bytes" % (got, size)
    assert time.monotonic() - t0 < 60
    assert wait_for(lambda: server.results, 5)
    assert server.results[0]["sent"] == size


def test_backpressure_upstream_never_reads(upstreams, proxy_to, report):
    server = upstreams(NeverReadServer)
    h, lport = proxy_to(server, log_level="info")
    base = h.rss_kb()
    s = connect(lport, timeout=30)
    s.setblocking(False)
    chunk = b"x" * (256 * 1024)
    sent = 0
    peak = base
    last_progress = time.monotonic()
    deadline = time.monotonic() + 20
    # Send until nothing more is taken for 1.5 s (herald stopped reading us).
    while time.monotonic() < deadline and time.monotonic() - last_progress < 1.5:
        try:
            n = s.send(chunk)
            sent += n
            last_progress = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
        peak = max(peak, h.rss_kb())
    peak = max(peak, watch_rss(h, 0.5))
    growth = (peak - base) / 1024
    report("backpressure (%s, upstream not reading): client sent %.1f MiB before blocking; RSS +%.1f MiB"
           % (h.forwarding, sent / MiB, growth))
    assert growth < 64, "herald grew %.1f MiB while the upstream was not reading" % growth
    assert sent < 256 * MiB, "herald kept reading: %.0f MiB accepted" % (sent / MiB)
    # Stalled: at most the one pause in force (none when the bytes move by splice).
    paused = h.stat("tcp.tcp.downstream_flow_control_paused_reading_total")
    resumed = h.stat("tcp.tcp.downstream_flow_control_resumed_reading_total")
    assert resumed <= paused <= resumed + 1, "paused %d times, resumed %d times" % (paused, resumed)
    if h.forwarding == "copy":
        assert paused == resumed + 1, "herald did not pause reading the client (paused %d, resumed %d)" \
            % (paused, resumed)
    s.close()
