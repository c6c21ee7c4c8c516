"""envoy.filters.http.local_ratelimit against real clients and backends: the
token bucket shared by all workers, 429 with the configured headers, the
RL flag and Envoy's stats, enforcement and the filter itself switched by
runtime fractions, refills, the x-ratelimit-* headers, descriptors made by
the rate_limits of routes, virtual hosts and the filter (a bucket per client
address, per path, per header match), and bad configs."""

import json
import re
import socket
import time

import conftest
import helpers
import http_backends as hb
from helpers import recv_until_eof, wait_for, wait_lines
from http_backends import HttpBackend

LRL_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
PREFIX = "http_local_rate_limiter.http_local_rate_limit."


def percent(n, key=None):
    f = {"default_value": {"numerator": n, "denominator": "HUNDRED"}}
    if key:
        f["runtime_key"] = key
    return f


def lrl(max_tokens=3, fill="60s", per_fill=None, enabled=100, enforced=100, **extra):
    cfg = {"@type": LRL_TYPE, "stat_prefix": "http_local_rate_limiter",
           "token_bucket": {"max_tokens": max_tokens, "fill_interval": fill}}
    if per_fill:
        cfg["token_bucket"]["tokens_per_fill"] = per_fill
    if enabled is not None:
        cfg["filter_enabled"] = percent(enabled)
    if enforced is not None:
        cfg["filter_enforced"] = percent(enforced)
    cfg.update(extra)
    return {"name": "envoy.filters.http.local_ratelimit", "typed_config": cfg}


def get(lp, path, headers=None):
    """(status, headers, body) over a new connection each time."""
    return hb.request(lp, path, headers=dict(headers or {}, Connection="close"))


def limiter_stats(h, want_enabled):
    h.wait_stat(PREFIX + "enabled", lambda v: v >= want_enabled)
    st = h.stats()
    return {k[len(PREFIX):]: st.get(k, 0) for k in (PREFIX + n for n in ("enabled", "ok", "rate_limited", "enforced"))}


