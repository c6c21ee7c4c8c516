"""Subset load balancing (Cluster.lb_subset_config) with the real herald and
HTTP backends that name themselves (x-backend): the header_to_metadata
filter puts x-version into envoy.lb dynamic metadata (or default: "true"
when it is missing) and the router picks hosts in the matching subset;
route and weighted-cluster metadata_match; the fallback policies; health
checking; STRICT_DNS hosts; the lb_subsets_* stats; and Envoy's own example
config (docs-configuration-http_filters-header-to-metadata-filter.yaml),
validated and run."""

import collections
import json
import os
import re

import pytest

import helpers
import http_backends as hb
from conftest import PLUGIN_DIR, run_herald, scan_log
from http_backends import HttpBackend, hcm, http_listener, request, sock_addr
from test_health_check import HealthBackend, addr, host_flags

H2M_TYPE = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
ENVOY_CONFIG = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
                                             "conformance", "envoy-configs",
                                             "docs-configuration-http_filters-header-to-metadata-filter.yaml"))
LOG_FMT = "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% v=%DYNAMIC_METADATA(envoy.lb:version)% " \
          "d=%DYNAMIC_METADATA(envoy.lb:default)%\n"


def h2m(missing_default=True):
    """The Envoy example's filter: x-version -> envoy.lb version; without the
    header, default: "true"."""
    rule = {"header": "x-version", "on_header_present": {"metadata_namespace": "envoy.lb", "key": "version",
                                                          "type": "STRING"}}
    if missing_default:
        rule["on_header_missing"] = {"metadata_namespace": "envoy.lb", "key": "default", "value": "true",
                                     "type": "STRING"}
    return {"name": "envoy.filters.http.header_to_metadata",
            "typed_config": {"@type": H2M_TYPE, "request_rules": [rule]}}


def endpoint(port, md):
    return {"endpoint": {"address": sock_addr(port)}, "metadata": {"filter_metadata": {"envoy.lb": md}}}


def subset_cluster(name, eps, fallback="ANY_ENDPOINT", selectors=(["default"], ["version"]), **extra):
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
         "lb_subset_config": {"fallback_policy": fallback,
                              "subset_selectors": [{"keys": list(k)} for k in selectors]},
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]}}
    for k, v in extra.items():
        if k == "subset":
            c["lb_subset_config"].update(v)
        else:
            c[k] = v
    return c


def start(herald, port, clusters, routes, filters, tmp_path=None, concurrency=1):
    lp = port()
    extra = {}
    if tmp_path is not None:
        extra["access_log"] = [hb.file_access_log(str(tmp_path / "access.log"), LOG_FMT)]
    cfg = {"static_resources": {"listeners": [http_listener(lp, hcm("ingress", routes, filters, **extra))],
                                "clusters": clusters}}
    return herald(cfg, concurrency=concurrency), lp


def who(lp, n, path="/", headers=None, statuses=(200,)):
    """The backends that answered n requests, in order."""
    out = []
    for _ in range(n):
        status, h, body = request(lp, path, headers=headers)
        assert status in statuses, (status, body)
        out.append(h.get("x-backend") or body.decode())
    return out


@pytest.fixture
def versioned(upstreams):
    """v1a, v1b: version "1.0"; v2: "2.0"; d1, d2: default "true"."""
    names = {"v1a": {"version": "1.0"}, "v1b": {"version": "1.0"}, "v2": {"version": "2.0"},
             "d1": {"default": "true"}, "d2": {"default": "true"}}
    backends = {n: upstreams(HttpBackend, n) for n in names}
    return backends, [endpoint(backends[n].port, md) for n, md in names.items()]


def test_header_picks_subset_round_robin_default_and_any_endpoint(herald, port, versioned, tmp_path):
    backends, eps = versioned
    h, lp = start(herald, port, [subset_cluster("versioned", eps)], [hb.route("/", "versioned")], [h2m()], tmp_path)
    # x-version: 1.0 reaches only the 1.0 hosts, in turn (round robin inside the subset)
    assert who(lp, 6, headers={"x-version": "1.0"}) == ["v1a", "v1b"] * 3
    # no header: the filter sets default: "true", the default hosts answer
    assert who(lp, 6) == ["d1", "d2"] * 3
    assert set(who(lp, 3, headers={"x-version": "2.0"})) == {"v2"}
    # a version no host has: ANY_ENDPOINT, every host in turn
    assert collections.Counter(who(lp, 10, headers={"x-version": "9.9"})) == \
        {n: 2 for n in ("v1a", "v1b", "v2", "d1", "d2")}
    st = h.stats()
    c = "cluster.versioned."
    assert (st[c + "lb_subsets_active"], st[c + "lb_subsets_created"], st[c + "lb_subsets_removed"]) == (3, 3, 0)
    assert (st[c + "lb_subsets_selected"], st[c + "lb_subsets_fallback"], st[c + "lb_subsets_fallback_panic"]) \
        == (15, 10, 0)
    lines = helpers.wait_lines(str(tmp_path / "access.log"), 25)
    assert lines[0].split()[0] == "200" and lines[0].endswith("v=1.0 d=-"), lines[0]
    assert lines[6].endswith("v=- d=true"), lines[6]


