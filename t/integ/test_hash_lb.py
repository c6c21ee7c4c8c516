"""Consistent hashing: RING_HASH and MAGLEV clusters with a route's
hash_policy (header, cookie, query_parameter, connection_properties), over
four HTTP backends that name themselves in x-backend. The key-movement
properties (removing one of 4 hosts) are in t/unit/test_lb.c."""

import collections
import os
import re

import pytest

from conftest import PLUGIN_DIR, run_herald
from helpers import EchoServer, bootstrap, cluster, connect, recv_line, tcp_listener
from http_backends import HCM_TYPE, HttpBackend, hcm, http_cluster, http_listener, request, route

POLICIES = ["RING_HASH", "MAGLEV"]


def start_hash(herald, upstreams, port, lb_policy, hash_policy, concurrency=2, cluster_extra=None):
    """Four backends b0..b3 behind one route with hash_policy to a lb_policy cluster."""
    backends = [upstreams(HttpBackend, "b%d" % i) for i in range(4)]
    lp = port()
    c = http_cluster("hashed", [b.port for b in backends], lb_policy=lb_policy, **(cluster_extra or {}))
    cfg = {"static_resources": {
        "listeners": [http_listener(lp, hcm("hash", [route("/", "hashed", hash_policy=hash_policy)]))],
        "clusters": [c]}}
    return herald(cfg, concurrency=concurrency), lp


def backend_of(lp, path="/", headers=None):
    status, h, _ = request(lp, path, headers=headers)
    assert status == 200, (status, h)
    return h["x-backend"]


def spread(lp, key_to_request, n=40, repeat=3):
    """{key: backend}: each key requested `repeat` times (new connections, so
    over both workers) must land on one backend every time."""
    owner = {}
    for k in range(n):
        seen = {backend_of(lp, **key_to_request("user-%d" % k)) for _ in range(repeat)}
        assert len(seen) == 1, "key user-%d went to %s" % (k, sorted(seen))
        owner[k] = seen.pop()
    return owner


@pytest.mark.parametrize("lb_policy", POLICIES)
def test_header_hash_sticks_and_spreads(herald, upstreams, port, lb_policy):
    h, lp = start_hash(herald, upstreams, port, lb_policy, [{"header": {"header_name": "x-user"}}])
    owner = spread(lp, lambda k: {"headers": {"x-user": k}})
    counts = collections.Counter(owner.values())
    assert sorted(counts) == ["b0", "b1", "b2", "b3"], counts
    # without the header there is no hash: hosts are picked at random
    assert len({backend_of(lp) for _ in range(40)}) > 1


@pytest.mark.parametrize("lb_policy", POLICIES)
def test_same_key_same_backend_across_policies_and_workers(herald, upstreams, port, lb_policy):
    # query_parameter and header hash the same string the same way (xxHash64),
    # so `?u=v` and `x-user: v` pick the same host
    h, lp = start_hash(herald, upstreams, port, lb_policy,
                       [{"query_parameter": {"name": "u"}}, {"header": {"header_name": "x-user"}}],
                       concurrency=4)
    for k in range(20):
        by_query = backend_of(lp, "/?u=key%d" % k)
        by_header = backend_of(lp, "/", headers={"x-user": "key%d" % k})
        assert by_query == by_header, k


def test_query_parameter_hash(herald, upstreams, port):
    h, lp = start_hash(herald, upstreams, port, "RING_HASH", [{"query_parameter": {"name": "user"}}])
    owner = spread(lp, lambda k: {"path": "/items?a=1&user=%s&b=2" % k})
    assert len(set(owner.values())) == 4, collections.Counter(owner.values())


def test_cookie_hash(herald, upstreams, port):
    h, lp = start_hash(herald, upstreams, port, "MAGLEV", [{"cookie": {"name": "sess"}}])
    owner = spread(lp, lambda k: {"headers": {"cookie": "a=b; sess=%s; c=d" % k}})
    assert len(set(owner.values())) == 4, collections.Counter(owner.values())
    # a quoted value hashes as the bare one
    assert backend_of(lp, headers={"cookie": 'sess="user-3"'}) == owner[3]
    # no cookie and no ttl: nothing is set on the response
    status, hdrs, _ = request(lp, "/")
    assert status == 200 and "set-cookie" not in hdrs