def test_local_ratelimit_429_after_the_bucket_runs_dry(herald, upstreams, port, tmp_path):
    b = upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    f = lrl(response_headers_to_add=[{"append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                                      "header": {"key": "x-local-rate-limit", "value": "true"}}])
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[f], access_log=[hb.file_access_log(
        log, "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n")])
    results = [get(lp, "/r%d" % i) for i in range(5)]
    assert [r[0] for r in results] == [200, 200, 200, 429, 429], [r[0] for r in results]
    for status, headers, body in results[3:]:
        assert body == b"local_rate_limited", body
        assert headers.get("x-local-rate-limit") == "true", headers
        assert "x-backend" not in headers
    assert "x-local-rate-limit" not in results[0][1]
    assert b.served() == 3                   # the limited requests never reached the backend
    assert limiter_stats(h, 5) == {"enabled": 5, "ok": 3, "rate_limited": 2, "enforced": 2}
    lines = wait_lines(log, 5)
    assert lines[:3] == ["200 - via_upstream"] * 3, lines
    assert lines[3:] == ["429 RL local_rate_limited"] * 2, lines
    # curl, a real client, sees the same answer (and so does HTTP/2 prior knowledge)
    for args in ((), ("--http2-prior-knowledge",)):
        r = hb.curl("-s", "-i", *args, "http://127.0.0.1:%d/curl" % lp)
        assert r.returncode == 0, r.stderr
        assert re.match(r"HTTP/[12](\.1)? 429", r.stdout), r.stdout[:200]


def test_local_ratelimit_bucket_refills(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[lrl(max_tokens=2, per_fill=2, fill="0.5s")])
    deadline = time.monotonic() + 10
    while get(lp, "/drain")[0] != 429:          # the bucket is empty ...
        assert time.monotonic() < deadline, "never limited"
    assert wait_for(lambda: get(lp, "/again")[0] == 200, timeout=5.0)   # ... and filled again
    assert h.wait_stat(PREFIX + "rate_limited", lambda v: v >= 1) >= 1


def test_local_ratelimit_bucket_is_shared_by_the_workers(herald, upstreams, port):
    """Envoy: "the token bucket is shared across all workers, thus the rate
    limits are applied per Envoy process". Two workers, connections spread
    over both: still 4 answers in all."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[lrl(max_tokens=4)], concurrency=2)
    socks = [socket.create_connection(("127.0.0.1", lp), timeout=5) for _ in range(12)]
    statuses = []
    for i, s in enumerate(socks):
        s.sendall(b"GET /w%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i)
    for s in socks:
        statuses.append(hb.status_of(recv_until_eof(s)))
        s.close()
    assert sorted(statuses) == [200] * 4 + [429] * 8, statuses
    assert b.served() == 4
    st = h.stats()
    per_worker = [v for k, v in st.items() if re.match(r"listener\..*\.worker_\d+\.downstream_cx_total$", k)]
    assert len(per_worker) == 2 and min(per_worker) > 0, per_worker   # both workers took connections


def test_local_ratelimit_not_enforced_counts_and_marks(herald, upstreams, port):
    """filter_enforced unset (Envoy: 0%): limited requests still go upstream,
    carrying request_headers_to_add_when_not_enforced, and are counted."""
    b = upstreams(HttpBackend, "b")
    f = lrl(max_tokens=1, enforced=None, request_headers_to_add_when_not_enforced=[
        {"header": {"key": "x-would-be-limited", "value": "yes"}}])
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[f])
    assert [get(lp, "/n%d" % i)[0] for i in range(3)] == [200] * 3
    marks = [hb.hget(r["headers"], "x-would-be-limited") for r in b.requests]
    assert marks == [None, "yes", "yes"], marks
    assert limiter_stats(h, 3) == {"enabled": 3, "ok": 1, "rate_limited": 2, "enforced": 0}


def test_local_ratelimit_switched_by_runtime(herald, upstreams, port):
    """filter_enabled and filter_enforced are runtime fractions: a static
    layer that sets the enabled key to 0 turns the filter off; unset
    filter_enabled is off too (Envoy's default 0%)."""
    b = upstreams(HttpBackend, "b")
    lp = port()
    routes = [hb.route("/", "backend")]
    f = lrl(max_tokens=1)
    f["typed_config"]["filter_enabled"] = percent(100, "lrl.enabled")
    listeners = [hb.http_listener(lp, hb.hcm("ingress_http", routes, [f]), "proxy")]
    cfg = {"static_resources": {"listeners": listeners, "clusters": [hb.http_cluster("backend", [b.port])]},
           "layered_runtime": {"layers": [{"name": "static", "static_layer": {"lrl.enabled": 0}}]}}
    h = herald(cfg)
    assert [get(lp, "/off%d" % i)[0] for i in range(3)] == [200] * 3
    assert h.stat(PREFIX + "enabled") == 0
    # the same limiter with no filter_enabled at all
    h2, lp2 = hb.start_proxy(herald, port, [b.port], http_filters=[lrl(max_tokens=1, enabled=None)])
    assert [get(lp2, "/unset%d" % i)[0] for i in range(3)] == [200] * 3
    assert h2.stat(PREFIX + "enabled") == 0


def test_local_ratelimit_x_ratelimit_headers(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[
        lrl(max_tokens=3, fill="60s", enable_x_ratelimit_headers="DRAFT_VERSION_03")])
    seen = []
    for i in range(4):
        status, headers, _ = get(lp, "/x%d" % i)
        seen.append((status, headers.get("x-ratelimit-limit"), headers.get("x-ratelimit-remaining")))
        assert 0 < int(headers.get("x-ratelimit-reset")) <= 60, headers
    assert seen == [(200, "3", "2"), (200, "3", "1"), (200, "3", "0"), (429, "3", "0")], seen


def test_local_ratelimit_bad_configs(tmp_path):
    cases = [
        (lrl(fill="0.01s"), r"token_bucket\.fill_interval: fill_interval must be at least 50ms"),
        (lrl(max_tokens=0), r"token_bucket\.max_tokens: max_tokens must be from 1"),
        (lrl(local_rate_limit_per_downstream_connection=True),
         r"local_rate_limit_per_downstream_connection: not supported: a bucket per downstream connection"),
        (lrl(descriptors=[{"entries": [{"key": "a", "value": "b"}],
                           "token_bucket": {"max_tokens": 1, "fill_interval": "1s"}}] * 2),
         r"descriptors\[1\]: the same descriptor twice"),
        (lrl(descriptors=[{"entries": [{"key": "a"}]}]), r"descriptors\[0\]: .*token_bucket"),
        (lrl(rate_limits=[{"actions": [{"request_headers": {"header_name": "x"}}]}]),
         r"rate_limits\[0\]\.actions\[0\]\.request_headers: .*descriptor_key"),
        (lrl(rate_limits=[{"actions": [{"dynamic_metadata": {}}]}]),
         r"rate_limits\[0\]\.actions\[0\]\.dynamic_metadata: not supported"),
        (lrl(response_headers_to_add=[{"header": {"key": "bad key", "value": "v"}}]),
         r"response_headers_to_add\[0\]\.header\.key: 'bad key' is not a header name"),
    ]
    for f, want in cases:
        cfg = {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "backend")], [f]))],
            "clusters": [hb.http_cluster("backend", [1])]}}
        path = tmp_path / "lrl.json"
        path.write_text(json.dumps(cfg))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*lrl.json:\d+:\d+: static_resources.listeners\[0\].*http_filters\[0\]"
                         r"\.typed_config\." + want, r.stderr), (want, r.stderr)