def test_no_fallback_is_503_no_healthy_upstream(herald, port, versioned, tmp_path):
    backends, eps = versioned
    h, lp = start(herald, port, [subset_cluster("strict", eps, fallback="NO_FALLBACK")], [hb.route("/", "strict")],
                  [h2m()], tmp_path)
    assert who(lp, 2, headers={"x-version": "1.0"}) == ["v1a", "v1b"]
    status, _, body = request(lp, "/", headers={"x-version": "9.9"})
    assert status == 503 and body == b"no healthy upstream", (status, body)
    lines = helpers.wait_lines(str(tmp_path / "access.log"), 3)
    assert lines[2].split()[:2] == ["503", "UH"], lines[2]
    st = h.stats()
    assert st["cluster.strict.upstream_cx_none_healthy"] == 1
    assert (st["cluster.strict.lb_subsets_fallback"], st["cluster.strict.lb_subsets_selected"]) == (0, 2)
    assert sum(b.served() for b in backends.values()) == 2


def test_route_metadata_match_weighted_clusters_and_dynamic_override(herald, port, versioned):
    """metadata_match on a route and on weighted_clusters entries (merged
    over the route's), and the request's envoy.lb metadata over both."""
    backends, eps = versioned

    def mm(**kv):
        return {"filter_metadata": {"envoy.lb": kv}}
    routes = [hb.route("/v1", "versioned", metadata_match=mm(version="1.0")),
              hb.route("/canary", None, weighted_clusters={"clusters": [
                  {"name": "versioned", "weight": 1, "metadata_match": mm(version="2.0")},
                  {"name": "versioned", "weight": 3}]}, metadata_match=mm(version="1.0")),
              hb.route("/", "versioned")]
    h, lp = start(herald, port, [subset_cluster("versioned", eps, fallback="NO_FALLBACK")], routes,
                  [h2m(missing_default=False)])
    assert who(lp, 4, "/v1") == ["v1a", "v1b"] * 2
    # the request's x-version (dynamic metadata) wins over the route's
    assert who(lp, 2, "/v1", headers={"x-version": "2.0"}) == ["v2", "v2"]
    # weighted entries: one with its own version 2.0, one with the route's 1.0
    seen = collections.Counter(who(lp, 80, "/canary"))
    assert set(seen) <= {"v1a", "v1b", "v2"} and seen["v2"] > 5 and seen["v1a"] + seen["v1b"] > 30, seen
    # no metadata_match and no x-version: no criteria, NO_FALLBACK
    status, _, _ = request(lp, "/")
    assert status == 503
    assert h.stat("cluster.versioned.lb_subsets_selected") == 86


