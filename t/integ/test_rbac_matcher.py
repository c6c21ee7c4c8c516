"""RBAC beyond permissions and principals: the unified matcher API
(`matcher` / `shadow_matcher`, xds.type.matcher.v3.Matcher) in the HTTP and
the network filter (Envoy's own example, a DENY on a bad referer; matcher
trees with nested matchers, query parameters, source addresses through the
Ip custom matcher, shadow and LOG actions) and policy conditions in CEL
(Envoy's docs example; headers, methods, paths, addresses): what the backend
got, what the client saw, the stats, and the config errors."""

import json
import os
import socket

import pytest

import conftest
import helpers
import http_backends as hb
from helpers import wait_lines
from http_backends import HttpBackend

RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
NET_RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
ACTION_TYPE = "type.googleapis.com/envoy.config.rbac.v3.Action"
HEADER_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
QUERY_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestQueryParamMatchInput"
NET_INPUT = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3."
IP_MATCHER = "type.googleapis.com/envoy.extensions.matching.input_matchers.ip.v3.Ip"
SHARED = os.path.join(conftest.SRCDIR, "..", "shared", "conformance", "envoy-configs")


def action(name, verdict):
    return {"action": {"name": "action", "typed_config": {"@type": ACTION_TYPE, "name": name, "action": verdict}}}


def header_input(name):
    return {"name": "h", "typed_config": {"@type": HEADER_INPUT, "header_name": name}}


def net_input(kind):
    return {"name": kind, "typed_config": {"@type": NET_INPUT + kind}}


def single(inp, **value_match):
    return {"single_predicate": {"input": inp, "value_match": value_match}}


def http_rbac(**cfg):
    c = {"@type": RBAC_TYPE}
    c.update(cfg)
    return {"name": "envoy.filters.http.rbac", "typed_config": c}


def start(herald, upstreams, port, rbac, log_fmt=None, tmp_path=None, **hcm_extra):
    b = upstreams(HttpBackend, "b")
    if log_fmt:
        hcm_extra["access_log"] = [hb.file_access_log(str(tmp_path / "access.log"), log_fmt)]
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[rbac], **hcm_extra)
    return h, lp, b


# ------------------------------------------------------------------ HTTP


