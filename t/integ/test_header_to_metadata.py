"""envoy.filters.http.header_to_metadata with the real herald and a backend
that echoes what it received: headers and cookies into dynamic metadata
(seen through the access log's %DYNAMIC_METADATA%), its value options
(fixed values, regex_value_rewrite, BASE64, NUMBER, PROTOBUF_VALUE), remove,
response rules, per-route configs, the 8 KiB limit, its stats and its config
errors; and a NUMBER value choosing a subset whose hosts have a numeric
version."""

import base64
import json
import re
import struct

import helpers
import http_backends as hb
from conftest import PLUGIN_DIR, run_herald, scan_log
from http_backends import HttpBackend, get_json, hcm, http_listener, request, sock_addr

H2M_TYPE = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
NS = "envoy.filters.http.header_to_metadata"
FIELDS = ["%s:%s" % (ns, k) for ns, k in ((NS, "ver"), ("app", "user"), ("app", "num"), ("app", "pb"),
                                            ("app", "flag"), ("app", "b64"), ("app", "resp"), ("app", "long"),
                                            ("app", "route"))]
LOG_FMT = "|".join("%%DYNAMIC_METADATA(%s)%%" % f for f in FIELDS) + "\n"


def h2m(request_rules=(), response_rules=(), **extra):
    cfg = {"@type": H2M_TYPE, "request_rules": list(request_rules), "response_rules": list(response_rules)}
    cfg.update(extra)
    return {"name": "envoy.filters.http.header_to_metadata", "typed_config": cfg}


def kv(key, ns="app", **extra):
    d = {"metadata_namespace": ns, "key": key}
    d.update(extra)
    return d


RULES = [
    # the default namespace; the value rewritten by regex (v1.2-beta -> 1.2)
    {"header": "x-ver", "on_header_present": {"key": "ver", "regex_value_rewrite": {
        "pattern": {"regex": "^v(\\d+\\.\\d+).*$"}, "substitution": "\\1"}}},
    # a cookie; missing: a fixed value
    {"cookie": "user", "on_header_present": kv("user"), "on_header_missing": kv("user", value="anonymous")},
    {"header": "x-num", "on_header_present": kv("num", type="NUMBER"), "remove": True},
    {"header": "x-pb", "on_header_present": kv("pb", type="PROTOBUF_VALUE", encode="BASE64")},
    # present: a fixed value instead of the header's
    {"header": "x-flag", "on_header_present": kv("flag", value="on")},
    {"header": "x-b64", "on_header_present": kv("b64", encode="BASE64")},
    {"header": "x-long", "on_header_present": kv("long")},
]


def start(herald, upstreams, port, tmp_path, routes=None, rules=RULES, response_rules=(), clusters=None, **extra):
    b = upstreams(HttpBackend, "b")
    lp = port()
    routes = routes or [hb.route("/", "backend")]
    f = h2m(rules, response_rules, **extra)
    cfg = {"static_resources": {
        "listeners": [http_listener(lp, hcm("ingress", routes, [f], access_log=[
            hb.file_access_log(str(tmp_path / "access.log"), LOG_FMT)]))],
        "clusters": clusters or [hb.http_cluster("backend", [b.port])]}}
    return herald(cfg), lp


def logged(tmp_path, n):
    """The n-th access log line (1-based) as {field: value or None}."""
    lines = helpers.wait_lines(str(tmp_path / "access.log"), n)
    assert len(lines) >= n, lines
    return {f: (None if v == "-" else v) for f, v in zip(FIELDS, lines[n - 1].split("|"))}


def pb_string(s):
    raw = b"\x1a" + bytes([len(s)]) + s.encode()
    return base64.b64encode(raw).decode()


def pb_number(d):
    return base64.b64encode(b"\x11" + struct.pack("<d", d)).decode()