# ------------------------------------------------------------------ envoy.filters.network.local_ratelimit

NLRL_TYPE = "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit"


def nlrl(stat_prefix="tcp_rl", max_tokens=2, fill="60s", **extra):
    cfg = {"@type": NLRL_TYPE, "stat_prefix": stat_prefix,
           "token_bucket": {"max_tokens": max_tokens, "fill_interval": fill}}
    cfg.update(extra)
    return {"name": "envoy.filters.network.local_ratelimit", "typed_config": cfg}


def echoes(port, payload=b"ping"):
    """True when a new connection to port gets payload echoed; False when
    herald closes it first (its reset may even reach connect())."""
    try:
        s = helpers.connect(port)
    except ConnectionResetError:
        return False
    try:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return False
        got = b""
        s.settimeout(5)
        while len(got) < len(payload):
            try:
                d = s.recv(4096)
            except ConnectionResetError:
                return False
            if not d:
                return False
            got += d
        return got == payload
    finally:
        s.close()


def test_network_local_ratelimit_closes_connections_past_the_bucket(herald, upstreams, port):
    e = upstreams(helpers.EchoServer)
    lp = port()
    h = herald(helpers.bootstrap([helpers.tcp_listener(lp, "echo", before=[nlrl(max_tokens=2)])],
                                 [helpers.cluster("echo", [("127.0.0.1", e.port)])]))
    assert [echoes(lp) for _ in range(4)] == [True, True, False, False]
    assert h.wait_stat("local_rate_limit.tcp_rl.rate_limited", lambda v: v >= 2) == 2
    assert h.stat("tcp.tcp.downstream_cx_total") == 2, "the closed connections never reached tcp_proxy"


