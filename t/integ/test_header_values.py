"""HeaderValueOption values as Envoy's substitution format, one
implementation for routes, local replies and filters: %OPERATORS% are read
from the request when the header is added (what the backend and the client
receive), an operator without a value adds nothing, an unknown one stops
start-up with file:line:col."""

import json
import re

import conftest
import http_backends as hb
from http_backends import HttpBackend


def hvo(key, value, **kw):
    return dict({"header": {"key": key, "value": value}}, **kw)


def got_header(req, name):
    vals = [v for n, v in req["headers"] if n.lower() == name]
    return vals[0] if len(vals) == 1 else vals or None


def test_route_header_values_read_the_request(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    r = hb.route("/", "backend")
    r["request_headers_to_add"] = [
        hvo("x-client-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
        hvo("x-proto", "proto=%PROTOCOL%"),
        hvo("x-copy", "%REQ(x-in)%-%REQ(x-absent)%"),
        # an entry added before is visible to a later one, as in Envoy
        hvo("x-echo", "[%REQ(x-proto)%] 100%%"),
        # nothing to read: nothing added, unless kept
        hvo("x-nothing", "%REQ(x-absent)%"),
        hvo("x-nothing-kept", "%REQ(x-absent)%", keep_empty_value=True),
    ]
    r["response_headers_to_add"] = [
        hvo("x-served-by", "%UPSTREAM_HOST%"),
        hvo("x-answer-type", "%RESP(content-type)%", append_action="OVERWRITE_IF_EXISTS_OR_ADD"),
    ]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[r])
    status, headers, _ = hb.request(lp, "/v", headers={"x-in": "abc"})
    assert status == 200
    req = b.requests[0]
    assert got_header(req, "x-client-ip") == "127.0.0.1"
    assert got_header(req, "x-proto") == "proto=HTTP/1.1"
    assert got_header(req, "x-copy") == "abc-"
    assert got_header(req, "x-echo") == "[proto=HTTP/1.1] 100%"
    assert got_header(req, "x-nothing") is None
    assert got_header(req, "x-nothing-kept") == ""
    assert headers.get("x-served-by") == "127.0.0.1:%d" % b.port, headers
    assert headers.get("content-type") and headers.get("x-answer-type") == headers["content-type"], headers
    # the same route over HTTP/2: %PROTOCOL% follows the request
    r2 = hb.curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
                 "http://127.0.0.1:%d/h2" % lp)
    assert r2.stdout == "200"
    assert got_header(b.requests[1], "x-proto") == "proto=HTTP/2"


def test_local_reply_and_ratelimit_headers(herald, upstreams, port):
    """A local_reply_config mapper's headers_to_add and the local rate
    limit filter's response_headers_to_add follow the same actions."""
    b = upstreams(HttpBackend, "b")
    lrl = {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "rl",
        "token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "60s"},
        "filter_enabled": {"default_value": {"numerator": 100}, "runtime_key": "rl_enabled"},
        "filter_enforced": {"default_value": {"numerator": 100}, "runtime_key": "rl_enforced"},
        "response_headers_to_add": [
            hvo("x-limited-path", "%REQ(:path)%"),
            hvo("x-once", "first"),
            hvo("x-once", "second", append_action="ADD_IF_ABSENT")]}}
    mapper = {"filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {
        "default_value": 429, "runtime_key": "k"}}}},
        "headers_to_add": [hvo("x-mapped", "code=%RESPONSE_CODE% flags=%RESPONSE_FLAGS%"),
                           hvo("x-gone", "%REQ(x-absent)%")]}
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[lrl],
                           local_reply_config={"mappers": [mapper]})
    assert hb.request(lp, "/first")[0] == 200
    status, headers, _ = hb.request(lp, "/second")
    assert status == 429, status
    assert headers.get("x-limited-path") == "/second", headers
    assert headers.get("x-once") == "first", headers
    assert headers.get("x-mapped") == "code=429 flags=RL", headers
    assert "x-gone" not in headers, headers
    assert b.served() == 1


def validate(tmp_path, cfg):
    path = tmp_path / "hv.json"
    path.write_text(json.dumps(cfg, indent=1))
    return conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])


def test_header_value_errors(tmp_path):
    cases = [
        (hvo("x-a", "%NO_SUCH_OPERATOR%"), r"unknown command operator 'NO_SUCH_OPERATOR'"),
        (hvo("bad key", "v"), r"header\.key: 'bad key' is not a header name"),
        (hvo(":path", "/x"), r"':'-prefixed or host headers may not be modified"),
        (hvo("x-a", "v", append=True, append_action="ADD_IF_ABSENT"), r"append and append_action are both set"),
    ]
    for entry, want in cases:
        r = hb.route("/", "backend")
        r["request_headers_to_add"] = [entry]
        cfg = {"static_resources": {"listeners": [hb.http_listener(1, hb.hcm("x", [r]))],
                                    "clusters": [hb.http_cluster("backend", [1])]}}
        res = validate(tmp_path, cfg)
        assert res.returncode == 1, (want, res.stderr)
        assert re.search(r"error: .*hv.json:\d+:\d+: .*request_headers_to_add\[0\].*" + want, res.stderr), \
            (want, res.stderr)
    # the same check in a local reply mapper and a health check
    mapper = {"filter": {"status_code_filter": {"comparison": {"op": "GE", "value": {
        "default_value": 400, "runtime_key": "k"}}}}, "headers_to_add": [hvo("x-a", "%NOPE%")]}
    cfg = {"static_resources": {"listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "backend")],
                                                                          local_reply_config={"mappers": [mapper]}))],
                                "clusters": [hb.http_cluster("backend", [1])]}}
    res = validate(tmp_path, cfg)
    assert res.returncode == 1 and re.search(r"hv.json:\d+:\d+: .*unknown command operator 'NOPE'", res.stderr), \
        res.stderr
    hc = {"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1,
          "http_health_check": {"path": "/hc", "request_headers_to_add": [hvo("x-a", "%NOPE%")]}}
    cfg = {"static_resources": {"listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "backend")]))],
                                "clusters": [hb.http_cluster("backend", [1], health_checks=[hc])]}}
    res = validate(tmp_path, cfg)
    assert res.returncode == 1 and re.search(
        r"hv.json:\d+:\d+: .*health_checks\[0\].*unknown command operator 'NOPE'", res.stderr), res.stderr