def test_rules_values_and_stats(herald, upstreams, port, tmp_path):
    h, lp = start(herald, upstreams, port, tmp_path, stat_prefix="h2m")
    status, _, echo = get_json(lp, "/", headers={
        "x-ver": "v1.2-beta", "cookie": "a=1; user=\"alice\"; b=2", "x-num": " 42.50 ", "x-pb": pb_string("hi"),
        "x-flag": "whatever", "x-b64": base64.b64encode(b"ok!!").decode().rstrip("=")})
    assert status == 200
    m = logged(tmp_path, 1)
    assert m[NS + ":ver"] == "1.2", m                # regex_value_rewrite
    assert m["app:user"] == "alice", m               # the cookie, without quotes
    assert m["app:num"] == "42.5", m                 # NUMBER (trimmed)
    assert m["app:pb"] == "hi", m                    # PROTOBUF_VALUE string, base64
    assert m["app:flag"] == "on", m                  # the fixed value wins over the header's
    assert m["app:b64"] == "ok!!", m                 # base64 without its padding
    sent = {k for k, _ in echo["headers"]}
    assert "x-num" not in sent and "x-ver" in sent   # remove: only where asked

    # nothing present: only the missing rule's fixed value
    assert request(lp, "/")[0] == 200
    m = logged(tmp_path, 2)
    assert m["app:user"] == "anonymous" and m[NS + ":ver"] is None and m["app:num"] is None, m

    # values that are not added: not a number, bad base64, a protobuf struct, 8 KiB or more,
    # an empty cookie
    assert request(lp, "/", headers={"x-num": "12abc", "x-b64": "***", "x-pb": base64.b64encode(b"\x2a\x00").decode(),
                                      "x-long": "x" * 8192, "cookie": "user=", "x-ver": "v"})[0] == 200
    m = logged(tmp_path, 3)
    assert all(m[f] is None for f in ("app:num", "app:b64", "app:pb", "app:long")), m
    assert m[NS + ":ver"] == "v", m                  # the regex did not match: the value as it is
    assert m["app:user"] == "anonymous", m           # an empty cookie counts as missing
    assert request(lp, "/", headers={"x-long": "x" * 8191, "x-pb": pb_number(2.5)})[0] == 200
    m = logged(tmp_path, 4)
    assert m["app:long"] == "x" * 8191 and m["app:pb"] == "2.5", m

    st = h.stats()
    p = "http_filter_name.h2m."
    assert st[p + "request_rules_processed"] == 4 * len(RULES)
    assert st[p + "request_metadata_added"] == 6 + 1 + 2 + 3
    assert st[p + "request_header_not_found"] == 3   # the cookie rule, the only one with on_header_missing
    assert (st[p + "base64_decode_failed"], st[p + "header_value_too_long"],
            st[p + "regex_substitution_failed"]) == (1, 1, 0)
    assert st[p + "response_rules_processed"] == 0


def test_response_rules_and_per_route_config(herald, upstreams, port, tmp_path):
    gone = {"header": "x-gone", "on_header_present": kv("gone", regex_value_rewrite={
        "pattern": {"regex": ".*"}, "substitution": ""})}
    per_route = {"envoy.filters.http.header_to_metadata": {
        "@type": H2M_TYPE, "request_rules": [{"header": "x-ver", "on_header_present": kv("route")}, gone],
        "stat_prefix": "perroute"}}
    routes = [dict(hb.route("/special", "backend"), typed_per_filter_config=per_route), hb.route("/", "backend")]
    resp = [{"header": "x-resp", "on_header_present": kv("resp"), "remove": True}]
    h, lp = start(herald, upstreams, port, tmp_path, routes=routes, response_rules=resp)
    status, headers, _ = request(lp, "/?hdr=x-resp:from-upstream", headers={"x-ver": "v1.0"})
    assert status == 200 and "x-resp" not in headers   # removed from the response
    m = logged(tmp_path, 1)
    assert m["app:resp"] == "from-upstream" and m[NS + ":ver"] == "1.0" and m["app:route"] is None, m
    # the route's config replaces the filter's: its rule only, no response rules
    status, headers, _ = request(lp, "/special?hdr=x-resp:x", headers={"x-ver": "v1.0", "x-gone": "abc"})
    assert status == 200 and headers.get("x-resp") == "x"
    m = logged(tmp_path, 2)
    assert m["app:route"] == "v1.0" and m[NS + ":ver"] is None and m["app:resp"] is None, m
    # the route's config counts under its own stat_prefix; the filter's has none, so no stats
    st = {k: v for k, v in h.stats().items() if k.startswith("http_filter_name.")}
    assert st == {"http_filter_name.perroute." + k: v for k, v in (
        ("request_rules_processed", 2), ("response_rules_processed", 0), ("request_metadata_added", 1),
        ("response_metadata_added", 0), ("request_header_not_found", 0), ("response_header_not_found", 0),
        ("base64_decode_failed", 0), ("header_value_too_long", 0), ("regex_substitution_failed", 1))}, st