def test_network_local_ratelimit_share_key_and_runtime_flag(herald, upstreams, port):
    """Two listeners with the same share_key and bucket share it (Envoy keys
    the bucket by both); a third with the key but another bucket has its own;
    runtime_enabled false switches a fourth off."""
    e = upstreams(helpers.EchoServer)
    a, b, c, d = port(), port(), port(), port()
    shared = dict(share_key="k")
    cfg = helpers.bootstrap(
        [helpers.tcp_listener(a, "echo", "ta", before=[nlrl("a", max_tokens=3, **shared)]),
         helpers.tcp_listener(b, "echo", "tb", before=[nlrl("b", max_tokens=3, **shared)]),
         helpers.tcp_listener(c, "echo", "tc", before=[nlrl("c", max_tokens=1, **shared)]),
         helpers.tcp_listener(d, "echo", "td", before=[nlrl("d", max_tokens=1, runtime_enabled={
             "default_value": False, "runtime_key": "tcp_rl.enabled"})])],
        [helpers.cluster("echo", [("127.0.0.1", e.port)])])
    h = herald(cfg)
    got = [echoes(a), echoes(b), echoes(a), echoes(b), echoes(a)]
    assert got == [True, True, True, False, False], got       # 3 tokens between a and b
    assert [echoes(c), echoes(c)] == [True, False]            # c's bucket is its own
    assert [echoes(d) for _ in range(3)] == [True] * 3        # off by runtime_enabled
    st = h.stats()
    assert (st.get("local_rate_limit.a.rate_limited"), st.get("local_rate_limit.b.rate_limited"),
            st.get("local_rate_limit.c.rate_limited"), st.get("local_rate_limit.d.rate_limited", 0)) == (1, 1, 1, 0)


def test_network_local_ratelimit_bad_configs(tmp_path):
    cases = [
        (nlrl(fill="0.01s"), r"token_bucket\.fill_interval: fill_interval must be at least 50ms"),
        (nlrl(runtime_enabled={"default_value": True}), r"runtime_enabled: .*runtime_key"),
        ({"name": "envoy.filters.network.local_ratelimit", "typed_config": {
            "@type": NLRL_TYPE, "stat_prefix": "x"}}, r"token_bucket"),
    ]
    for f, want in cases:
        cfg = helpers.bootstrap([helpers.tcp_listener(1, "echo", before=[f])],
                                [helpers.cluster("echo", [("127.0.0.1", 1)])])
        path = tmp_path / "nlrl.json"
        path.write_text(json.dumps(cfg))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*nlrl.json:\d+:\d+: static_resources.listeners\[0\]\.filter_chains\[0\]"
                         r"\.filters\[0\]\.typed_config.*" + want, r.stderr), (want, r.stderr)


# ------------------------------------------------------------------ typed_per_filter_config


def test_local_ratelimit_per_route_buckets(herald, upstreams, port):
    """Envoy's "globally disabled but enabled for a specific route": the
    filter in http_filters has no bucket; a route and a virtual host give
    their own in typed_per_filter_config, each with its own bucket and stats;
    the route's beats its virtual host's."""
    b = upstreams(HttpBackend, "b")

    def per_route(prefix, max_tokens):
        return {"envoy.filters.http.local_ratelimit": dict(lrl(max_tokens=max_tokens)["typed_config"],
                                                           stat_prefix=prefix)}

    f = lrl(enforced=None)
    del f["typed_config"]["token_bucket"]
    limited = hb.route("/limited", "backend")
    limited["typed_per_filter_config"] = per_route("route_rl", 1)
    wrapped = hb.route("/wrapped", "backend")
    wrapped["typed_per_filter_config"] = {"envoy.filters.http.local_ratelimit": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": dict(lrl(max_tokens=2)["typed_config"], stat_prefix="wrapped_rl")}}
    routes = [limited, wrapped, hb.route("/", "backend")]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes, http_filters=[f],
                           vhost_extra={"typed_per_filter_config": per_route("vhost_rl", 3)})
    assert [get(lp, "/limited/%d" % i)[0] for i in range(3)] == [200, 429, 429]
    assert [get(lp, "/wrapped/%d" % i)[0] for i in range(3)] == [200, 200, 429]
    assert [get(lp, "/other/%d" % i)[0] for i in range(5)] == [200, 200, 200, 429, 429]
    st = h.stats()
    got = {p: st.get(p + ".http_local_rate_limit.rate_limited") for p in ("route_rl", "wrapped_rl", "vhost_rl")}
    assert got == {"route_rl": 2, "wrapped_rl": 1, "vhost_rl": 2}, got
    assert st.get(PREFIX + "enabled", 0) == 0           # the filter's own config never ran