def test_cookie_generated_with_ttl(herald, upstreams, port):
    h, lp = start_hash(herald, upstreams, port, "RING_HASH",
                       [{"cookie": {"name": "sticky", "ttl": "60s", "path": "/"}}])
    status, hdrs, _ = request(lp, "/")
    assert status == 200
    cookie = hdrs.get("set-cookie", "")
    m = re.match(r'^sticky="([0-9a-f]{16})"; Max-Age=60; Path=/; HttpOnly$', cookie)
    assert m, "Set-Cookie: %r" % cookie
    first = hdrs["x-backend"]
    # the client sends it back: the same backend, and no new cookie
    for _ in range(5):
        status, hdrs2, _ = request(lp, "/", headers={"cookie": "sticky=" + m.group(1)})
        assert status == 200 and hdrs2["x-backend"] == first
        assert "set-cookie" not in hdrs2


@pytest.mark.parametrize("lb_policy", POLICIES)
def test_source_ip_hash(herald, upstreams, port, lb_policy):
    h, lp = start_hash(herald, upstreams, port, lb_policy, [{"connection_properties": {"source_ip": True}}],
                       concurrency=4)
    seen = collections.Counter(backend_of(lp) for _ in range(30))
    assert len(seen) == 1, "all from 127.0.0.1 must go to one backend: %s" % seen


@pytest.mark.parametrize("lb_policy", POLICIES)
def test_tcp_proxy_source_ip(herald, upstreams, port, lb_policy):
    backends = [upstreams(EchoServer, tag="t%d" % i) for i in range(4)]
    lp = port()
    cfg = bootstrap([tcp_listener(lp, "tcphash", hash_policy=[{"source_ip": {}}])],
                    [cluster("tcphash", [b.addr for b in backends], lb_policy=lb_policy)])
    herald(cfg, concurrency=2)
    tags = collections.Counter()
    for _ in range(20):
        s = connect(lp)
        try:
            tags[recv_line(s).decode()] += 1
        finally:
            s.close()
    assert len(tags) == 1, "all from 127.0.0.1 must go to one backend: %s" % tags


def test_terminal_policy(herald, upstreams, port):
    policies = [{"header": {"header_name": "x-tenant"}, "terminal": True},
                {"header": {"header_name": "x-user"}}]
    h, lp = start_hash(herald, upstreams, port, "RING_HASH", policies)
    # x-tenant produced a hash and is terminal: x-user is not looked at
    tenant = {backend_of(lp, headers={"x-tenant": "t1", "x-user": "u%d" % k}) for k in range(20)}
    assert len(tenant) == 1, tenant
    # without x-tenant, x-user decides
    users = {backend_of(lp, headers={"x-user": "u%d" % k}) for k in range(40)}
    assert len(users) > 1, users


def test_header_regex_rewrite(herald, upstreams, port):
    # only the part before '.' counts: "alice.1" and "alice.2" are one key
    hp = [{"header": {"header_name": "x-user",
                      "regex_rewrite": {"pattern": {"regex": "\\..*"}, "substitution": ""}}}]
    h, lp = start_hash(herald, upstreams, port, "MAGLEV", hp)
    for k in range(10):
        a = backend_of(lp, headers={"x-user": "user%d.1" % k})
        b = backend_of(lp, headers={"x-user": "user%d.2" % k})
        c = backend_of(lp, headers={"x-user": "user%d" % k})
        assert a == b == c, k


def test_ring_hash_config_options(herald, upstreams, port):
    extra = {"ring_hash_lb_config": {"minimum_ring_size": 64, "maximum_ring_size": 4096,
                                     "hash_function": "MURMUR_HASH_2"}}
    h, lp = start_hash(herald, upstreams, port, "RING_HASH", [{"header": {"header_name": "x-user"}}],
                       cluster_extra=extra)
    owner = spread(lp, lambda k: {"headers": {"x-user": k}}, repeat=2)
    assert len(set(owner.values())) == 4


