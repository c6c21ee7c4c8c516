"""envoy.filters.http.ext_authz with the HTTP service, against real peers: a
Python authorization service that decides by the Authorization header and
records what it got, nginx as an authorization service, an HttpBackend
behind herald, HTTP/1.1 and HTTP/2 clients. Allowed requests reach the
backend with the service's headers; denied ones get the service's status,
body and headers and never reach it; errors (dead cluster, 5xx, timeout)
follow failure_mode_allow / status_on_error; per-route disabled and body
settings; Envoy's stats; a client leaving mid-check; config errors."""

import http.server
import json
import re
import socket
import threading
import time

import conftest
import http_backends as hb
from helpers import wait_lines
from http_backends import HttpBackend
from test_proxy_protocol import needs_curl, needs_nginx, start_nginx

AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
STATS = "http.ingress_http.ext_authz."
LOG_FMT = "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"


class AuthzService:
    """An HTTP/1.1 authorization service on 127.0.0.1: "Bearer good" is
    allowed (200 with x-current-user and friends), "Bearer broken" gets a 500,
    anything else a 401 with a body and headers; a path with /slow answers
    after a second, one with /pause after 0.4 s. Every request is recorded (method, path, headers, body)."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        svc = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                with svc.lock:
                    svc.requests.append({"method": self.command, "path": self.path, "body": body,
                                         "headers": [(k.lower(), v) for k, v in self.headers.items()]})
                if "/slow" in self.path:
                    time.sleep(1.0)
                elif "/pause" in self.path:
                    time.sleep(0.4)
                auth = self.headers.get("authorization", "")
                if auth == "Bearer good":
                    status, body, extra = 200, b"", [
                        ("x-current-user", "alice"), ("x-append", "from-authz"), ("x-client-ok", "yes"),
                        ("x-unlisted", "no"), ("x-envoy-auth-headers-to-remove", "x-drop, x-drop-too")]
                elif auth == "Bearer broken":
                    status, body, extra = 500, b"oops", []
                else:
                    status, body, extra = 401, b"go away", [
                        ("www-authenticate", 'Bearer realm="test"'), ("x-deny-reason", "bad token"),
                        ("x-other", "1"), ("content-type", "text/x-denied")]
                try:
                    self.send_response(status)
                    for k, v in extra:
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def seen(self):
        with self.lock:
            return list(self.requests)


def ext_authz(**cfg):
    return {"name": "envoy.filters.http.ext_authz", "typed_config": dict(cfg, **{"@type": AUTHZ_TYPE})}


def http_service(cluster="authz", timeout="1s", **kw):
    return dict({"server_uri": {"uri": "http://authz.local", "cluster": cluster, "timeout": timeout}}, **kw)


def per_route(**cfg):
    return {"envoy.filters.http.ext_authz": dict(cfg, **{"@type": PER_ROUTE_TYPE})}


def start(herald, port, backend, authz_port, filt, routes=None, log=None, fmt=LOG_FMT, extra_clusters=None, **kw):
    extra = {"access_log": [hb.file_access_log(log, fmt)]} if log else {}
    return hb.start_proxy(herald, port, [backend.port], routes=routes, http_filters=[filt],
                          extra_clusters=extra_clusters or [hb.http_cluster("authz", [authz_port])], **extra, **kw)


def hval(headers, name):
    return [v for k, v in headers if k == name]


def test_allowed_request_carries_the_services_headers(herald, upstreams, port, tmp_path):
    """200: the backend gets x-current-user (replacing the client's),
    x-append added, the listed headers removed; the client gets
    allowed_client_headers_on_success; the service saw the client's method,
    path_prefix + path, Host, Authorization, the allowed headers only,
    headers_to_add and Envoy's own headers."""
    a, b = upstreams(AuthzService), upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    resp = {"allowed_upstream_headers": {"patterns": [{"exact": "x-current-user"}]},
            "allowed_upstream_headers_to_append": {"patterns": [{"prefix": "x-append"}]},
            "allowed_client_headers_on_success": {"patterns": [{"exact": "x-client-ok"}]},
            "dynamic_metadata_from_headers": {"patterns": [{"exact": "x-current-user"}]}}
    f = ext_authz(http_service=http_service(
        path_prefix="/check", authorization_response=resp,
        authorization_request={"headers_to_add": [{"key": "X-Authz-Added", "value": "yes 100%%"}]}),
        allowed_headers={"patterns": [{"prefix": "x-allowed"}]},
        disallowed_headers={"patterns": [{"exact": "x-allowed-not"}]}, transport_api_version="V3")
    h, lp = start(herald, port, b, a.port, f, log=log,
                  fmt=LOG_FMT.replace("\n", " %DYNAMIC_METADATA(envoy.filters.http.ext_authz:x-current-user)%\n"))
    st, hd, body = hb.request(lp, "/app/x?q=1", method="PUT", body=b"payload", headers={
        "Authorization": "Bearer good", "X-Current-User": "mallory", "X-Append": "client",
        "X-Allowed-One": "1", "X-Allowed-Not": "no", "X-Secret": "s", "X-Drop": "d", "X-Drop-Too": "d2",
        "X-Authz-Added": "client", "Host": "app.example"})
    assert st == 200, (st, body)
    assert hd.get("x-client-ok") == "yes" and "x-unlisted" not in hd, hd
    got = json.loads(body)
    assert got["body_len"] == 7 and got["method"] == "PUT", got
    bh = [(k.lower(), v) for k, v in got["headers"]]
    assert hval(bh, "x-current-user") == ["alice"], bh
    assert hval(bh, "x-append") == ["client", "from-authz"], bh
    assert not hval(bh, "x-drop") and not hval(bh, "x-drop-too") and not hval(bh, "x-unlisted"), bh
    [c] = a.seen()
    assert (c["method"], c["path"], c["body"]) == ("PUT", "/check/app/x?q=1", b""), c
    ch = c["headers"]
    assert hval(ch, "host") == ["app.example"] and hval(ch, "authorization") == ["Bearer good"], ch
    assert hval(ch, "x-allowed-one") == ["1"] and hval(ch, "content-length") == ["0"], ch
    for absent in ("x-allowed-not", "x-secret", "x-current-user", "x-drop", "x-append"):
        assert not hval(ch, absent), (absent, ch)
    assert hval(ch, "x-authz-added") == ["yes 100%"], ch
    assert hval(ch, "x-envoy-internal") == ["true"] and hval(ch, "x-envoy-expected-rq-timeout-ms") == ["1000"], ch
    # a body larger than the connection's buffer limit waits for the answer too (reading paused, no 413)
    big = hb.pattern_bytes(3 * 1024 * 1024)
    st, _, got = hb.get_json(lp, "/pause/upload", method="POST", body=big, headers={"Authorization": "Bearer good"},
                             timeout=10)
    assert st == 200 and got["body_len"] == len(big) and got["body_sha256"] == hb.sha256(big), (st, got)
    assert h.wait_stat(STATS + "ok", lambda v: v >= 2) == 2
    assert h.stat("cluster.backend.ext_authz.ok") == 2
    assert wait_lines(log, 2) == ["/app/x?q=1 200 - via_upstream alice", "/pause/upload 200 - via_upstream alice"]


def test_denied_gets_the_services_answer(herald, upstreams, port, tmp_path):
    """Not 200 (nor 5xx): the client gets the service's status and body and
    the headers allowed_client_headers matches (plus WWW-Authenticate, as
    Envoy adds it); the backend never sees the request."""
    a, b = upstreams(AuthzService), upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    f = ext_authz(http_service=http_service(authorization_response={
        "allowed_client_headers": {"patterns": [{"exact": "x-deny-reason"}, {"exact": "content-type"}]}}))
    h, lp = start(herald, port, b, a.port, f, log=log)
    st, hd, body = hb.request(lp, "/private", headers={"Authorization": "Bearer bad"})
    assert (st, body) == (401, b"go away"), (st, body)
    assert hd.get("x-deny-reason") == "bad token" and hd.get("www-authenticate") == 'Bearer realm="test"', hd
    assert hd.get("content-type") == "text/x-denied" and "x-other" not in hd, hd
    # a POST with a body: denied all the same, the body never goes anywhere
    st, _, body = hb.request(lp, "/private", method="POST", body=b"x" * 5000)
    assert (st, body) == (401, b"go away")
    assert b.served() == 0
    assert h.wait_stat(STATS + "denied", lambda v: v >= 2) == 2
    assert h.stat("cluster.backend.ext_authz.denied") == 2 and h.stat(STATS + "ok") == 0
    assert wait_lines(log, 2) == ["/private 401 UAEX ext_authz_denied"] * 2


def test_errors_status_on_error_and_failure_mode_allow(herald, upstreams, port):
    """A 5xx from the service and a dead authorization cluster are errors:
    status_on_error (by name) without failure_mode_allow; with it the request
    goes on, marked x-envoy-auth-failure-mode-allowed."""
    a, b = upstreams(AuthzService), upstreams(HttpBackend, "b")
    dead = port()
    strict = ext_authz(http_service=http_service(), status_on_error={"code": "ServiceUnavailable"})
    lenient = ext_authz(http_service=http_service(cluster="dead"), failure_mode_allow=True,
                        failure_mode_allow_header_add=True, stat_prefix="lenient")
    lp1, lp2 = port(), port()
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(lp1, hb.hcm("ingress_http", [hb.route("/", "backend")], [strict])),
                      hb.http_listener(lp2, hb.hcm("ingress_http", [hb.route("/", "backend")], [lenient]))],
        "clusters": [hb.http_cluster("backend", [b.port]), hb.http_cluster("authz", [a.port]),
                     hb.http_cluster("dead", [dead], connect_timeout="0.25s")]}}
    h = herald(cfg)
    st, _, body = hb.request(lp1, "/x", headers={"Authorization": "Bearer broken"})
    assert (st, body) == (503, b""), (st, body)
    st, _, got = hb.get_json(lp2, "/y", headers={"Authorization": "Bearer good"})
    assert st == 200 and hb.hget(got["headers"], "x-envoy-auth-failure-mode-allowed") == "true", got
    # the dead cluster, strict: 403 (status_on_error's default)
    strict_dead = ext_authz(http_service=http_service(cluster="dead"))
    lp3 = port()
    cfg["static_resources"]["listeners"] = [
        hb.http_listener(lp3, hb.hcm("ingress_http", [hb.route("/", "backend")], [strict_dead]))]
    h2 = herald(cfg)
    assert hb.request(lp3, "/z")[0] == 403
    assert h.wait_stat(STATS + "error", lambda v: v >= 1) == 1
    assert h.stat(STATS + "lenient.error") == 1 and h.stat(STATS + "lenient.failure_mode_allowed") == 1
    assert h.stat(STATS + "failure_mode_allowed") == 0 and h.stat(STATS + "denied") == 0
    assert h2.wait_stat(STATS + "error", lambda v: v >= 1) == 1
    assert b.served() == 1


