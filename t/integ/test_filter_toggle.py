"""Filters switched on and off per route, as Envoy's route-based filter
chain: http_filters[].disabled makes a filter off by default,
typed_per_filter_config turns it on for a route (any entry, or a
FilterConfig with disabled: false) or off (FilterConfig disabled: true), and
the most specific level (route, virtual host, route configuration) decides.
Asserted on what the backend received, what the client got and the filters'
own stats."""

import json
import re

import conftest
import http_backends as hb
from http_backends import HttpBackend

FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
FAULT = "envoy.filters.http.fault"
RBAC = "envoy.filters.http.rbac"


def pct(n):
    return {"numerator": n, "denominator": "HUNDRED"}


def switch(disabled):
    return {"@type": FILTER_CONFIG, "disabled": disabled}


def with_filters(r, **pfc):
    r["typed_per_filter_config"] = {k.replace("_", "."): v for k, v in pfc.items()}
    return r


def fault_filter(disabled):
    f = {"name": FAULT, "typed_config": {"@type": FAULT_TYPE,
                                          "abort": {"http_status": 418, "percentage": pct(100)}}}
    if disabled:
        f["disabled"] = True
    return f


def test_filters_switched_per_route(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    rbac = hb.rbac_deny_prefix("/")           # would deny everything where it runs
    routes = [
        # rbac is off for the whole virtual host; this route turns it back on
        with_filters(hb.route("/locked", "backend"), envoy_filters_http_rbac=switch(False)),
        # the fault filter is off by default: three ways to turn it on
        with_filters(hb.route("/chaos-switch", "backend"), envoy_filters_http_fault=switch(False)),
        with_filters(hb.route("/chaos-own", "backend"), envoy_filters_http_fault={
            "@type": FAULT_TYPE, "abort": {"http_status": 502, "percentage": pct(100)}}),
        with_filters(hb.route("/chaos-empty", "backend"), envoy_filters_http_fault={
            "@type": FILTER_CONFIG, "config": {"@type": "type.googleapis.com/google.protobuf.Empty"}}),
        # an explicit off for a filter that is off anyway changes nothing
        with_filters(hb.route("/calm", "backend"), envoy_filters_http_fault=switch(True)),
        hb.route("/", "backend"),
    ]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes,
                           http_filters=[fault_filter(disabled=True), rbac],
                           vhost_extra={"typed_per_filter_config": {RBAC: switch(True)}})
    got = {p: hb.request(lp, p)[0] for p in
           ["/", "/calm", "/locked", "/chaos-switch", "/chaos-own", "/chaos-empty", "/other"]}
    assert got == {"/": 200, "/calm": 200, "/locked": 403, "/chaos-switch": 418, "/chaos-own": 502,
                   "/chaos-empty": 418, "/other": 200}, got
    # only what was let through reached the backend
    assert sorted(r["path"] for r in b.requests) == ["/", "/calm", "/other"]
    assert h.wait_stat("http.ingress_http.rbac.denied", lambda v: v >= 1) == 1
    assert h.wait_stat("http.ingress_http.fault.aborts_injected", lambda v: v >= 3) == 3
    # HTTP/2 streams take the same decision (one curl per URL: Debian's curl
    # 7.88 fails to reuse a prior-knowledge connection, against nginx too)
    for path, want in (("/chaos-switch", "418"), ("/", "200")):
        r = hb.curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
                    "http://127.0.0.1:%d%s" % (lp, path))
        assert r.stdout == want, (path, r.stdout, r.stderr)


def test_route_config_level_and_most_specific_wins(herald, upstreams, port):
    """Off for the whole route configuration, on again for one virtual host
    route: the route's own entry is the one that counts."""
    b = upstreams(HttpBackend, "b")
    routes = [with_filters(hb.route("/guarded", "backend"), envoy_filters_http_rbac=switch(False)),
              hb.route("/", "backend")]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes, http_filters=[hb.rbac_deny_prefix("/")],
                           route_config_extra={"typed_per_filter_config": {RBAC: switch(True)}})
    assert hb.request(lp, "/open")[0] == 200
    assert hb.request(lp, "/guarded/x")[0] == 403
    assert [r["path"] for r in b.requests] == ["/open"]


def validate(tmp_path, routes, filters, **vhost):
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(1, hb.hcm("x", routes, filters, vhost_extra=vhost or None))],
        "clusters": [hb.http_cluster("backend", [1])]}}
    path = tmp_path / "toggle.json"
    path.write_text(json.dumps(cfg))
    return conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])


def test_filter_switch_config_errors(tmp_path):
    cases = [
        ({"@type": FILTER_CONFIG, "disabled": "yes"}, r"disabled must be true or false"),
        ({"@type": FILTER_CONFIG}, r"FilterConfig needs config \(or disabled\)"),
        ({"@type": FILTER_CONFIG, "disabled": False, "enabled": True}, r"unknown field 'enabled'"),
    ]
    for value, want in cases:
        r0 = with_filters(hb.route("/", "backend"), envoy_filters_http_fault=value)
        r = validate(tmp_path, [r0], [fault_filter(disabled=True)])
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*toggle.json:\d+:\d+: .*" + want, r.stderr), (want, r.stderr)
    # a switch for a filter the connection manager does not have
    r0 = with_filters(hb.route("/", "backend"), envoy_filters_http_cors=switch(False))
    r = validate(tmp_path, [r0], [fault_filter(disabled=True)])
    assert r.returncode == 1 and "no http_filters entry" in r.stderr, r.stderr
    # the router cannot be disabled
    router = hb.router_filter()
    router["disabled"] = True
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "backend")]))],
        "clusters": [hb.http_cluster("backend", [1])]}}
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"] = [router]
    path = tmp_path / "router.json"
    path.write_text(json.dumps(cfg))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
    assert r.returncode == 1 and "cannot be disabled" in r.stderr, r.stderr
    # a disabled filter that is off everywhere is still a valid config
    r = validate(tmp_path, [hb.route("/", "backend")], [fault_filter(disabled=True)])
    assert r.returncode == 0, r.stderr


def test_per_route_config_of_the_wrong_type(tmp_path):
    """A per-route config's @type must name the filter's per-route message
    (compared by message name, so v2 and v3 spellings pass): an RBAC where an
    RBACPerRoute belongs is an error at its @type, also inside FilterConfig."""
    rbac_filter = {"name": RBAC, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}
    wrong = {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}
    for value in (wrong, {"@type": FILTER_CONFIG, "config": wrong}):
        r0 = with_filters(hb.route("/", "backend"), envoy_filters_http_rbac=value)
        r = validate(tmp_path, [r0], [rbac_filter])
        assert r.returncode == 1, r.stderr
        assert re.search(r"error: .*toggle.json:\d+:\d+: .*typed_per_filter_config.*@type: wrong @type for this "
                         r"filter's per-route configuration: envoy.extensions.filters.http.rbac.v3.RBAC \(expected "
                         r"envoy.extensions.filters.http.rbac.v3.RBACPerRoute\)", r.stderr), r.stderr
    # the v2 spelling of fault's message is the same message
    v2 = {"@type": "type.googleapis.com/envoy.config.filter.http.fault.v2.HTTPFault",
          "abort": {"http_status": 503, "percentage": pct(100)}}
    r0 = with_filters(hb.route("/", "backend"), envoy_filters_http_fault=v2)
    r = validate(tmp_path, [r0], [fault_filter(disabled=False)])
    assert r.returncode == 0, r.stderr
