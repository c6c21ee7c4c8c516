"""access_log[].filter (envoy.config.accesslog.v3.AccessLogFilter) on HTTP
access logs and tcp_proxy's: which requests get a line, and the config
errors a bad filter gives."""

import json
import re

import conftest
import http_backends as hb
from helpers import wait_lines
from http_backends import HttpBackend

HC_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck"
TCP_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def filtered_log(path, flt, fmt="%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n"):
    entry = hb.file_access_log(path, fmt)
    entry["filter"] = flt
    return entry


def cmp(op, value):
    return {"comparison": {"op": op, "value": {"default_value": value, "runtime_key": "alf.test.unset"}}}


def test_access_log_filters_pick_lines(herald, upstreams, port, tmp_path):
    """Each log gets only the requests its filter accepts; a log without a
    filter gets all of them."""
    b = upstreams(HttpBackend, "b")
    logs = {k: str(tmp_path / (k + ".log")) for k in
            ("all", "ge400", "eq200", "le399", "flags_any", "flags_nr", "header", "header_inv", "and", "or",
             "not_hc", "grpc", "log_type")}
    hc = {"name": "envoy.filters.http.health_check", "typed_config": {
        "@type": HC_FILTER_TYPE, "pass_through_mode": False,
        "headers": [{"name": ":path", "string_match": {"exact": "/healthz"}}]}}
    access_log = [
        hb.file_access_log(logs["all"], "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n"),
        filtered_log(logs["ge400"], {"status_code_filter": cmp("GE", 400)}),
        filtered_log(logs["eq200"], {"status_code_filter": cmp("EQ", 200)}),
        filtered_log(logs["le399"], {"status_code_filter": cmp("LE", 399)}),
        filtered_log(logs["flags_any"], {"response_flag_filter": {}}),
        filtered_log(logs["flags_nr"], {"response_flag_filter": {"flags": ["UH", "NR"]}}),
        filtered_log(logs["header"], {"header_filter": {"header": {
            "name": "x-log", "string_match": {"prefix": "ye"}}}}),
        filtered_log(logs["header_inv"], {"header_filter": {"header": {
            "name": "x-log", "present_match": True, "invert_match": True}}}),
        filtered_log(logs["and"], {"and_filter": {"filters": [
            {"status_code_filter": cmp("GE", 400)}, {"not_health_check_filter": {}}]}}),
        filtered_log(logs["or"], {"or_filter": {"filters": [
            {"status_code_filter": cmp("EQ", 503)},
            {"header_filter": {"header": {"name": "x-log", "present_match": True}}}]}}),
        filtered_log(logs["not_hc"], {"not_health_check_filter": {}}),
        # 404 maps to UNIMPLEMENTED, 503 to UNAVAILABLE (Envoy's httpToGrpcStatus); exclude inverts
        filtered_log(logs["grpc"], {"grpc_status_filter": {"statuses": ["UNAVAILABLE", "OK"], "exclude": True}}),
        filtered_log(logs["log_type"], {"log_type_filter": {"types": ["DownstreamEnd"]}}),
    ]
    routes = [hb.route("/nohost", "missing_cluster_hosts"), hb.route("/ok", "backend")]
    empty = hb.http_cluster("missing_cluster_hosts", [])
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes, http_filters=[hc], access_log=access_log,
                           extra_clusters=[empty])
    assert hb.request(lp, "/ok/a")[0] == 200
    assert hb.request(lp, "/ok/b", headers={"x-log": "yes"})[0] == 200
    assert hb.request(lp, "/missing")[0] == 404
    assert hb.request(lp, "/nohost")[0] == 503
    assert hb.request(lp, "/healthz")[0] == 200

    got = wait_lines(logs["all"], 5)
    assert len(got) == 5, got
    want = {
        "ge400": ["/missing 404 NR", "/nohost 503 UH"],
        "eq200": ["/ok/a 200 -", "/ok/b 200 -", "/healthz 200 -"],
        "le399": ["/ok/a 200 -", "/ok/b 200 -", "/healthz 200 -"],
        "flags_any": ["/missing 404 NR", "/nohost 503 UH"],
        "flags_nr": ["/missing 404 NR", "/nohost 503 UH"],
        "header": ["/ok/b 200 -"],
        "header_inv": ["/ok/a 200 -", "/missing 404 NR", "/nohost 503 UH", "/healthz 200 -"],
        "and": ["/missing 404 NR", "/nohost 503 UH"],
        "or": ["/ok/b 200 -", "/nohost 503 UH"],
        "not_hc": ["/ok/a 200 -", "/ok/b 200 -", "/missing 404 NR", "/nohost 503 UH"],
        "grpc": ["/ok/a 200 -", "/ok/b 200 -", "/missing 404 NR", "/healthz 200 -"],
        "log_type": got,
    }
    for k, lines in want.items():
        have = wait_lines(logs[k], len(lines), timeout=1.0)
        assert sorted(have) == sorted(lines), (k, have)