def test_timeout_answers_status_on_error(herald, upstreams, port, tmp_path):
    a, b = upstreams(AuthzService), upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    h, lp = start(herald, port, b, a.port, ext_authz(http_service=http_service(timeout="0.2s")), log=log)
    t0 = time.monotonic()
    st, _, _ = hb.request(lp, "/slow", headers={"Authorization": "Bearer good"})
    took = time.monotonic() - t0
    assert st == 403 and took < 0.8, (st, took)
    assert wait_lines(log, 1) == ["/slow 403 UAEX ext_authz_error"]
    time.sleep(0.9)                                 # the late answer finds no check
    assert hb.request(lp, "/fast", headers={"Authorization": "Bearer good"})[0] == 200
    assert h.stat(STATS + "error") == 1 and b.served() == 1


def test_per_route_disabled_and_filter_enabled(herald, upstreams, port):
    """ExtAuthzPerRoute disabled: true on a route (and a virtual host's
    check_settings, accepted) skips the check; filter_enabled 0% counts
    disabled, and deny_at_disable answers status_on_error."""
    a, b = upstreams(AuthzService), upstreams(HttpBackend, "b")
    public = hb.route("/public", "backend")
    public["typed_per_filter_config"] = per_route(disabled=True)
    off = hb.route("/off", "backend")
    off["typed_per_filter_config"] = per_route(check_settings={"context_extensions": {"k": "v"}})
    h, lp = start(herald, port, b, a.port, ext_authz(http_service=http_service()),
                  routes=[public, off, hb.route("/", "backend")],
                  vhost_extra={"typed_per_filter_config": per_route(check_settings={"context_extensions": {"a": "b"}})})
    assert hb.request(lp, "/public/x")[0] == 200
    assert hb.request(lp, "/off")[0] == 401
    assert hb.request(lp, "/other")[0] == 401
    assert len(a.seen()) == 2 and b.served() == 1
    zero = {"default_value": {"numerator": 0, "denominator": "HUNDRED"}}
    _, lp2 = start(herald, port, b, a.port, ext_authz(http_service=http_service(), filter_enabled=zero))
    assert hb.request(lp2, "/unchecked")[0] == 200
    h3, lp3 = start(herald, port, b, a.port, ext_authz(http_service=http_service(), filter_enabled=zero,
                                                        deny_at_disable={"default_value": True,
                                                                         "runtime_key": "authz.deny"}))
    assert hb.request(lp3, "/refused", headers={"Authorization": "Bearer good"})[0] == 403
    assert len(a.seen()) == 2 and b.served() == 2
    assert h3.wait_stat(STATS + "disabled", lambda v: v >= 1) == 1