def test_maglev_small_prime_table(herald, upstreams, port):
    h, lp = start_hash(herald, upstreams, port, "MAGLEV", [{"header": {"header_name": "x-user"}}],
                       cluster_extra={"maglev_lb_config": {"table_size": 7}})
    owner = spread(lp, lambda k: {"headers": {"x-user": k}}, repeat=2)
    assert len(set(owner.values())) == 4


def _validate(tmp_path, text):
    path = os.path.join(str(tmp_path), "hash.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path, run_herald(["--mode", "validate", "-c", path, "--plugin-dir", PLUGIN_DIR])


CLUSTER_YAML = """static_resources:
  clusters:
  - name: hashed
    lb_policy: %s
%s    load_assignment:
      cluster_name: hashed
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}
"""


def test_non_prime_table_size_rejected(tmp_path):
    path, r = _validate(tmp_path, CLUSTER_YAML % ("MAGLEV",
                                                  "    maglev_lb_config:\n      table_size: 65536\n"))
    assert r.returncode != 0
    assert re.search(r"%s:6:\d+: .*table_size 65536 is not a prime number" % re.escape(path),
                     r.stderr), r.stderr


def test_ring_sizes_checked(tmp_path):
    path, r = _validate(tmp_path, CLUSTER_YAML % (
        "RING_HASH", "    ring_hash_lb_config: {minimum_ring_size: 4096, maximum_ring_size: 1024}\n"))
    assert r.returncode != 0
    assert re.search(r"%s:5:\d+: .*minimum_ring_size \(4096\) is more than maximum_ring_size \(1024\)"
                     % re.escape(path), r.stderr), r.stderr
    path, r = _validate(tmp_path, CLUSTER_YAML % (
        "RING_HASH", "    ring_hash_lb_config: {maximum_ring_size: 9000000}\n"))
    assert r.returncode != 0 and "maximum_ring_size 9000000 is out of range" in r.stderr, r.stderr


def test_hash_configs_accepted(tmp_path):
    path, r = _validate(tmp_path, CLUSTER_YAML % (
        "MAGLEV", "    maglev_lb_config: {table_size: 5000011}\n"
        "    common_lb_config: {consistent_hashing_lb_config: {use_hostname_for_hashing: true}}\n"))
    assert r.returncode == 0, r.stderr


def test_unsupported_hash_policy_fields(tmp_path):
    text = """static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": %s
          stat_prefix: x
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route:
                  cluster: c
                  hash_policy:
                  - filter_state: {key: x}
  clusters:
  - name: c
    lb_policy: RING_HASH
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}
""" % HCM_TYPE
    path, r = _validate(tmp_path, text)
    assert r.returncode != 0
    assert re.search(r"%s:23:\d+: .*filter_state.*not supported" % re.escape(path), r.stderr), r.stderr


def lbp(*exts):
    """load_balancing_policy with these (short name, typed_config fields) in order."""
    return {"load_balancing_policy": {"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies." + name,
        "typed_config": dict(cfg, **{"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies."
                                              "%s.v3.%s" % (name, msg)})}}
        for name, msg, cfg in exts]}}


@pytest.mark.parametrize("lb_policy,ext", [("RING_HASH", ("ring_hash", "RingHash", {"minimum_ring_size": 2048})),
                                           ("MAGLEV", ("maglev", "Maglev", {"table_size": 65537}))])
def test_load_balancing_policy_equals_lb_policy(herald, upstreams, port, lb_policy, ext):
    """Cluster.load_balancing_policy (Envoy's extension form) picks exactly the
    hosts lb_policy does; an extension herald does not have is skipped for
    the next one, as in Envoy."""
    backends = [upstreams(HttpBackend, "b%d" % i) for i in range(4)]
    hp = [{"header": {"header_name": "x-user"}}]

    def start(**cluster_extra):
        lp = port()
        c = http_cluster("hashed", [b.port for b in backends], **cluster_extra)
        return herald({"static_resources": {
            "listeners": [http_listener(lp, hcm("hash", [route("/", "hashed", hash_policy=hp)]))],
            "clusters": [c]}}), lp

    extra = {"ring_hash_lb_config": {"minimum_ring_size": 2048}} if lb_policy == "RING_HASH" else {}
    _, classic = start(lb_policy=lb_policy, **extra)
    skipped = ("client_side_weighted_round_robin", "ClientSideWeightedRoundRobin", {})
    _, ext_lp = start(**lbp(skipped, ext))
    for k in range(30):
        key = {"x-user": "user-%d" % k}
        assert backend_of(classic, headers=key) == backend_of(ext_lp, headers=key), k