def test_envoy_example_referer_matcher(herald, upstreams, port, tmp_path):
    """examples/rbac's matcher: not(referer ~ envoyproxy.io/docs) -> DENY
    "illegal-referer", on_no_match ALLOW "all-pass". A request without a
    referer has no value to match, so the not_matcher holds: denied, as in
    Envoy."""
    rbac = http_rbac(matcher={
        "matcher_list": {"matchers": [{
            "predicate": {"not_matcher": single(header_input("referer"),
                                                safe_regex={"regex": "https?://(www.)?envoyproxy.io/docs/envoy.*"})},
            "on_match": action("illegal-referer", "DENY")}]},
        "on_no_match": action("all-pass", "ALLOW")})
    h, lp, b = start(herald, upstreams, port, rbac, "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n",
                     tmp_path)
    good = {"Referer": "https://www.envoyproxy.io/docs/envoy/latest/"}
    assert hb.request(lp, "/a", headers=good)[0] == 200
    assert hb.request(lp, "/b", headers={"Referer": "https://evil.example/docs/envoy"})[0] == 403
    assert hb.request(lp, "/c")[0] == 403
    # two Referer headers are matched joined with "," (Envoy's rule): the regex must cover both
    assert hb.raw(lp, b"GET /d HTTP/1.1\r\nHost: x\r\nReferer: http://envoyproxy.io/docs/envoy\r\n"
                      b"Referer: http://evil.example\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert b.served() == 2, "a denied request reached the backend"
    lines = wait_lines(str(tmp_path / "access.log"), 4)
    assert "/b 403 rbac_access_denied_matched_policy[illegal-referer]" in lines, lines
    assert "/c 403 rbac_access_denied_matched_policy[illegal-referer]" in lines, lines
    assert h.wait_stat("http.ingress_http.rbac.denied", lambda v: v >= 2) == 2
    assert h.stat("http.ingress_http.rbac.allowed") == 2


def test_matcher_tree_prefix_map_and_nested_matcher(herald, upstreams, port):
    """A prefix_match_map on :path (the longest prefix first); /api leads to a
    nested matcher_list (x-key must be right, or x-role must start with
    "ops" and the query have debug=1); when the nested matcher finds nothing,
    the outer on_no_match decides."""
    nested = {"matcher_list": {"matchers": [
        {"predicate": single(header_input("x-key"), exact="s3cret"), "on_match": action("api-key", "ALLOW")},
        {"predicate": {"and_matcher": {"predicate": [
            single(header_input("x-role"), prefix="ops", ignore_case=True),
            single({"name": "q", "typed_config": {"@type": QUERY_INPUT, "query_param": "debug"}}, exact="1")]}},
         "on_match": action("ops-debug", "ALLOW")}]}}
    rbac = http_rbac(matcher={
        "matcher_tree": {"input": header_input(":path"), "prefix_match_map": {"map": {
            "/admin": action("admin", "DENY"),
            "/admin/public": action("admin-public", "ALLOW"),
            "/api": {"matcher": nested},
            "/open": action("open", "ALLOW")}}},
        "on_no_match": action("default-deny", "DENY")})
    h, lp, b = start(herald, upstreams, port, rbac)
    cases = [
        ("/admin/x", {}, 403), ("/admin/public/y", {}, 200), ("/administrator", {}, 403),
        ("/api/v1", {}, 403), ("/api/v1", {"x-key": "s3cret"}, 200), ("/api/v1", {"x-key": "S3CRET"}, 403),
        ("/api/v1?debug=1", {"x-role": "OPS-team"}, 200), ("/api/v1?debug=0", {"x-role": "ops"}, 403),
        ("/api/v1?x=2&debug=%31", {"x-role": "ops"}, 200), ("/api/v1?debug=1", {"x-role": "dev"}, 403),
        ("/open", {}, 200), ("/other", {}, 403), ("/", {}, 403),
    ]
    got = [(p, hd, hb.request(lp, p, headers=hd)[0]) for p, hd, _ in cases]
    assert got == cases
    assert b.served() == sum(1 for c in cases if c[2] == 200)
    denied = sum(1 for c in cases if c[2] == 403)
    assert h.wait_stat("http.ingress_http.rbac.denied", lambda v: v >= denied) == denied


def test_exact_map_on_method_and_source_ip_custom_match(herald, upstreams, port):
    """An exact_match_map on :method, and the Ip custom matcher on the
    client's address: 127.0.0.2 is refused writes, every other client may."""
    writers = {"matcher_list": {"matchers": [{
        "predicate": {"single_predicate": {
            "input": net_input("SourceIPInput"),
            "custom_match": {"name": "ip", "typed_config": {
                "@type": IP_MATCHER, "stat_prefix": "writers",
                "cidr_ranges": [{"address_prefix": "127.0.0.2", "prefix_len": 32}]}}}},
        "on_match": action("no-writes-from-2", "DENY")}]},
        "on_no_match": action("writer", "ALLOW")}
    rbac = http_rbac(matcher={
        "matcher_tree": {"input": header_input(":method"), "exact_match_map": {"map": {
            "GET": action("read", "ALLOW"), "HEAD": action("read", "ALLOW"),
            "POST": {"matcher": writers}, "PUT": {"matcher": writers}}}}})
    h, lp, b = start(herald, upstreams, port, rbac)

    def send(method, src):
        s = socket.create_connection(("127.0.0.1", lp), timeout=5, source_address=(src, 0))
        try:
            s.sendall(("%s /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                       % method).encode())
            data = helpers.recv_until_eof(s)
        finally:
            s.close()
        return int(data.split(b" ", 2)[1])

    got = {(m, src): send(m, src) for m in ("GET", "POST", "PUT", "DELETE") for src in ("127.0.0.1", "127.0.0.2")}
    assert got == {("GET", "127.0.0.1"): 200, ("GET", "127.0.0.2"): 200,
                   ("POST", "127.0.0.1"): 200, ("POST", "127.0.0.2"): 403,
                   ("PUT", "127.0.0.1"): 200, ("PUT", "127.0.0.2"): 403,
                   # no key and no on_no_match: nothing matched, and the matcher engine denies
                   ("DELETE", "127.0.0.1"): 403, ("DELETE", "127.0.0.2"): 403}
    assert b.served() == 4


def test_shadow_matcher_and_log_action(herald, upstreams, port, tmp_path):
    """shadow_matcher: counted and published in dynamic metadata, never
    enforced. A LOG action allows and sets envoy.common access_log_hint (and
    every decision of a tree with a LOG action sets it)."""
    shadow = {"matcher_list": {"matchers": [{"predicate": single(header_input(":path"), prefix="/secret"),
                                             "on_match": action("shadow-secret", "DENY")}]},
              "on_no_match": action("shadow-ok", "ALLOW")}
    enforced = {"matcher_list": {"matchers": [{"predicate": single(header_input("x-audit"), exact="yes"),
                                               "on_match": action("audited", "LOG")}]},
                "on_no_match": action("plain", "ALLOW")}
    fmt = ("%REQ(:PATH)% %RESPONSE_CODE% %DYNAMIC_METADATA(envoy.filters.http.rbac:shadow_engine_result)% "
           "%DYNAMIC_METADATA(envoy.filters.http.rbac:shadow_effective_policy_id)% "
           "%DYNAMIC_METADATA(envoy.common:access_log_hint)%\n")
    h, lp, b = start(herald, upstreams, port, http_rbac(matcher=enforced, shadow_matcher=shadow), fmt, tmp_path)
    assert hb.request(lp, "/secret/x")[0] == 200
    assert hb.request(lp, "/pub", headers={"x-audit": "yes"})[0] == 200
    assert b.served() == 2
    lines = wait_lines(str(tmp_path / "access.log"), 2)
    assert lines[0] == "/secret/x 200 denied shadow-secret false", lines
    assert lines[1] == "/pub 200 allowed shadow-ok true", lines
    st = h.stats()
    assert st.get("http.ingress_http.rbac.shadow_denied") == 1 and st.get("http.ingress_http.rbac.shadow_allowed") == 1
    assert st.get("http.ingress_http.rbac.logged") == 1 and st.get("http.ingress_http.rbac.not_logged") == 1
    assert st.get("http.ingress_http.rbac.allowed") == 2


# ------------------------------------------------------------------ network


def test_network_matcher_by_destination_port_and_source(herald, upstreams, port):
    """The network filter with a matcher: one listener port allowed for
    everyone, the other only for 127.0.0.1; a denied connection is closed
    on its first bytes, which never come back echoed."""
    echo = upstreams(helpers.EchoServer)
    p_open, p_closed = port(), port()
    m = {"matcher_list": {"matchers": [
        {"predicate": single(net_input("DestinationPortInput"), exact=str(p_open)), "on_match": action("open", "ALLOW")},
        {"predicate": {"and_matcher": {"predicate": [
            single(net_input("DestinationPortInput"), exact=str(p_closed)),
            single(net_input("SourceIPInput"), exact="127.0.0.1")]}}, "on_match": action("local-only", "ALLOW")},
    ]}}

    def listener(p):
        return helpers.tcp_listener(p, "echo", stat_prefix="t%d" % p, before=[{
            "name": "envoy.filters.network.rbac",
            "typed_config": {"@type": NET_RBAC_TYPE, "stat_prefix": "netm", "matcher": m}}])
    h = herald(helpers.bootstrap([listener(p_open), listener(p_closed)], [helpers.cluster("echo", [("127.0.0.1", echo.port)])]))

    def roundtrip(p, src):
        s = socket.create_connection(("127.0.0.1", p), timeout=5, source_address=(src, 0))
        try:
            s.sendall(b"ping\n")
            return s.recv(64)
        except OSError:   # reset by the denying proxy
            return b""
        finally:
            s.close()
    assert roundtrip(p_open, "127.0.0.2") == b"ping\n"
    assert roundtrip(p_closed, "127.0.0.1") == b"ping\n"
    assert roundtrip(p_closed, "127.0.0.2") == b""
    assert h.wait_stat("netm.rbac.denied", lambda v: v >= 1) == 1
    assert h.stat("netm.rbac.allowed") == 2


# ------------------------------------------------------------------ config


def test_examples_rbac_config_validates():
    path = os.path.join(SHARED, "examples-rbac-envoy.yaml")
    if not os.path.exists(path):
        pytest.skip("no shared conformance configs here")
    r = conftest.run_herald(["--mode", "validate", "-c", path, "--plugin-dir", conftest.PLUGIN_DIR])
    assert r.returncode == 0, r.stderr


BAD = [
    # an HTTP input in the network filter
    ("network", {"matcher_list": {"matchers": [{"predicate": single(header_input("x")), "on_match": action("a", "ALLOW")}]}},
     "is an HTTP input: only the HTTP RBAC filter has requests"),
    ("http", {"matcher_list": {"matchers": [{"predicate": single(
        {"name": "x", "typed_config": {"@type": "type.googleapis.com/foo.Bar"}}, exact="1"),
        "on_match": action("a", "ALLOW")}]}}, 'unknown input "foo.Bar"'),
    ("http", {"matcher_list": {"matchers": [{"predicate": single(net_input("ApplicationProtocolInput"), exact="h2"),
                                             "on_match": action("a", "ALLOW")}]}},
     "is not supported by herald's RBAC"),
    ("http", {"matcher_list": {"matchers": [{"predicate": single(header_input("x"), exact="1"),
                                             "on_match": {"action": {"name": "a", "typed_config": {
                                                 "@type": "type.googleapis.com/envoy.config.rbac.v3.RBAC"}}}}]}},
     "an RBAC matcher's actions are envoy.config.rbac.v3.Action"),
    ("http", {"matcher_list": {"matchers": [{"predicate": {"and_matcher": {"predicate": [
        single(header_input("x"), exact="1")]}}, "on_match": action("a", "ALLOW")}]}},
     "need at least two predicates"),
    ("http", {"matcher_list": {"matchers": [{"predicate": single(header_input("x"), exact="1"),
                                             "on_match": {"action": {"name": "a", "typed_config": {
                                                 "@type": ACTION_TYPE, "name": "a", "action": "MAYBE"}}}}]}},
     "action must be ALLOW, DENY or LOG, not 'MAYBE'"),
    ("http", {"matcher_list": {"matchers": [{"predicate": single(
        {"name": "h", "typed_config": {"@type": HEADER_INPUT, "header_name": "x", "extra": 1}}, exact="1"),
        "on_match": action("a", "ALLOW")}]}}, "unknown field 'extra'"),
]


@pytest.mark.parametrize("kind,matcher,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_matcher_configs_are_refused(tmp_path, kind, matcher, message):
    if kind == "http":
        listener = hb.http_listener(18999, hb.hcm("x", [hb.route("/", "c")], [http_rbac(matcher=matcher)]))
    else:
        listener = helpers.tcp_listener(18999, "c", before=[{"name": "envoy.filters.network.rbac", "typed_config": {
            "@type": NET_RBAC_TYPE, "stat_prefix": "n", "matcher": matcher}}])
    cfg = helpers.bootstrap([listener], [helpers.cluster("c", [("127.0.0.1", 1)])])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg, indent=1))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
    assert r.returncode != 0, "accepted:\n" + r.stderr
    assert message in r.stderr, r.stderr
    # every error names the place: file:line:col and the field path
    line = next(l for l in r.stderr.splitlines() if message in l)
    assert line.startswith("error: %s:" % path) and ".matcher." in line, line


# ------------------------------------------------------------------ CEL conditions


def ident(name):
    return {"ident_expr": {"name": name}}


def attr(top, field):
    return {"select_expr": {"operand": ident(top), "field": field}}


def const(v):
    if isinstance(v, bool):
        return {"const_expr": {"bool_value": v}}
    if isinstance(v, int):
        return {"const_expr": {"int64_value": str(v)}}
    return {"const_expr": {"string_value": v}}


def call(fn, *args, target=None):
    c = {"function": fn, "args": list(args)}
    if target is not None:
        c["target"] = target
    return {"call_expr": c}


def headers_get(name):
    return call("_[_]", attr("request", "headers"), const(name))


def policy_with(condition):
    return {"permissions": [{"any": True}], "principals": [{"any": True}], "condition": condition}


def test_envoy_docs_condition_example_validates():
    path = os.path.join(SHARED, "docs-intro-arch_overview-security-rbac-http.yaml")
    if not os.path.exists(path):
        pytest.skip("no shared conformance configs here")
    r = conftest.run_herald(["--mode", "validate", "-c", path, "--plugin-dir", conftest.PLUGIN_DIR])
    assert r.returncode == 0, r.stderr


def test_http_conditions(herald, upstreams, port):
    """ALLOW policies whose permissions and principals are `any`, decided by
    their conditions: "admin" = request.path.startsWith('/admin/') &&
    request.headers['x-token'] == 'ok'; "reads" = request.method in ['GET',
    'HEAD'] && !request.url_path.matches('^/(admin|private)') &&
    has(request.headers.x-user). A missing x-token makes "admin" an error,
    which never matches."""
    admin = call("_&&_", call("startsWith", const("/admin/"), target=attr("request", "path")),
                 call("_==_", headers_get("x-token"), const("ok")))
    reads = call("_&&_",
                 call("_&&_", call("@in", attr("request", "method"), {"list_expr": {"elements": [const("GET"),
                                                                                                  const("HEAD")]}}),
                      call("!_", call("matches", const("^/(admin|private)"), target=attr("request", "url_path")))),
                 {"select_expr": {"operand": attr("request", "headers"), "field": "x-user", "test_only": True}})
    rbac = http_rbac(rules={"action": "ALLOW", "policies": {"admin": policy_with(admin),
                                                            "reads": policy_with(reads)}})
    h, lp, b = start(herald, upstreams, port, rbac)
    cases = [
        ("GET", "/admin/x", {"x-token": "ok"}, 200), ("POST", "/admin/x", {"x-token": "ok"}, 200),
        ("GET", "/admin/x", {"x-token": "no"}, 403), ("GET", "/admin/x", {"x-user": "u"}, 403),
        ("GET", "/pub?a=1", {"x-user": "u"}, 200), ("HEAD", "/pub", {"x-user": "u"}, 200),
        ("GET", "/pub", {}, 403), ("POST", "/pub", {"x-user": "u"}, 403), ("GET", "/private/y", {"x-user": "u"}, 403),
    ]
    got = [(m, p, hd, hb.request(lp, p, method=m, headers=hd)[0]) for m, p, hd, _ in cases]
    assert got == cases
    assert b.served() == 4
    assert h.wait_stat("http.ingress_http.rbac.denied", lambda v: v >= 5) == 5


def test_network_condition_on_addresses(herald, upstreams, port):
    """The network filter: a DENY policy whose condition is
    source.address.startsWith('127.0.0.2:') && int(string(destination.port)) == <port>."""
    echo = upstreams(helpers.EchoServer)
    lp = port()
    cond = call("_&&_", call("startsWith", const("127.0.0.2:"), target=attr("source", "address")),
                call("_==_", call("int", call("string", attr("destination", "port"))), const(lp)))
    h = herald(helpers.bootstrap([helpers.tcp_listener(lp, "echo", before=[{
        "name": "envoy.filters.network.rbac", "typed_config": {
            "@type": NET_RBAC_TYPE, "stat_prefix": "netc",
            "rules": {"action": "DENY", "policies": {"from-2": policy_with(cond)}}}}])],
        [helpers.cluster("echo", [("127.0.0.1", echo.port)])]))

    def roundtrip(src):
        s = socket.create_connection(("127.0.0.1", lp), timeout=5, source_address=(src, 0))
        try:
            s.sendall(b"ping\n")
            return s.recv(64)
        except OSError:
            return b""
        finally:
            s.close()
    assert roundtrip("127.0.0.1") == b"ping\n"
    assert roundtrip("127.0.0.2") == b""
    assert h.wait_stat("netc.rbac.denied", lambda v: v >= 1) == 1
    assert h.stat("netc.rbac.allowed") == 1


BAD_CEL = [
    (attr("request", "bogus"), "unknown attribute request.bogus"),
    (call("frobnicate", const("x")), "the CEL function 'frobnicate' is not supported"),
    (call("matches", const("("), target=attr("request", "path")), "invalid regex at offset"),
    (call("startsWith", attr("request", "path")), "'startsWith' does not take 1 argument"),
    (ident("request"), "'request' alone is not a value"),
    ({"comprehension_expr": {}}, "not supported"),
]


@pytest.mark.parametrize("condition,message", BAD_CEL, ids=[m for _, m in BAD_CEL])
def test_bad_conditions_are_refused(tmp_path, condition, message):
    rbac = http_rbac(rules={"action": "ALLOW", "policies": {"p": policy_with(condition)}})
    cfg = helpers.bootstrap([hb.http_listener(18998, hb.hcm("x", [hb.route("/", "c")], [rbac]))],
                            [helpers.cluster("c", [("127.0.0.1", 1)])])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg, indent=1))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
    assert r.returncode != 0, "accepted:\n" + r.stderr
    line = next((l for l in r.stderr.splitlines() if message in l), None)
    assert line, r.stderr
    assert line.startswith("error: %s:" % path) and ".condition" in line, line