def test_with_request_body(herald, upstreams, port):
    """with_request_body: the service gets the body (x-envoy-auth-partial-body
    false), the backend all of it; over max_request_bytes a 413 without a
    check, unless a route's check_settings allow a partial message (then the
    first bytes go, marked partial) or turn the body off."""
    a, b = upstreams(AuthzService), upstreams(HttpBackend, "b")
    partial = hb.route("/partial", "backend")
    partial["typed_per_filter_config"] = per_route(check_settings={"with_request_body": {
        "max_request_bytes": 100, "allow_partial_message": True}})
    nobody = hb.route("/nobody", "backend")
    nobody["typed_per_filter_config"] = per_route(check_settings={"disable_request_body_buffering": True})
    f = ext_authz(http_service=http_service(), with_request_body={"max_request_bytes": 100, "pack_as_bytes": True})
    h, lp = start(herald, port, b, a.port, f, routes=[partial, nobody, hb.route("/", "backend")])
    good = {"Authorization": "Bearer good"}
    body = hb.pattern_bytes(60)
    st, _, got = hb.get_json(lp, "/small", method="POST", body=body, headers=good)
    assert st == 200 and got["body_len"] == 60 and got["body_sha256"] == hb.sha256(body), got
    c = a.seen()[-1]
    assert c["body"] == body and hval(c["headers"], "x-envoy-auth-partial-body") == ["false"], c
    assert hval(c["headers"], "content-length") == ["60"], c
    big = hb.pattern_bytes(3000)
    assert hb.request(lp, "/big", method="POST", body=big, headers=good)[0] == 413
    assert len(a.seen()) == 1
    st, _, got = hb.get_json(lp, "/partial", method="POST", body=big, headers=good)
    assert st == 200 and got["body_len"] == 3000 and got["body_sha256"] == hb.sha256(big), got
    c = a.seen()[-1]
    assert c["body"] == big[:100] and hval(c["headers"], "x-envoy-auth-partial-body") == ["true"], c
    st, _, got = hb.get_json(lp, "/nobody", method="POST", body=big, headers=good)
    assert st == 200 and got["body_len"] == 3000, got
    c = a.seen()[-1]
    assert c["body"] == b"" and not hval(c["headers"], "x-envoy-auth-partial-body"), c
    assert h.stat(STATS + "ok") == 3