def test_number_selects_numeric_subset(herald, upstreams, port, tmp_path):
    """A NUMBER value matches endpoint metadata written as a number (as in
    Envoy, where the string "2" would not)."""
    one, two = upstreams(HttpBackend, "one"), upstreams(HttpBackend, "two")
    eps = [{"endpoint": {"address": sock_addr(s.port)}, "metadata": {"filter_metadata": {"envoy.lb": {"version": v}}}}
           for s, v in ((one, 1), (two, 2))]
    cl = {"name": "num", "type": "STATIC", "connect_timeout": "1s",
          "lb_subset_config": {"subset_selectors": [{"keys": ["version"]}]},
          "load_assignment": {"cluster_name": "num", "endpoints": [{"lb_endpoints": eps}]}}
    rules = [{"header": "x-version", "on_header_present": kv("version", ns="envoy.lb", type="NUMBER")},
             {"header": "x-sversion", "on_header_present": kv("version", ns="envoy.lb")}]
    h, lp = start(herald, upstreams, port, tmp_path, routes=[hb.route("/", "num")], rules=rules, clusters=[cl])
    for v, name in (("2.0", "two"), ("1", "one"), ("2", "two")):
        status, headers, _ = request(lp, "/", headers={"x-version": v})
        assert status == 200 and headers.get("x-backend") == name, (v, status, headers)
    status, _, _ = request(lp, "/", headers={"x-sversion": "2"})
    assert status == 503                              # the string "2": no subset, NO_FALLBACK
    assert h.stat("cluster.num.lb_subsets_selected") == 3


def test_config_errors(tmp_path):
    def validate(rule, per_route=None):
        r = hb.route("/", "c")
        if per_route is not None:
            r["typed_per_filter_config"] = {"envoy.filters.http.header_to_metadata": dict(per_route, **{"@type": H2M_TYPE})}
        cfg = {"static_resources": {"listeners": [http_listener(1, hcm("x", [r], [h2m([rule] if rule else [])]))],
                                    "clusters": [hb.http_cluster("c", [1])]}}
        p = tmp_path / "h2m.json"
        p.write_text(json.dumps(cfg))
        res = run_herald(["--mode", "validate", "-c", str(p), "--plugin-dir", PLUGIN_DIR])
        assert not scan_log(res.stderr), res.stderr
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        return res.returncode, errors

    ok = {"header": "x", "on_header_present": kv("k")}
    assert validate(ok) == (0, [])
    assert validate(None) == (0, [])                      # an empty filter config is allowed
    for rule, want in (({"header": "x", "cookie": "y", "on_header_present": kv("k")}, "header"),
                       ({"on_header_present": kv("k")}, "a rule needs a header or a cookie"),
                       ({"header": "x"}, "needs on_header_present or on_header_missing"),
                       ({"cookie": "c", "remove": True, "on_header_present": kv("k")}, "remove cannot be used with a cookie"),
                       ({"header": "x", "on_header_missing": kv("k")}, "on_header_missing needs a non-empty value"),
                       ({"header": "x", "on_header_present": kv("k", value="v", regex_value_rewrite={
                           "pattern": {"regex": "a"}, "substitution": "b"})}, "cannot both be set"),
                       ({"header": "x", "on_header_present": kv("")}, "non-empty key"),
                       ({"header": "x", "on_header_present": kv("k", type="JSON")}, "unknown value 'JSON'"),
                       ({"header": "x", "on_header_present": kv("k", regex_value_rewrite={
                           "pattern": {"regex": "("}, "substitution": ""})}, "invalid regex")):
        rc, errors = validate(rule)
        assert rc == 1 and errors and want in errors[0], (rule, errors)
        assert re.match(r"error: \S+h2m\.json:\d+:\d+: ", errors[0]), errors
    rc, errors = validate(ok, per_route={})
    assert rc == 1 and "needs request_rules or response_rules" in errors[0], errors
