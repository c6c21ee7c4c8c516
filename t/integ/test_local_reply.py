"""The HCM's local_reply_config: mappers rewrite herald's own replies (status,
body, headers), body_format shapes every local reply's body; replies from
the backend pass untouched."""

import json
import os
import re
import socket
import subprocess

import pytest

import conftest
import http_backends as hb
from helpers import wait_for, wait_lines
from http_backends import HttpBackend


def status_filter(op, code):
    return {"status_code_filter": {"comparison": {"op": op, "value": {"default_value": code,
                                                                         "runtime_key": "alf.lr.unset"}}}}


def hget(headers, name):
    return headers.get(name)


def routes():
    return [hb.route("/nohost", "empty"), hb.route("/direct", direct_response={
        "status": 200, "body": {"inline_string": "direct body"}}),
            hb.route("/forbidden", direct_response={"status": 403}), hb.route("/app", "backend")]


def start(herald, upstreams, port, local_reply_config, **kw):
    b = upstreams(HttpBackend, "b")
    return hb.start_proxy(herald, port, [b.port], routes=routes(), local_reply_config=local_reply_config,
                          extra_clusters=[hb.http_cluster("empty", [])], **kw)


def test_local_reply_mapper_rewrites_the_404(herald, upstreams, port, tmp_path):
    """The first matching mapper turns no-route's 404 into a 418 with its body
    and header (the access log says 418); the 503 keeps its code and body;
    a backend's own 404 is not a local reply and is left alone."""
    log = str(tmp_path / "a.log")
    lrc = {"mappers": [
        {"filter": status_filter("EQ", 404), "status_code": 418, "body": {"inline_string": "no such thing"},
         "headers_to_add": [{"header": {"key": "x-mapped", "value": "%RESPONSE_CODE%-%REQ(:PATH)%"},
                             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]},
        {"filter": status_filter("GE", 400), "status_code": 599},   # never reached for a 404
        {"filter": {"header_filter": {"header": {"name": "x-never", "present_match": True}}}, "status_code": 500},
    ]}
    h, lp = start(herald, upstreams, port, lrc,
                  access_log=[hb.file_access_log(log, "%REQ(:PATH)% %RESPONSE_CODE% %LOCAL_REPLY_BODY%\n")])

    st, hd, body = hb.request(lp, "/missing")
    assert (st, body) == (418, b"no such thing"), (st, body)
    assert hget(hd, "x-mapped") == "404-/missing", hd   # the filter's code: the one before the rewrite
    assert hget(hd, "content-type") == "text/plain"

    st, hd, body = hb.request(lp, "/nohost")
    assert st == 599 and hget(hd, "x-mapped") is None, (st, hd)   # the GE 400 mapper
    assert body == b"no healthy upstream", body

    st, hd, body = hb.request(lp, "/app/x?status=404")
    assert st == 404 and hget(hd, "x-mapped") is None, (st, hd)

    lines = wait_lines(log, 3)
    assert lines[:2] == ["/missing 418 no such thing", "/nohost 599 no healthy upstream"], lines


def test_local_reply_503_keeps_its_default(herald, upstreams, port):
    """A mapper for 404 only: the 503 of an empty cluster is as without
    local_reply_config; the 404 is rewritten."""
    lrc = {"mappers": [{"filter": status_filter("EQ", 404), "status_code": 418,
                        "body": {"inline_string": "teapot"}}]}
    h, lp = start(herald, upstreams, port, lrc)
    assert hb.request(lp, "/missing")[::2] == (418, b"teapot")
    st, hd, body = hb.request(lp, "/nohost")
    assert (st, body) == (503, b"no healthy upstream"), (st, body)
    assert hb.request(lp, "/app/ok")[0] == 200


def test_local_reply_json_body_format(herald, upstreams, port):
    """body_format json_format: every local reply (404, 503 and
    direct_response, as in Envoy) is a JSON body with the final code and the
    original body, content-type application/json; a mapper's
    body_format_override with its content_type wins for its replies."""
    lrc = {"body_format": {"json_format": {"code": "%RESPONSE_CODE%", "message": "%LOCAL_REPLY_BODY%",
                                           "path": "%REQ(:PATH)%", "flags": "%RESPONSE_FLAGS%"}},
           "mappers": [{"filter": status_filter("EQ", 503),
                        "body_format_override": {"text_format": "<h1>%RESPONSE_CODE% %LOCAL_REPLY_BODY%</h1>",
                                                 "content_type": "text/html; charset=UTF-8"}}]}
    h, lp = start(herald, upstreams, port, lrc)
    st, hd, body = hb.request(lp, "/missing")
    assert st == 404 and hget(hd, "content-type") == "application/json", (st, hd)
    assert body.endswith(b"\n") and int(hget(hd, "content-length")) == len(body)
    # the 404's body is empty: "" as in Envoy, not null
    assert json.loads(body) == {"code": 404, "message": "", "path": "/missing", "flags": "NR"}, body

    st, hd, body = hb.request(lp, "/direct")
    assert st == 200 and json.loads(body) == {"code": 200, "message": "direct body", "path": "/direct",
                                              "flags": None}, body

    st, hd, body = hb.request(lp, "/nohost")
    assert st == 503 and hget(hd, "content-type") == "text/html; charset=UTF-8", (st, hd)
    assert body == b"<h1>503 no healthy upstream</h1>", body

    st, hd, body = hb.request(lp, "/app/y")   # the backend's own JSON, not the format's
    assert st == 200 and hget(hd, "x-backend") == "b" and json.loads(body)["path"] == "/app/y", (st, body)


def test_local_reply_text_format_source_and_inline_bytes(herald, upstreams, port, tmp_path):
    """body_format from a file; a mapper body in inline_bytes (base64)."""
    fmt = tmp_path / "fmt.txt"
    fmt.write_text("[%RESPONSE_CODE%] %LOCAL_REPLY_BODY%")
    lrc = {"body_format": {"text_format_source": {"filename": str(fmt)}},
           "mappers": [{"filter": status_filter("EQ", 404), "body": {"inline_bytes": "bm90IGhlcmU="}}]}
    h, lp = start(herald, upstreams, port, lrc)
    st, hd, body = hb.request(lp, "/missing")
    assert (st, body) == (404, b"[404] not here"), (st, body)
    assert hget(hd, "content-type") == "text/plain"
    st, hd, body = hb.request(lp, "/nohost")
    assert (st, body) == (503, b"[503] no healthy upstream"), (st, body)
    st, hd, body = hb.request(lp, "/forbidden")   # no body: "", not "-"
    assert (st, body) == (403, b"[403] "), (st, body)


def validate(tmp_path, lrc):
    cfg = {"static_resources": {"listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "c")],
                                                                         local_reply_config=lrc))],
                                "clusters": [hb.http_cluster("c", [1])]}}
    path = tmp_path / "lrc.json"
    path.write_text(json.dumps(cfg, indent=1))
    return conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])