def test_health_checked_subsets(herald, upstreams, port):
    """As Envoy: a subset keeps its hosts whatever their health. All failing:
    its balancer panics (they still get the requests) or, with
    healthy_panic_threshold 0, finds none (503 UH) and no fallback is taken.
    The default subset failing falls to panic_mode_any."""
    a, b, c, d = (upstreams(HealthBackend, n) for n in "abcd")
    md = {a: {"version": "1.0"}, b: {"version": "1.0"}, c: {"default": "true"}, d: {"version": "2.0"}}
    hc = {"timeout": "0.5s", "interval": "0.1s", "no_traffic_interval": "0.1s", "unhealthy_threshold": 1,
          "healthy_threshold": 1, "http_health_check": {"path": "/healthz"}}

    def cl(name, threshold):
        return subset_cluster(name, [endpoint(s.port, m) for s, m in md.items()], fallback="DEFAULT_SUBSET",
                              health_checks=[hc], common_lb_config={"healthy_panic_threshold": {"value": threshold}},
                              subset={"default_subset": {"default": "true"}, "panic_mode_any": True})
    h, lp = start(herald, port, [cl("p50", 50), cl("p0", 0)], [hb.route("/p0", "p0"), hb.route("/", "p50")],
                  [h2m()])
    healthy = {addr(s.port): "healthy" for s in (a, b, c, d)}
    assert helpers.wait_for(lambda: host_flags(h, "p0") == healthy and host_flags(h, "p50") == healthy)
    assert who(lp, 4, "/", {"x-version": "1.0"}) == ["a", "b"] * 2
    a.healthy = b.healthy = False
    down = dict(healthy, **{addr(a.port): "/failed_active_hc", addr(b.port): "/failed_active_hc"})
    assert helpers.wait_for(lambda: host_flags(h, "p0") == down and host_flags(h, "p50") == down), host_flags(h, "p0")
    panic = h.stat("cluster.p50.lb_healthy_panic")
    assert sorted(who(lp, 4, "/", {"x-version": "1.0"})) == ["a", "a", "b", "b"]   # panic inside the subset
    assert h.stat("cluster.p50.lb_healthy_panic") == panic + 4
    status, _, body = request(lp, "/p0", headers={"x-version": "1.0"})
    assert (status, body) == (503, b"no healthy upstream")
    assert h.stat("cluster.p0.lb_subsets_fallback") == 0
    # a version no subset has: the DEFAULT_SUBSET fallback (default: "true", c) ...
    assert who(lp, 2, "/p0", {"x-version": "9.9"}) == ["c", "c"]
    assert h.stat("cluster.p0.lb_subsets_fallback") == 2
    # ... and when c fails too, panic_mode_any: d is the healthy host left
    c.healthy = False
    down[addr(c.port)] = "/failed_active_hc"
    assert helpers.wait_for(lambda: host_flags(h, "p0") == down)
    assert who(lp, 3, "/p0", {"x-version": "9.9"}) == ["d"] * 3
    assert h.stat("cluster.p0.lb_subsets_fallback_panic") == 3
    assert h.stat("cluster.p0.lb_subsets_fallback") == 2
    # without x-version the request names the default subset itself (a selector):
    # it is chosen, all of it failing, so no host (no fallback from a chosen subset)
    status, _, _ = request(lp, "/p0")
    assert status == 503
    # back to health: the subset serves again
    a.healthy = True
    assert helpers.wait_for(lambda: host_flags(h, "p0")[addr(a.port)] == "healthy")
    assert who(lp, 2, "/p0", {"x-version": "1.0"}) == ["a", "a"]
    assert h.stat("cluster.p0.lb_subsets_active") == 3   # health changes rebuild, never lose, subsets


def test_strict_dns_hosts_join_their_subsets(herald, upstreams, port):
    """Subsets are built again when DNS brings hosts: an endpoint named
    localhost joins its version's subset once resolved."""
    v1 = upstreams(HttpBackend, "v1")
    v2 = upstreams(HttpBackend, "v2")
    eps = [endpoint(v1.port, {"version": "1.0"}), endpoint(v2.port, {"version": "2.0"})]
    eps[1]["endpoint"]["address"]["socket_address"]["address"] = "localhost"
    cl = subset_cluster("dns", eps, fallback="NO_FALLBACK", selectors=(["version"],), type="STRICT_DNS",
                        dns_lookup_family="V4_ONLY", dns_refresh_rate="0.2s")
    h, lp = start(herald, port, [cl], [hb.route("/", "dns")], [h2m(missing_default=False)])
    assert who(lp, 2, headers={"x-version": "2.0"}) == ["v2", "v2"]
    assert who(lp, 1, headers={"x-version": "1.0"}) == ["v1"]
    assert h.stat("cluster.dns.lb_subsets_active") == 2
    assert h.stat("cluster.dns.lb_subsets_created") == 2   # 127.0.0.1 first, localhost's when it resolved
    # re-resolving to the same address changes nothing
    assert h.wait_stat("cluster.dns.update_no_rebuild", lambda v: v >= 1)
    assert (h.stat("cluster.dns.lb_subsets_created"), h.stat("cluster.dns.lb_subsets_removed")) == (2, 0)


