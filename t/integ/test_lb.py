"""Load balancing and workers: round robin over tagging echo servers, and
connections spread over --concurrency workers."""

import collections
import re

from helpers import EchoServer, bootstrap, cluster, connect, recv_line, tcp_listener

WORKER_STAT = re.compile(r"^listener\.(.+)\.worker_(\d+)\.downstream_cx_total$")


def start_rr(herald, upstreams, port, concurrency):
    backends = [upstreams(EchoServer, tag="backend-%d" % i) for i in range(4)]
    lport = port()
    cfg = bootstrap([tcp_listener(lport, "rr", stat_prefix="rr")],
                    [cluster("rr", [b.addr for b in backends])])
    h = herald(cfg, concurrency=concurrency)
    return h, lport, backends


def tag_of_new_connection(lport):
    """Connects through herald and returns the backend's tag; checks the echo too."""
    s = connect(lport)
    try:
        tag = recv_line(s).decode()
        s.sendall(b"ping\n")
        assert recv_line(s) == b"ping", "no echo through herald from %s" % tag
        return tag
    finally:
        s.close()


def worker_counts(h, lport):
    """{worker index: downstream_cx_total} for the listener on lport."""
    out = {}
    for name, v in h.stats().items():
        m = WORKER_STAT.match(name)
        if m and m.group(1).endswith("_%d" % lport):
            out[int(m.group(2))] = v
    return out


def test_round_robin_exact_one_worker(herald, upstreams, port):
    h, lport, backends = start_rr(herald, upstreams, port, concurrency=1)
    tags = collections.Counter(tag_of_new_connection(lport) for _ in range(400))
    assert tags == {"backend-%d" % i: 100 for i in range(4)}, tags
    assert [b.accepted for b in backends] == [100] * 4
    assert h.wait_stat("cluster.rr.upstream_cx_total", lambda v: v >= 400) == 400
    assert h.wait_stat("tcp.rr.downstream_cx_total", lambda v: v >= 400) == 400


def test_round_robin_two_workers(herald, upstreams, port):
    # Each worker rotates on its own, so per-backend counts need not be
    # equal; every backend is used and nothing is lost.
    h, lport, backends = start_rr(herald, upstreams, port, concurrency=2)
    tags = collections.Counter(tag_of_new_connection(lport) for _ in range(400))
    assert sorted(tags) == ["backend-%d" % i for i in range(4)], tags
    assert sum(tags.values()) == 400
    assert all(c > 0 for c in tags.values()), tags
    assert h.wait_stat("cluster.rr.upstream_cx_total", lambda v: v >= 400) == 400
    counts = worker_counts(h, lport)
    assert sorted(counts) == [0, 1], "worker stats for listener %d: %r" % (lport, counts)
    assert sum(counts.values()) == 400, counts


def test_concurrency_two_spreads_over_workers(herald, upstreams, port):
    backend = upstreams(EchoServer, tag="only")
    lport = port()
    h = herald(bootstrap([tcp_listener(lport, "one")], [cluster("one", [backend.addr])]), concurrency=2)
    for _ in range(200):
        assert tag_of_new_connection(lport) == "only"
    assert h.wait_stat("tcp.tcp.downstream_cx_total", lambda v: v >= 200) == 200
    counts = worker_counts(h, lport)
    assert counts.get(0, 0) > 0 and counts.get(1, 0) > 0, \
        "connections not spread over both workers: %r" % counts
    assert sum(counts.values()) == 200, counts


def test_locality_weighted_round_robin(herald, upstreams, port):
    """common_lb_config.locality_weighted_lb_config: the zone of weight 3
    takes three quarters of the connections, split evenly over its two
    backends; the zone of weight 1 the rest; a zone without a weight none.
    Without the option, every backend gets the same share."""
    backends = [upstreams(EchoServer, tag="backend-%d" % i) for i in range(5)]
    zones = [(1, backends[0:1]), (3, backends[1:3]), (None, backends[3:5])]

    def localities():
        out = []
        for w, bs in zones:
            loc = {"locality": {"zone": "z%d" % len(out)},
                   "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                       "address": b.addr[0], "port_value": b.addr[1]}}}} for b in bs]}
            if w:
                loc["load_balancing_weight"] = w
            out.append(loc)
        return out
    lport, plain_port = port(), port()
    weighted = cluster("weighted", [], common_lb_config={"locality_weighted_lb_config": {}})
    weighted["load_assignment"]["endpoints"] = localities()
    plain = cluster("plain", [])
    plain["load_assignment"]["endpoints"] = localities()
    herald(bootstrap([tcp_listener(lport, "weighted", stat_prefix="w"),
                      tcp_listener(plain_port, "plain", stat_prefix="p")], [weighted, plain]))
    tags = collections.Counter(tag_of_new_connection(lport) for _ in range(400))
    assert tags == {"backend-0": 100, "backend-1": 150, "backend-2": 150}, tags
    tags = collections.Counter(tag_of_new_connection(plain_port) for _ in range(100))
    assert tags == {"backend-%d" % i: 20 for i in range(5)}, tags