def test_per_route_config_errors(tmp_path):
    rl = lrl()["typed_config"]
    no_bucket = {k: v for k, v in rl.items() if k != "token_bucket"}
    cases = [
        ({"envoy.filters.http.nope": rl}, [lrl()],
         r"typed_per_filter_config\.envoy\.filters\.http\.nope: typed_per_filter_config names "
         r"'envoy.filters.http.nope': no http_filters entry"),
        ({"envoy.filters.http.local_ratelimit": no_bucket}, [lrl()],
         r"typed_per_filter_config\.envoy\.filters\.http\.local_ratelimit: a per-route local rate limit needs a "
         r"token_bucket"),
        ({"envoy.filters.http.router": {}}, [],
         r"HTTP filter 'envoy.filters.http.router' \(envoy.filters.http.router\) takes no per-route"),
        ({"envoy.filters.http.local_ratelimit": {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "is_optional": True}}, [lrl()],
         r"FilterConfig needs config \(or disabled\)"),
        ({"envoy.filters.http.local_ratelimit": dict(rl, token_bucket={"max_tokens": 1, "fill_interval": "0.001s"})},
         [lrl()], r"token_bucket\.fill_interval: fill_interval must be at least 50ms"),
    ]
    for pfc, filters, want in cases:
        r0 = hb.route("/", "backend")
        r0["typed_per_filter_config"] = pfc
        cfg = {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", [r0], filters))],
            "clusters": [hb.http_cluster("backend", [1])]}}
        path = tmp_path / "pfc.json"
        path.write_text(json.dumps(cfg))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*pfc.json:\d+:\d+: .*" + want, r.stderr), (want, r.stderr)


# ------------------------------------------------------------------ descriptors


def bucket(n, fill="60s"):
    return {"max_tokens": n, "fill_interval": fill}


def get_from(lp, path, src, headers=None):
    """The status of one request from source address src (127.0.0.x)."""
    s = socket.create_connection(("127.0.0.1", lp), timeout=5, source_address=(src, 0))
    try:
        extra = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n" % (path, extra)).encode())
        data = recv_until_eof(s)
    finally:
        s.close()
    return int(data.split(b" ", 2)[1])


def test_descriptors_a_bucket_per_client_address(herald, upstreams, port):
    """The common ask: N requests per client. The route's rate_limits make
    ("remote_address", <client>); a descriptor with that key and no value
    gives every client a bucket of its own (max_dynamic_descriptors of them
    kept); the filter's default bucket is large and only counts."""
    b = upstreams(HttpBackend, "b")
    r = hb.route("/", "backend", rate_limits=[{"actions": [{"remote_address": {}}]}])
    f = lrl(max_tokens=1000, descriptors=[{"entries": [{"key": "remote_address"}], "token_bucket": bucket(2)}],
            enable_x_ratelimit_headers="DRAFT_VERSION_03")
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[r], http_filters=[f], use_remote_address=True)
    got = {src: [get_from(lp, "/p", src) for _ in range(3)] for src in ("127.0.0.1", "127.0.0.2", "127.0.0.3")}
    assert got == {src: [200, 200, 429] for src in got}, got
    assert b.served() == 6
    # x-ratelimit-* report the client's own bucket
    status, headers, _ = get(lp, "/p")
    assert status == 429 and headers.get("x-ratelimit-limit") == "2" and headers.get("x-ratelimit-remaining") == "0", headers
    st = limiter_stats(h, 10)
    assert st["rate_limited"] == 4 and st["ok"] == 6, st