def test_lb_policies_inside_subsets(herald, upstreams, port):
    """LEAST_REQUEST, RANDOM and RING_HASH (with the route's hash_policy) keep
    to the subset's hosts."""
    bs = [upstreams(HttpBackend, "h%d" % i) for i in range(4)]
    md = [{"version": "1.0"}, {"version": "2.0"}, {"version": "1.0"}, {"version": "2.0"}]
    clusters = [subset_cluster(p.lower(), [endpoint(b.port, m) for b, m in zip(bs, md)], fallback="NO_FALLBACK",
                               selectors=(["version"],), lb_policy=p)
                for p in ("LEAST_REQUEST", "RANDOM", "RING_HASH")]
    routes = [hb.route("/least_request", "least_request"), hb.route("/random", "random"),
              hb.route("/ring_hash", "ring_hash", hash_policy=[{"header": {"header_name": "x-user"}}])]
    h, lp = start(herald, port, clusters, routes, [h2m(missing_default=False)])
    for p in ("least_request", "random"):
        assert set(who(lp, 20, "/" + p, {"x-version": "2.0"})) == {"h1", "h3"}, p
    users = {}
    for u in range(12):
        got = set(who(lp, 3, "/ring_hash", {"x-version": "1.0", "x-user": "u%d" % u}))
        assert len(got) == 1 and got <= {"h0", "h2"}, got   # one host per user, in the subset
        users[u] = got.pop()
    assert set(users.values()) == {"h0", "h2"}


def test_envoy_example_config(herald, upstreams, port, tmp_path):
    """Envoy's own example validates as it is, and runs (its ports moved to
    free ones): x-version: 1.0 reaches the 1.0 host, no header the default
    host, an unknown version either (ANY_ENDPOINT)."""
    if not os.path.exists(ENVOY_CONFIG):
        pytest.skip("no %s" % ENVOY_CONFIG)
    r = run_herald(["--mode", "validate", "-c", ENVOY_CONFIG, "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 0 and not scan_log(r.stderr), r.stderr
    default, v1 = upstreams(HttpBackend, "default"), upstreams(HttpBackend, "v1.0")
    lp = port()
    text = open(ENVOY_CONFIG).read()
    text = re.sub(r"port_value: 80\b", "port_value: %d" % lp, text)
    text = text.replace("port_value: 8080", "port_value: %d" % default.port)
    text = text.replace("port_value: 8081", "port_value: %d" % v1.port)
    text = text.replace("address: 0.0.0.0", "address: 127.0.0.1")
    text += "admin:\n  address:\n    socket_address: {address: 127.0.0.1, port_value: $admin_port}\n"
    h = herald(text)
    assert who(lp, 3, headers={"x-version": "1.0"}) == ["v1.0"] * 3
    assert who(lp, 3) == ["default"] * 3
    assert collections.Counter(who(lp, 4, headers={"x-version": "2.0"})) == {"default": 2, "v1.0": 2}
    st = h.stats()
    assert (st["cluster.versioned-cluster.lb_subsets_active"], st["cluster.versioned-cluster.lb_subsets_selected"],
            st["cluster.versioned-cluster.lb_subsets_fallback"]) == (2, 6, 4)


def test_config_errors(tmp_path):
    def validate(cluster_extra, route_extra=None):
        c = subset_cluster("c", [endpoint(1, {"v": "1"})], **cluster_extra)
        r = hb.route("/", "c", **(route_extra or {}))
        cfg = {"static_resources": {"listeners": [http_listener(1, hcm("x", [r]))], "clusters": [c]}}
        p = tmp_path / "c.json"
        p.write_text(json.dumps(cfg))
        r = run_herald(["--mode", "validate", "-c", str(p), "--plugin-dir", PLUGIN_DIR])
        assert not scan_log(r.stderr), r.stderr
        return r

    r = validate({"subset": {"metadata_fallback_policy": "FALLBACK_LIST"}})
    assert r.returncode == 1 and re.search(r"error: .+c\.json:\d+:\d+: .*not supported: metadata_fallback_policy "
                                           r"FALLBACK_LIST", r.stderr), r.stderr
    r = validate({"subset": {"allow_redundant_keys": True}})
    assert r.returncode == 1 and "not supported" in r.stderr and "allow_redundant_keys" in r.stderr, r.stderr
    r = validate({}, {"metadata_match": {"filter_metadata": {"envoy.lb": ["1"]}}})
    assert r.returncode == 1 and "must be a mapping" in r.stderr, r.stderr
    r = validate({}, {"metadata_match": {"typed_filter_metadata": {}}})
    assert r.returncode == 1 and "not supported" in r.stderr, r.stderr
    r = validate({}, {"metadata_match": {"filter_metadata": {"envoy.lb": {"v": "1"}, "other": {"x": 1}}}})
    assert r.returncode == 0, r.stderr