def test_local_reply_config_errors(tmp_path):
    cases = [
        ({"mappers": [{"status_code": 418}]}, "filter is required", r"mappers\[0\]"),
        ({"mappers": [{"filter": status_filter("EQ", 404), "status_code": 700}]}, "from 200 to 599",
         "status_code"),
        ({"mappers": [{"filter": {"response_flag_filter": {"flags": ["ZZ"]}}}]}, "unknown response flag 'ZZ'",
         r"flags\[0\]"),
        ({"mappers": [{"filter": {"runtime_filter": {"runtime_key": "k"}}}]}, "not supported by herald",
         "runtime_filter"),
        ({"body_format": {"text_format": "%NOT_AN_OPERATOR%"}}, "NOT_AN_OPERATOR", "body_format"),
        ({"mapper": []}, "unknown field 'mapper'", r"\.mapper:"),
        ({"mappers": [{"filter": status_filter("EQ", 404), "headers_to_add": [
            {"header": {"key": "a", "value": "1"}},
            {"header": {"key": "b", "value": "2"}, "append_action": "SOMETIMES"}]}]},
         "append_action must be", r"headers_to_add\[1\]\.append_action"),
        ({"mappers": [{"filter": status_filter("EQ", 404), "body_format_override": {"json_format": "x"}}]},
         "json_format must be a mapping", "body_format_override"),
    ]
    for lrc, want, where in cases:
        r = validate(tmp_path, lrc)
        assert r.returncode != 0, (lrc, r.stdout)
        assert want in r.stderr, (lrc, r.stderr)
        assert re.search(r"lrc\.json:\d+:\d+: \S*local_reply_config\S*%s" % where, r.stderr), (lrc, r.stderr)
    ok = validate(tmp_path, {"mappers": [{"filter": status_filter("GE", 500), "status_code": 503}],
                             "body_format": {"json_format": {"c": "%RESPONSE_CODE%"}}})
    assert ok.returncode == 0, ok.stderr


def port_open(p):
    try:
        socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
        return True
    except OSError:
        return False


DEMO = "/work/shared/conformance/envoy-configs/configs-envoy-demo.yaml"