def test_descriptors_route_path_and_vh_rate_limits(herald, upstreams, port):
    """Envoy's docs example: the route's rate_limits put the path in a
    descriptor and its typed_per_filter_config gives /slow a bucket of one;
    other paths use the default bucket. The virtual host's rate_limits apply
    only to routes without their own (OVERRIDE), unless include_vh_rate_limits."""
    b = upstreams(HttpBackend, "b")
    path_rl = [{"actions": [{"request_headers": {"header_name": ":path", "descriptor_key": "path"}}]}]
    per_route = dict(lrl(max_tokens=100)["typed_config"], stat_prefix="route_rl", descriptors=[
        {"entries": [{"key": "path", "value": "/slow"}], "token_bucket": bucket(1)},
        {"entries": [{"key": "team", "value": "red"}], "token_bucket": bucket(1)}])
    slow = hb.route("/slow", "backend", rate_limits=path_rl)
    slow["typed_per_filter_config"] = {"envoy.filters.http.local_ratelimit": per_route}
    both = hb.route("/both", "backend", rate_limits=path_rl, include_vh_rate_limits=True)
    both["typed_per_filter_config"] = {"envoy.filters.http.local_ratelimit": per_route}
    plain = hb.route("/", "backend")
    plain["typed_per_filter_config"] = {"envoy.filters.http.local_ratelimit": per_route}
    vh_rl = [{"actions": [{"header_value_match": {"descriptor_key": "team", "descriptor_value": "red",
                                                  "headers": [{"name": "x-team", "string_match": {"exact": "red"}}]}}]}]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[slow, both, plain], http_filters=[lrl(max_tokens=100)],
                           vhost_extra={"rate_limits": vh_rl})
    red = {"x-team": "red"}
    assert [get(lp, "/slow")[0] for _ in range(2)] == [200, 429]        # path descriptor
    assert [get(lp, "/slow", red)[0] for _ in range(1)] == [429]          # route has rate_limits: vh's not used
    assert [get(lp, "/other", red)[0] for _ in range(2)] == [200, 429]  # no route rate_limits: the vh's (team)
    # include_vh: the team descriptor too, in /both's own buckets (a per-route config has its own, as in Envoy)
    assert [get(lp, "/both", red)[0] for _ in range(2)] == [200, 429]
    assert get(lp, "/both")[0] == 200                                    # /both's path has no descriptor
    assert [get(lp, "/other")[0] for _ in range(3)] == [200] * 3         # no descriptor: the default bucket


def test_descriptors_filter_rate_limits_and_default_bucket(herald, upstreams, port):
    """The filter's own rate_limits (routes' are then not used): a generic
    key for every request plus a masked client network. With
    always_consume_default_token_bucket false the default bucket is not
    touched by requests a descriptor matched."""
    b = upstreams(HttpBackend, "b")
    f = lrl(max_tokens=1, rate_limits=[
        {"actions": [{"generic_key": {"descriptor_value": "api"}},
                     {"masked_remote_address": {"v4_prefix_mask_len": 24}}]},
        {"actions": [{"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}]}],
        descriptors=[{"entries": [{"key": "generic_key", "value": "api"},
                                  {"key": "masked_remote_address", "value": "127.0.0.0/24"}],
                      "token_bucket": bucket(3)}],
        always_consume_default_token_bucket=False)
    r = hb.route("/", "backend", rate_limits=[{"actions": [{"generic_key": {"descriptor_value": "never"}}]}])
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[r], http_filters=[f], use_remote_address=True)
    # 127.0.0.1 and .2 share 127.0.0.0/24: three tokens between them; the default bucket (1) untouched
    assert [get_from(lp, "/a", src) for src in ("127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2")] == \
        [200, 200, 200, 429]
    # the user header makes a second descriptor that matches nothing, so it does not change that
    assert get_from(lp, "/a", "127.0.0.1", {"x-user": "u1"}) == 429


def test_descriptors_validate_with_rate_limits_on_routes(tmp_path):
    """rate_limits on routes and virtual hosts are checked like the rest
    (they were refused before): a bad one names its place."""
    r = hb.route("/", "backend", rate_limits=[{"stage": 11, "actions": [{"remote_address": {}}]}])
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(1, hb.hcm("x", [r], [lrl()]))],
        "clusters": [hb.http_cluster("backend", [1])]}}
    path = tmp_path / "rl.json"
    path.write_text(json.dumps(cfg))
    res = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
    assert res.returncode == 1, res.stderr
    assert re.search(r"error: .*rl.json:\d+:\d+: .*routes\[0\]\.route\.rate_limits\[0\]\.stage: stage must be "
                     r"from 0 to 10", res.stderr), res.stderr