@needs_curl
def test_http2_clients(herald, upstreams, port, tmp_path):
    a, b = upstreams(AuthzService), upstreams(HttpBackend, "b")
    f = ext_authz(http_service=http_service(authorization_response={
        "allowed_upstream_headers": {"patterns": [{"exact": "x-current-user"}]}}))
    h, lp = start(herald, port, b, a.port, f)
    r = hb.curl("--http2-prior-knowledge", "-H", "authorization: Bearer good", "http://127.0.0.1:%d/h2ok" % lp)
    got = json.loads(r.stdout)
    assert hb.hget(got["headers"], "x-current-user") == "alice", got
    r = hb.curl("--http2-prior-knowledge", "-s", "-o", "-", "-w", "\n%{http_code} %{http_version}",
                "-d", "some body", "http://127.0.0.1:%d/h2no" % lp)
    assert r.stdout.splitlines() == ["go away", "401 2"], r.stdout
    big = tmp_path / "big"
    big.write_bytes(hb.pattern_bytes(2 * 1024 * 1024))
    r = hb.curl("--http2-prior-knowledge", "-H", "authorization: Bearer good", "--data-binary", "@" + str(big),
                "http://127.0.0.1:%d/h2up" % lp)
    got = json.loads(r.stdout)
    assert got["body_len"] == 2 * 1024 * 1024 and got["body_sha256"] == hb.sha256(big.read_bytes()), got
    st = h.stats()
    assert (st.get(STATS + "ok"), st.get(STATS + "denied")) == (2, 1), st
    assert a.seen()[0]["headers"] and hval(a.seen()[0]["headers"], "host") == ["127.0.0.1:%d" % lp]