def test_access_log_header_filter_sees_every_value(herald, upstreams, port, tmp_path):
    """A header sent twice is matched as its values joined with ',' (Envoy's
    getAllOfHeaderAsString): a request cannot slip past a header_filter by
    putting a harmless first copy before the one the filter looks for."""
    b = upstreams(HttpBackend, "b")
    debug, joined = str(tmp_path / "debug.log"), str(tmp_path / "joined.log")
    access_log = [
        filtered_log(debug, {"header_filter": {"header": {"name": "x-debug", "string_match": {"contains": "on"}}}}),
        filtered_log(joined, {"header_filter": {"header": {"name": "x-debug", "string_match": {"exact": "off,on"}}}}),
    ]
    h, lp = hb.start_proxy(herald, port, [b.port], access_log=access_log)

    def get(path, *values):
        head = "".join("x-debug: %s\r\n" % v for v in values)
        out = hb.raw(lp, ("GET %s HTTP/1.1\r\nhost: x\r\n%sconnection: close\r\n\r\n" % (path, head)).encode())
        assert hb.status_of(out) == 200, out[:200]
    get("/one-off", "off")
    get("/two", "off", "on")
    get("/one-on", "on")
    assert sorted(wait_lines(debug, 2, timeout=1.5)) == ["/one-on 200 -", "/two 200 -"]
    assert wait_lines(joined, 1, timeout=1.0) == ["/two 200 -"]


def test_access_log_response_flag_filter_by_name(herald, upstreams, port, tmp_path):
    """flags: [UH] takes only the no-healthy-upstream request, not the 404."""
    b = upstreams(HttpBackend, "b")
    log = str(tmp_path / "uh.log")
    routes = [hb.route("/nohost", "empty"), hb.route("/ok", "backend")]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes,
                           access_log=[filtered_log(log, {"response_flag_filter": {"flags": ["UH"]}})],
                           extra_clusters=[hb.http_cluster("empty", [])])
    for path in ("/ok", "/missing", "/nohost", "/ok"):
        hb.request(lp, path)
    assert wait_lines(log, 2, timeout=1.5) == ["/nohost 503 UH"]


def test_access_log_status_filter_on_tcp_proxy(herald, upstreams, port, tmp_path):
    """tcp_proxy has no response code (0): LE 0 logs every connection, GE 1
    none; a duration filter with GE 0 logs it too."""
    b = upstreams(HttpBackend, "b")
    lp = port()
    logs = [str(tmp_path / n) for n in ("le0.log", "ge1.log", "dur.log")]
    fmt = "%DOWNSTREAM_REMOTE_ADDRESS% %BYTES_SENT%\n"
    tcp = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": TCP_TYPE, "stat_prefix": "t", "cluster": "backend", "access_log": [
            filtered_log(logs[0], {"status_code_filter": cmp("LE", 0)}, fmt),
            filtered_log(logs[1], {"status_code_filter": cmp("GE", 1)}, fmt),
            filtered_log(logs[2], {"duration_filter": cmp("GE", 0)}, fmt)]}}
    cfg = {"static_resources": {
        "listeners": [{"name": "t", "address": hb.sock_addr(lp), "filter_chains": [{"filters": [tcp]}]}],
        "clusters": [hb.http_cluster("backend", [b.port])]}}
    herald(cfg)
    assert hb.request(lp, "/x")[0] == 200
    assert len(wait_lines(logs[0], 1)) == 1
    assert len(wait_lines(logs[2], 1)) == 1
    assert wait_lines(logs[1], 1, timeout=0.5) == []


def validate(tmp_path, flt, access_log_extra=None):
    entry = filtered_log(str(tmp_path / "a.log"), flt)
    cfg = {"static_resources": {"listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "c")],
                                                                         access_log=[entry]))],
                                "clusters": [hb.http_cluster("c", [1])]}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg, indent=1))
    return conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])


def test_access_log_filter_config_errors(tmp_path):
    """A bad or unsupported filter stops the config, saying where and what."""
    cases = [
        ({"response_flag_filter": {"flags": ["UH", "XX"]}}, "unknown response flag 'XX'", "flags"),
        ({"and_filter": {"filters": [{"not_health_check_filter": {}}]}}, "at least 2 filters", "and_filter"),
        ({"runtime_filter": {"runtime_key": "k"}}, "not supported by herald: runtime_filter", "runtime_filter"),
        ({"traceable_filter": {}}, "not supported by herald: traceable_filter", "traceable_filter"),
        ({"status_code_filter": {"comparison": {"op": "GT", "value": {"default_value": 1, "runtime_key": "k"}}}},
         "op must be EQ, GE, LE or NE", "op"),
        ({"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 400}}}},
         "runtime_key is required", "value"),
        ({"header_filter": {"header": {"name": "x", "safe_regex_match": {"regex": "("}}}}, "regex", "header"),
        ({"grpc_status_filter": {"statuses": ["NOPE"]}}, "unknown gRPC status 'NOPE'", "statuses"),
        ({"status_code_filter": cmp("GE", 400), "duration_filter": cmp("GE", 1)}, "only one of", "filter"),
    ]
    for flt, want, where in cases:
        r = validate(tmp_path, flt)
        assert r.returncode != 0, (flt, r.stdout)
        assert want in r.stderr, (flt, r.stderr)
        assert re.search(r"bad\.json:\d+:\d+: \S*access_log\S*%s" % where, r.stderr), (flt, r.stderr)
    ok = validate(tmp_path, {"or_filter": {"filters": [{"status_code_filter": cmp("GE", 500)},
                                                       {"duration_filter": cmp("GE", 1000)}]}})
    assert ok.returncode == 0, ok.stderr