def test_load_balancing_policy_round_robin_and_errors(herald, upstreams, port, tmp_path):
    import json
    import conftest
    backends = [upstreams(HttpBackend, "b%d" % i) for i in range(4)]
    lp = port()
    c = http_cluster("rr", [b.port for b in backends], **lbp(("round_robin", "RoundRobin", {})))
    del c["lb_policy"]
    herald({"static_resources": {"listeners": [http_listener(lp, hcm("rr", [route("/", "rr")]))],
                                 "clusters": [c]}})
    got = collections.Counter(backend_of(lp) for _ in range(20))
    assert got == {"b0": 5, "b1": 5, "b2": 5, "b3": 5}, got
    # with lb_policy too: load_balancing_policy decides, and validation says so
    c = http_cluster("x", [1], **dict(lbp(("random", "Random", {})), lb_policy="MAGLEV"))
    path = tmp_path / "both.json"
    path.write_text(json.dumps({"static_resources": {"clusters": [c]}}))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path)])
    assert r.returncode == 0 and "lb_policy MAGLEV is ignored: load_balancing_policy decides" in r.stderr, r.stderr
    cases = [
        (lbp(("client_side_weighted_round_robin", "ClientSideWeightedRoundRobin", {})),
         r"load_balancing_policy\.policies: none of these policies is one herald has"),
        (lbp(("maglev", "Maglev", {"table_size": 100})), r"table_size 100 is not a prime number"),
        (lbp(("least_request", "LeastRequest", {"active_request_bias": {"default_value": 1}})),
         r"active_request_bias: not supported"),
    ]
    for extra, want in cases:
        c = http_cluster("x", [1], **extra)
        if "lb_policy" not in extra:
            del c["lb_policy"]
        path = tmp_path / "lbp.json"
        path.write_text(json.dumps({"static_resources": {"clusters": [c]}}))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path)])
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*lbp.json:\d+:\d+: static_resources.clusters\[0\]\..*" + want, r.stderr), \
            (want, r.stderr)


PREVIOUS_HOSTS = {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}


@pytest.mark.parametrize("lb_policy", POLICIES)
def test_previous_hosts_moves_a_hashed_retry(herald, upstreams, port, lb_policy):
    """A key whose host is down: without a host predicate its retry hashes
    to the same dead host again and fails; with previous_hosts the re-pick
    walks the ring (RING_HASH) or rehashes (MAGLEV) to the live host."""
    live = upstreams(HttpBackend, "live")
    dead = port()                       # nothing listens there
    lp = port()
    hp = [{"header": {"header_name": "x-user"}}]
    retry = {"retry_on": "connect-failure", "num_retries": 1}
    routes = [route("/avoid", "hashed", hash_policy=hp,
                    retry_policy=dict(retry, retry_host_predicate=[PREVIOUS_HOSTS],
                                      # each re-pick lands on the dead one of the two hosts with
                                      # odds 1/2 (the next ring point, or a fresh Maglev slot): 30
                                      # keep a key's chance of never leaving it under 1e-9
                                      host_selection_retry_max_attempts=30)),
              route("/", "hashed", hash_policy=hp, retry_policy=retry)]
    cfg = {"static_resources": {
        "listeners": [http_listener(lp, hcm("hash", routes))],
        "clusters": [http_cluster("hashed", [dead, live.port], lb_policy=lb_policy)]}}
    herald(cfg, concurrency=1)
    keys = ["user-%d" % k for k in range(24)]
    plain = {k: request(lp, "/plain", headers={"x-user": k})[0] for k in keys}
    doomed = [k for k in keys if plain[k] == 503]
    assert doomed and len(doomed) < len(keys), plain   # the control: some keys live on the dead host
    assert all(plain[k] == 200 for k in keys if k not in doomed), plain
    avoid = {k: request(lp, "/avoid", headers={"x-user": k})[0] for k in doomed}
    assert set(avoid.values()) == {200}, avoid