def test_client_leaving_mid_check(herald, upstreams, port):
    """The check is cancelled with the stream: nothing counted, nothing sent
    upstream, and herald goes on."""
    a, b = upstreams(AuthzService), upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b, a.port, ext_authz(http_service=http_service(timeout="3s")))
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n\r\n")
    deadline = time.monotonic() + 3
    while not a.seen() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert a.seen()
    s.close()
    # an HTTP/2 stream reset mid-check, the same way
    r = hb.curl("--http2-prior-knowledge", "--max-time", "0.3", "-H", "authorization: Bearer good",
                "http://127.0.0.1:%d/slow/h2" % lp)
    assert r.returncode != 0
    time.sleep(1.1)                                 # the answers come to cancelled checks
    assert hb.request(lp, "/after", headers={"Authorization": "Bearer good"})[0] == 200
    st = h.stats()
    assert (st.get(STATS + "ok"), st.get(STATS + "error"), st.get(STATS + "denied")) == (1, 0, 0), st
    assert b.served() == 1


@needs_nginx
def test_nginx_as_the_authorization_service(herald, upstreams, port, tmp_path):
    """nginx decides by the Authorization header; herald forwards the allowed
    request with nginx's x-current-user, and a denial carries nginx's 403,
    its body and its own content-type (once)."""
    b = upstreams(HttpBackend, "b")
    np = port()
    start_nginx(upstreams, tmp_path, """        listen 127.0.0.1:%d;
        location /auth/ {
            if ($http_authorization = "Bearer good") {
                add_header x-current-user alice;
                return 200;
            }
            default_type text/plain;
            return 403 "denied by nginx";
        }
        location / { return 404; }
""" % np, [np])
    f = ext_authz(http_service=http_service(path_prefix="/auth", authorization_response={
        "allowed_upstream_headers": {"patterns": [{"exact": "x-current-user"}]}}))
    h, lp = start(herald, port, b, np, f)
    st, _, got = hb.get_json(lp, "/app/data", headers={"Authorization": "Bearer good"})
    assert st == 200 and hb.hget(got["headers"], "x-current-user") == "alice", got
    assert got["path"] == "/app/data"
    st, hd, body = hb.request(lp, "/app/data", headers={"Authorization": "Bearer evil"})
    assert (st, body) == (403, b"denied by nginx"), (st, body)
    assert hd.get("content-type") == "text/plain", hd
    r = hb.curl("--http2-prior-knowledge", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                "http://127.0.0.1:%d/app/h2" % lp)
    assert r.stdout == "403"
    assert b.served() == 1
    st = h.stats()
    assert (st.get(STATS + "ok"), st.get(STATS + "denied")) == (1, 2), st


