"""envoy.filters.http.cors with per-route CorsPolicy against a real backend:
preflights answered here, Access-Control-* headers on responses, origins
matched (and Envoy's "*" wildcard rule), the most specific level winning,
disabled and shadow modes, and the stats."""

import json
import re

import conftest
import http_backends as hb
from http_backends import HttpBackend

CORS = {"name": "envoy.filters.http.cors",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}
POLICY_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
STATS = "http.ingress_http.cors."


def policy(**kw):
    return {"envoy.filters.http.cors": dict(kw, **{"@type": POLICY_TYPE})}


def pct(n):
    return {"default_value": {"numerator": n, "denominator": "HUNDRED"}}


def with_policy(prefix, **kw):
    r = hb.route(prefix, "backend")
    r["typed_per_filter_config"] = policy(**kw)
    return r


def start(herald, port, b):
    routes = [with_policy("/restricted", allow_origin_string_match=[{"suffix": ".example.com"}],
                          allow_methods="GET, PUT", allow_headers="x-token", expose_headers="x-trace",
                          max_age="600", allow_credentials=True),
              with_policy("/disabled", filter_enabled=pct(0)),
              with_policy("/shadow", filter_enabled=pct(0), shadow_enabled=pct(100)),
              with_policy("/strict", allow_origin_string_match=[{"exact": "https://a.example.com"}],
                          forward_not_matching_preflights=False),
              hb.route("/", "backend")]
    vhost = {"typed_per_filter_config": policy(allow_origin_string_match=[{"safe_regex": {"regex": "\\*"}}],
                                               allow_methods="GET")}
    return hb.start_proxy(herald, port, [b.port], routes=routes, http_filters=[CORS], vhost_extra=vhost)


def preflight(lp, path, origin, method="PUT", **extra):
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    headers.update(extra)
    return hb.request(lp, path, method="OPTIONS", headers=headers)


def test_cors_preflight_and_simple_requests(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b)
    status, headers, body = preflight(lp, "/restricted/x", "https://app.example.com")
    assert status == 200 and body == b"", (status, body)
    assert headers.get("access-control-allow-origin") == "https://app.example.com"
    assert headers.get("access-control-allow-methods") == "GET, PUT"
    assert headers.get("access-control-allow-headers") == "x-token"
    assert headers.get("access-control-max-age") == "600"
    assert headers.get("access-control-allow-credentials") == "true"
    assert b.served() == 0                                  # answered here
    status, headers, _ = hb.request(lp, "/restricted/x", headers={"Origin": "https://app.example.com"})
    assert status == 200 and headers.get("x-backend") == "b"
    assert headers.get("access-control-allow-origin") == "https://app.example.com"
    assert headers.get("access-control-expose-headers") == "x-trace"
    # an origin the route does not allow: no CORS headers, the preflight goes upstream
    status, headers, _ = preflight(lp, "/restricted/x", "https://evil.test")
    assert "access-control-allow-origin" not in headers and headers.get("x-backend") == "b"
    # no Origin: not a CORS request at all
    assert "access-control-allow-origin" not in hb.request(lp, "/restricted/y")[1]
    # curl sees the same preflight
    r = hb.curl("-s", "-i", "-X", "OPTIONS", "-H", "Origin: https://z.example.com",
                "-H", "Access-Control-Request-Method: GET", "http://127.0.0.1:%d/restricted/c" % lp)
    assert re.search(r"(?im)^access-control-allow-origin: https://z.example.com\r?$", r.stdout), r.stdout
    st = h.stats()
    assert (st.get(STATS + "origin_valid"), st.get(STATS + "origin_invalid")) == (3, 1)


def test_cors_levels_wildcard_disabled_shadow(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b)
    # the virtual host's policy: a matcher that matches "*" allows every origin
    status, headers, _ = preflight(lp, "/other", "https://anyone.test", method="GET")
    assert status == 200 and headers.get("access-control-allow-origin") == "https://anyone.test"
    assert headers.get("access-control-allow-methods") == "GET" and b.served() == 0
    # filter_enabled 0 on the route: nothing, although the vhost would allow it
    status, headers, _ = preflight(lp, "/disabled", "https://anyone.test")
    assert "access-control-allow-origin" not in headers and headers.get("x-backend") == "b"
    # shadow: checked and counted, no headers
    before = h.stats().get(STATS + "origin_valid")
    status, headers, _ = hb.request(lp, "/shadow", headers={"Origin": "https://anyone.test"})
    assert status == 200 and "access-control-allow-origin" not in headers
    assert h.wait_stat(STATS + "origin_valid", lambda v: v == before + 1) == before + 1
    # forward_not_matching_preflights false: a preflight from another origin is answered here, bare
    served = b.served()
    status, headers, _ = preflight(lp, "/strict", "https://b.example.com")
    assert status == 200 and "access-control-allow-origin" not in headers and b.served() == served


def test_cors_config_errors(tmp_path):
    cases = [
        (policy(allow_origin_string_match=[{"safe_regex": {"regex": "("}}]), r"regex"),
        (policy(allow_methods=["GET"]), r"allow_methods"),
        (policy(max_age=600, allow_credentials="maybe"), r"allow_credentials"),
    ]
    for pfc, want in cases:
        r0 = hb.route("/", "backend")
        r0["typed_per_filter_config"] = pfc
        cfg = {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", [r0], [CORS]))],
            "clusters": [hb.http_cluster("backend", [1])]}}
        path = tmp_path / "cors.json"
        path.write_text(json.dumps(cfg))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*cors.json:\d+:\d+: .*typed_per_filter_config.*" + want, r.stderr), (want, r.stderr)