@pytest.mark.skipif(not os.path.exists(DEMO), reason="no conformance configs here")
def test_local_reply_envoy_demo_config(herald, port):
    """Envoy's demo config: listener_0 proxies to listener_1, whose empty
    route table answers 404, which its mapper (header_filter on :method GET)
    dresses as the "Welcome to Envoy" page; a POST's 404 stays bare."""
    p0, p1 = port(), port()
    text = open(DEMO).read().replace("$", "$$")
    text = re.sub(r"port_value: 10000\b", "port_value: %d" % p0, text)
    text = re.sub(r"port_value: 10001\b", "port_value: %d" % p1, text).replace("0.0.0.0", "127.0.0.1")
    herald(text, wait=None)   # the demo has no admin listener
    assert wait_for(lambda: port_open(p0) and port_open(p1))
    for lp in (p0, p1):
        st, hd, body = hb.request(lp, "/")
        assert st == 404 and hd.get("content-type") == "text/html; charset=UTF-8", (lp, st, hd)
        assert b"<h1>Welcome to Envoy</h1>" in body, body
    st, hd, body = hb.request(p1, "/", method="POST", body=b"x")
    assert (st, body) == (404, b"") and "content-type" not in hd, (st, hd, body)


def grpc_call(lp, path, headers=()):
    """A gRPC-style POST with a body over HTTP/2: (:status, {name: value} of the
    response's first HEADERS frame). nghttp, not curl: curl 7.88 (Debian 12)
    now and then hangs when an HTTP/2 response ends while it still uploads,
    which a gRPC error reply does (nghttp and gRPC clients do not)."""
    body = os.path.join(os.environ.get("TMPDIR", "/tmp"), "herald-grpc-body-%d" % os.getpid())
    with open(body, "wb") as f:
        f.write(b"\x00\x00\x00\x00\x00")
    args = ["nghttp", "-v", "-t", "5", "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers"]
    for h in headers:
        args += ["-H", h]
    r = subprocess.run(args + ["http://127.0.0.1:%d%s" % (lp, path)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=15)
    out = r.stdout.decode("latin-1")
    assert r.returncode == 0, out
    got = dict(re.findall(r"\] recv \(stream_id=\d+\) ([^:\s][^:]*|:status): (.*)", out))
    assert ":status" in got, out
    return got.pop(":status"), got


def test_local_replies_to_grpc_requests_are_grpc(herald, upstreams, port, tmp_path):
    """Envoy's sendLocalReply for gRPC: :status 200, content-type
    application/grpc, grpc-status from the HTTP code (or the filter's), the
    reason percent-encoded in grpc-message, no body; a plain request to the
    same routes gets the HTTP answer as before."""
    log = str(tmp_path / "access.log")
    routes_ = [hb.route("/nohost", "empty"), hb.route("/forbidden", direct_response={"status": 403}),
               hb.route("/odd", direct_response={"status": 503, "body": {"inline_string": "50% d\u00e9j\u00e0"}})]
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes_, extra_clusters=[hb.http_cluster("empty", [])],
                           access_log=[hb.file_access_log(
                               log, "%REQ(:PATH)% %RESPONSE_CODE% %GRPC_STATUS% %RESPONSE_CODE_DETAILS%\n")])
    status, hd = grpc_call(lp, "/nohost/Svc/Call")
    assert (status, hd["content-type"], hd["grpc-status"], hd["grpc-message"]) == \
        ("200", "application/grpc", "14", "no healthy upstream"), hd
    assert "content-length" not in hd, hd
    status, hd = grpc_call(lp, "/forbidden/Svc/Call")
    assert (status, hd["grpc-status"]) == ("200", "7"), hd
    assert "grpc-message" not in hd, hd                    # an empty body: no message
    status, hd = grpc_call(lp, "/missing/Svc/Call")        # no route: 404 -> UNIMPLEMENTED
    assert (status, hd["grpc-status"]) == ("200", "12"), hd
    status, hd = grpc_call(lp, "/odd/Svc/Call")
    assert (status, hd["grpc-status"], hd["grpc-message"]) == ("200", "14", "50%25 d%C3%A9j%C3%A0"), hd
    # not gRPC: the HTTP answer
    st, headers, body = hb.request(lp, "/nohost/x")
    assert (st, body) == (503, b"no healthy upstream"), (st, body)
    lines = wait_lines(log, 5)
    assert lines[0] == "/nohost/Svc/Call 200 Unavailable no_healthy_upstream", lines
    assert lines[1].startswith("/forbidden/Svc/Call 200 PermissionDenied "), lines
    assert lines[4] == "/nohost/x 503 - no_healthy_upstream", lines
    assert h.stat("http.ingress_http.downstream_rq_2xx") == 4