def test_bad_configs(tmp_path):
    svc = http_service()
    cases = [
        (ext_authz(grpc_service={"envoy_grpc": {"cluster_name": "authz"}}),
         r"grpc_service \(herald does not implement it yet; herald's ext_authz speaks the HTTP service"),
        (ext_authz(), r"http_service is required"),
        (ext_authz(http_service={"server_uri": {"uri": "x", "cluster": "authz"}}),
         r"http_service\.server_uri: .*timeout"),
        (ext_authz(http_service=svc, status_on_error={"code": 999}),
         r"status_on_error\.code: '999' is not an HTTP status"),
        (ext_authz(http_service=svc, with_request_body={"max_request_bytes": 0}),
         r"with_request_body\.max_request_bytes: max_request_bytes must be greater than 0"),
        (ext_authz(http_service=http_service(authorization_request={"headers_to_add": [
            {"key": "x-a", "value": "%DOWNSTREAM_REMOTE_ADDRESS%"}]})), r"not supported: %OPERATORS%"),
        (ext_authz(http_service=svc, transport_api_version="V2"), r"transport_api_version V2"),
        (ext_authz(http_service=svc, failure_mode_alow=True), r"did you mean 'failure_mode_allow'"),
        (ext_authz(http_service=svc, filter_enabled_metadata={}), r"filter_enabled_metadata \(herald does not"),
        (ext_authz(http_service=svc), r"typed_per_filter_config.*disabled must be true"),
    ]
    for i, (f, want) in enumerate(cases):
        r = hb.route("/", "backend")
        if i == len(cases) - 1:
            r["typed_per_filter_config"] = per_route(disabled=False)
        cfg = {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", [r], [f]))],
            "clusters": [hb.http_cluster("backend", [1]), hb.http_cluster("authz", [1])]}}
        path = tmp_path / "authz.yaml"
        path.write_text(json.dumps(cfg, indent=1))
        res = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert res.returncode == 1, (want, res.stderr)
        assert re.search(r"error: .*authz.yaml:\d+:\d+: .*" + want, res.stderr), (want, res.stderr)


def test_clear_route_cache_routes_by_the_services_headers(herald, upstreams, port):
    """clear_route_cache: a route matching the header the service set is
    found after the check; without it the request keeps its first route."""
    a, b, alice = upstreams(AuthzService), upstreams(HttpBackend, "b"), upstreams(HttpBackend, "alice")
    resp = {"allowed_upstream_headers": {"patterns": [{"exact": "x-current-user"}]}}
    routes = [hb.route(None, "alice_backend", match={"prefix": "/", "headers": [
                  {"name": "x-current-user", "string_match": {"exact": "alice"}}]}),
              hb.route("/", "backend")]
    for clear, want in ((True, "alice"), (False, "b")):
        f = ext_authz(http_service=http_service(authorization_response=resp), clear_route_cache=clear)
        h, lp = start(herald, port, b, a.port, f, routes=routes,
                      extra_clusters=[hb.http_cluster("authz", [a.port]), hb.http_cluster("alice_backend", [alice.port])])
        st, hd, _ = hb.request(lp, "/who", headers={"Authorization": "Bearer good"})
        assert st == 200 and hd.get("x-backend") == want, (clear, st, hd)
