"""The front proxy of issue 3 against four real HTTP backends: routing by
path prefix, round robin over all four, rbac's 403 on /admin, no route,
direct_response and redirects, the x-forwarded-for / x-request-id headers
the backends get, access log lines and the http.* / cluster.* stats."""

import collections
import json
import os
import re
import socket
import time


import conftest
import http_backends as hb
from helpers import wait_lines
from http_backends import HttpBackend

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def backend_of(port, path, **kw):
    status, headers, body = hb.get_json(port, path, **kw)
    assert status == 200, "%s answered %s %r" % (path, status, body)
    assert body and body["backend"] == headers.get("x-backend"), (headers, body)
    return body["backend"], body


def router_stat(h, name, want):
    """The router's http.ingress_http.<name> counter is want (Envoy counts
    no_route, no_cluster, rq_redirect and rq_direct_response there)."""
    v = h.wait_stat("http.ingress_http." + name, lambda v: v >= want)
    assert v == want, "http.ingress_http.%s is %s, want %s" % (name, v, want)


def rbac_denied(h):
    """rbac's denied counter: Envoy names it http.<stat_prefix>.rbac.denied."""
    st = h.stats()
    return st.get("http.ingress_http.rbac.denied")


# ------------------------------------------------------------------ routing


def test_http_prefix_routes_go_to_their_backend(herald, upstreams, port):
    h, fp, (a1, a2, a3, a4) = hb.start_front(herald, upstreams, port)
    for path in ("/app1", "/app1/", "/app1/deep/path?q=1", "/app1x"):
        name, body = backend_of(fp, path)
        assert name == "app1", path
        assert body["target"] == path, "the path reaches the backend unchanged"
    for path in ("/app2", "/app2/index.html"):
        assert backend_of(fp, path)[0] == "app2", path
    assert a3.served() == 0 and a4.served() == 0
    # curl, a real client, sees the same
    r = hb.curl("-i", "http://127.0.0.1:%d/app2/hello" % fp)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("HTTP/1.1 200"), r.stdout[:200]
    assert re.search(r"(?im)^x-backend: app2\r?$", r.stdout)


def test_http_catch_all_round_robins_over_four(herald, upstreams, port):
    h, fp, backends = hb.start_front(herald, upstreams, port)
    seen = [backend_of(fp, "/")[0] for _ in range(12)]
    counts = collections.Counter(seen)
    assert counts == {"app1": 3, "app2": 3, "app3": 3, "app4": 3}, seen
    # strict rotation: every window of four has all four backends
    for i in range(0, 12, 4):
        assert sorted(seen[i:i + 4]) == ["app1", "app2", "app3", "app4"], seen
    # the same over one keep-alive connection (curl reuses it for every URL)
    r = hb.curl(*["http://127.0.0.1:%d/n%d" % (fp, i) for i in range(8)])
    assert r.returncode == 0, r.stderr
    names = re.findall(r'"backend": "(app\d)"', r.stdout)
    assert collections.Counter(names) == {"app1": 2, "app2": 2, "app3": 2, "app4": 2}, names


def test_http_rbac_denies_admin_paths(herald, upstreams, port):
    h, fp, backends = hb.start_front(herald, upstreams, port)
    for path in ("/admin", "/admin/", "/admin/stats?x=1", "/administrator"):
        status, headers, body = hb.request(fp, path)
        assert status == 403, "%s: %s %r" % (path, status, body)
    for m in ("POST", "DELETE", "HEAD"):
        assert hb.request(fp, "/admin/quitquitquit", method=m)[0] == 403, m
    assert sum(b.served() for b in backends) == 0, "a denied request reached a backend"
    # only the path prefix is denied
    assert backend_of(fp, "/app1/admin")[0] == "app1"
    assert backend_of(fp, "/")[0] in ("app1", "app2", "app3", "app4")
    r = hb.curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:%d/admin" % fp)
    assert r.stdout == "403", r.stdout
    assert h.wait_stat("http.ingress_http.downstream_rq_4xx", lambda v: v >= 8) >= 8
    denied = rbac_denied(h)
    assert denied is not None and denied >= 8, "no rbac denied counter: %s" % sorted(
        k for k in h.stats() if "rbac" in k)


def test_http_rbac_stats_under_the_hcm_prefix(herald, upstreams, port):
    """Envoy counts the HTTP rbac filter under http.<hcm stat_prefix>.rbac.*."""
    h, fp, backends = hb.start_front(herald, upstreams, port)
    assert hb.request(fp, "/admin")[0] == 403
    st = h.stats()
    assert st.get("http.ingress_http.rbac.denied") == 1, sorted(k for k in st if "rbac" in k)


def test_http_rbac_per_route(herald, upstreams, port):
    """RBACPerRoute in typed_per_filter_config: a route with {} is not checked
    at all (Envoy's rule), one with its own rbac uses that instead of the
    filter's."""
    b = upstreams(HttpBackend, "b")
    rbac_type = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
    open_route = hb.route("/admin/health", "backend")
    open_route["typed_per_filter_config"] = {"envoy.filters.http.rbac": {"@type": rbac_type}}
    strict = hb.route("/private", "backend")
    strict["typed_per_filter_config"] = {"envoy.filters.http.rbac": {"@type": rbac_type, "rbac": {"rules": {
        "action": "ALLOW", "policies": {"only-x-key": {
            "permissions": [{"any": True}],
            "principals": [{"header": {"name": "x-key", "string_match": {"exact": "s3cret"}}}]}}}}}}
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[open_route, strict, hb.route("/", "backend")],
                           http_filters=[hb.rbac_deny_prefix("/admin")])
    assert hb.request(lp, "/admin/stats")[0] == 403                  # the filter's own policy
    assert hb.request(lp, "/admin/health")[0] == 200                 # off on this route
    assert hb.request(lp, "/private/x")[0] == 403                    # the route's policy ...
    assert hb.request(lp, "/private/x", headers={"x-key": "s3cret"})[0] == 200
    assert hb.request(lp, "/public")[0] == 200                       # ... and only there
    assert b.served() == 3


def test_http_no_route_is_404(herald, upstreams, port):
    b = upstreams(HttpBackend, "only")
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[hb.route("/api", "backend")])
    assert hb.request(lp, "/api/x")[0] == 200
    status, headers, body = hb.request(lp, "/other")
    assert status == 404
    assert b.served() == 1
    router_stat(h, "no_route", 1)


def test_http_unknown_cluster_is_503(herald, upstreams, port):
    """A cluster_header naming no cluster: 503 and http.<prefix>.no_cluster
    (Envoy's cluster_not_found_response_code default)."""
    b = upstreams(HttpBackend, "only")
    routes = [hb.route(None, match={"prefix": "/dyn"}, cluster_header="x-cluster"), hb.route("/", "backend")]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes)
    status, headers, body = hb.request(lp, "/dyn", headers={"x-cluster": "backend"})
    assert status == 200 and headers.get("x-backend") == "only"
    assert hb.request(lp, "/dyn", headers={"x-cluster": "nope"})[0] == 503
    router_stat(h, "no_cluster", 1)


# ------------------------------------------------------------------ local answers


def test_http_direct_response(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    routes = [
        hb.route("/health", direct_response={"status": 200, "body": {"inline_string": "ok\n"}}),
        hb.route("/gone", direct_response={"status": 410}),
        hb.route("/", "backend"),
    ]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes)
    status, headers, body = hb.request(lp, "/health")
    assert (status, body) == (200, b"ok\n")
    assert headers.get("content-length") == "3"
    status, headers, body = hb.request(lp, "/gone")
    assert status == 410 and body == b""
    assert hb.request(lp, "/health", method="HEAD")[:1] == (200,)
    assert b.served() == 0
    r = hb.curl("http://127.0.0.1:%d/health" % lp)
    assert r.stdout == "ok\n"
    router_stat(h, "rq_direct_response", 4)


def test_http_redirects(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    routes = [
        hb.route("/old", redirect={"path_redirect": "/new", "response_code": "PERMANENT_REDIRECT"}),
        hb.route("/secure", redirect={"https_redirect": True}),
        hb.route("/moved/", redirect={"prefix_rewrite": "/here/"}),
        hb.route("/elsewhere", redirect={"host_redirect": "example.org", "strip_query": True}),
        hb.route("/", "backend"),
    ]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes)
    host = "front.test"
    status, headers, _ = hb.request(lp, "/old", headers={"Host": host})
    assert status == 308 and headers["location"] == "http://front.test/new", headers
    status, headers, _ = hb.request(lp, "/secure/x", headers={"Host": host})
    assert status == 301 and headers["location"] == "https://front.test/secure/x", headers
    status, headers, _ = hb.request(lp, "/moved/a/b?c=d", headers={"Host": host})
    assert status == 301 and headers["location"] == "http://front.test/here/a/b?c=d", headers
    status, headers, _ = hb.request(lp, "/elsewhere?q=1", headers={"Host": host})
    assert status == 301 and headers["location"] == "http://example.org/elsewhere", headers
    # curl follows it to the backend
    r = hb.curl("-L", "-s", "-o", "/dev/null", "-w", "%{http_code} %{num_redirects}",
                "http://127.0.0.1:%d/old" % lp)
    assert r.stdout == "200 1", r.stdout
    assert b.requests[-1]["path"] == "/new"
    router_stat(h, "rq_redirect", 5)


# ------------------------------------------------------------------ request headers the backends see


def test_http_x_forwarded_for_and_request_id(herald, upstreams, port):
    h, fp, backends = hb.start_front(herald, upstreams, port, use_remote_address=True)
    _, body = backend_of(fp, "/app1")
    hdrs = dict((k.lower(), v) for k, v in body["headers"])
    assert hdrs.get("x-forwarded-for") == "127.0.0.1", hdrs
    assert hdrs.get("x-forwarded-proto") == "http", hdrs
    assert UUID_RE.match(hdrs.get("x-request-id", "")), hdrs
    # a client-supplied x-forwarded-for gets the peer appended
    _, body = backend_of(fp, "/app1", headers={"X-Forwarded-For": "203.0.113.7"})
    hdrs = dict((k.lower(), v) for k, v in body["headers"])
    assert [p.strip() for p in hdrs["x-forwarded-for"].split(",")] == ["203.0.113.7", "127.0.0.1"], hdrs
    # every request gets its own id
    ids = set()
    for _ in range(5):
        _, body = backend_of(fp, "/app2")
        ids.add(dict((k.lower(), v) for k, v in body["headers"])["x-request-id"])
    assert len(ids) == 5
    # Host and the request line reach the backend as sent
    _, body = backend_of(fp, "/app2/p?x=1", headers={"Host": "example.test"})
    hdrs = dict((k.lower(), v) for k, v in body["headers"])
    assert hdrs["host"] == "example.test" and body["target"] == "/app2/p?x=1"
    assert body["version"] == "HTTP/1.1"


def test_http_hop_by_hop_headers_not_forwarded(herald, upstreams, port):
    h, fp, backends = hb.start_front(herald, upstreams, port)
    _, body = backend_of(fp, "/app1", headers={"Connection": "keep-alive, x-hop", "Keep-Alive": "timeout=5",
                                                "x-hop": "1", "Proxy-Connection": "keep-alive",
                                                "x-end-to-end": "yes"})
    names = [k.lower() for k, _ in body["headers"]]
    assert "keep-alive" not in names and "proxy-connection" not in names, names
    assert "x-end-to-end" in names


# ------------------------------------------------------------------ access log and stats


def test_http_access_log_lines(herald, upstreams, port, tmp_path):
    log = str(tmp_path / "access.log")
    fmt = ("%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% "
           "%BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% \"%REQ(USER-AGENT)%\" "
           "%REQ(X-REQUEST-ID)%\n")
    h, fp, (a1, a2, a3, a4) = hb.start_front(herald, upstreams, port, access_log=[hb.file_access_log(log, fmt)])
    assert hb.request(fp, "/app1/x", headers={"User-Agent": "probe/1"})[0] == 200
    assert hb.request(fp, "/app2/y", method="POST", body=b"12345")[0] == 200
    assert hb.request(fp, "/admin")[0] == 403

    got = wait_lines(log, 3)
    assert got and len(got) == 3, got
    l1, l2, l3 = got
    assert l1.startswith("GET /app1/x HTTP/1.1 200 - 0 "), l1
    assert " app1 127.0.0.1:%d \"probe/1\" " % a1.port in l1, l1
    assert UUID_RE.match(l1.split()[-1]), l1
    assert l2.startswith("POST /app2/y HTTP/1.1 200 - 5 "), l2
    assert " app2 127.0.0.1:%d " % a2.port in l2, l2
    assert l3.startswith("GET /admin HTTP/1.1 403 "), l3
    # Envoy's default format also works (no log_format)
    default_log = str(tmp_path / "default.log")
    h2, fp2, _ = hb.start_front(herald, upstreams, port, access_log=[hb.file_access_log(default_log)])
    assert hb.request(fp2, "/app1/z")[0] == 200
    text = hb_wait(lambda: os.path.exists(default_log) and open(default_log).read())
    assert re.search(r'^\[\S+\] "GET /app1/z HTTP/1.1" 200 - 0 \d+ \d+ ', text or "", re.M), text


def test_http_access_log_upstream_connection(herald, upstreams, port, tmp_path):
    """%UPSTREAM_LOCAL_ADDRESS% is the address the backend saw as its peer;
    attempts are counted across retries; a request that never went upstream
    logs "-" for both."""
    b = upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    fmt = ("%REQ(:PATH)% %RESPONSE_CODE% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %UPSTREAM_LOCAL_ADDRESS% "
           "%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_PORT% %UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% "
           "%UPSTREAM_REMOTE_PORT% %UPSTREAM_PROTOCOL% %CONNECTION_ID% %UPSTREAM_CONNECTION_ID% "
           "%UPSTREAM_CONNECTION_POOL_READY_DURATION%\n")
    retry = {"retry_on": "5xx", "num_retries": 2,
             "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.05s"}}
    routes = [hb.route("/direct", direct_response={"status": 204}),
              hb.route("/retry", "backend", retry_policy=retry), hb.route("/", "backend")]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes, access_log=[hb.file_access_log(log, fmt)])
    status, _, body = hb.get_json(lp, "/one")
    assert status == 200
    peer = body["peer"]
    assert hb.request(lp, "/retry?fail=2&key=k")[0] == 200
    assert hb.request(lp, "/direct")[0] == 204

    got = wait_lines(log, 3)
    assert got and len(got) == 3, got
    one, retried, direct = (l.split() for l in got)
    ready, up_id, down_id = one.pop(), one.pop(), one.pop()
    assert up_id.isdigit() and down_id.isdigit() and up_id != down_id, (down_id, up_id)
    assert one == ["/one", "200", "1", peer, "127.0.0.1", peer.rsplit(":", 1)[1], "127.0.0.1", str(b.port),
                   "HTTP/1.1"], one
    assert ready.isdigit() and int(ready) < 1000, ready
    assert retried[:3] == ["/retry?fail=2&key=k", "200", "3"], retried
    assert re.fullmatch(r"127\.0\.0\.1:\d+", retried[3]) and retried[5] == retried[3].rsplit(":", 1)[1], retried
    assert direct[:2] == ["/direct", "204"] and direct[2:9] == ["-"] * 7, direct
    assert direct[9].isdigit() and direct[10:] == ["-", "-"], direct


MORE_OPS = ("%PATH%|%PATH(NQ)%|%PATH(NQ:PATH)%|%REQ_WITHOUT_QUERY(:PATH)%|%QUERY_PARAM(key)%|"
            "%QUERY_PARAM(nope)%|%RESPONSE_CODE%|%RESPONSE_FLAGS%|%RESPONSE_FLAGS_LONG%|%LOCAL_REPLY_BODY%|"
            "%GRPC_STATUS%|%GRPC_STATUS(SNAKE_STRING)%|%GRPC_STATUS_NUMBER%|%REQUEST_HEADERS_BYTES%|"
            "%RESPONSE_HEADERS_BYTES%|%ACCESS_LOG_TYPE%|%FILTER_CHAIN_NAME%|%UPSTREAM_HOST_NAME%|"
            "%UPSTREAM_HOST_NAME_WITHOUT_PORT%|%REQUEST_TX_DURATION%|%DURATION%|%START_TIME(%s.%3f)%|"
            "%EMIT_TIME(%s.%3f)%|%START_TIME_LOCAL%|%START_TIME_LOCAL(%H)%|%START_TIME(%H)%\n")


def test_http_access_log_more_operators(herald, upstreams, port, tmp_path):
    """The operators that printed "-" before: PATH, QUERY_PARAM, REQ_WITHOUT_QUERY,
    RESPONSE_FLAGS_LONG, LOCAL_REPLY_BODY, GRPC_STATUS, the header byte counts,
    ACCESS_LOG_TYPE, FILTER_CHAIN_NAME, UPSTREAM_HOST_NAME, REQUEST_TX_DURATION,
    EMIT_TIME and START_TIME_LOCAL (herald runs with TZ=UTC-3, i.e. UTC+3)."""
    named = upstreams(HttpBackend, "named")
    plain = upstreams(HttpBackend, "plain")
    dead = port()   # nothing listens there
    log = str(tmp_path / "access.log")
    routes = [hb.route("/plain", "plain"), hb.route("/dead", "dead"), hb.route("/", "named")]
    lp = port()
    listener = hb.http_listener(lp, hb.hcm("ingress_http", routes, access_log=[hb.file_access_log(log, MORE_OPS)]))
    listener["filter_chains"][0]["name"] = "main_chain"
    named_cluster = hb.http_cluster("named", [named.port])
    named_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["hostname"] = "svc.example"
    cfg = {"static_resources": {"listeners": [listener], "clusters": [
        named_cluster, hb.http_cluster("plain", [plain.port]), hb.http_cluster("dead", [dead])]}}
    herald(cfg, env={"TZ": "UTC-3"})

    t0 = time.time()
    pad = "p" * 100
    assert hb.request(lp, "/one?key=abc&x=1")[0] == 200
    assert hb.request(lp, "/one?key=abc&x=1", headers={"x-pad": pad})[0] == 200
    r = hb.curl("-sS", "-D", "-", "-o", "/dev/null", "http://127.0.0.1:%d/plain/p?bytes=10&hdr=x-extra:1234" % lp)
    assert r.returncode == 0, r.stderr
    assert hb.request(lp, "/dead/x")[0] == 503
    grpc = {"content-type": "application/grpc"}
    assert hb.request(lp, "/svc.S/M?hdr=grpc-status:5", method="POST", headers=grpc, body=b"\0\0\0\0\0")[0] == 200
    assert hb.request(lp, "/svc.S/M?status=503", method="POST", headers=grpc, body=b"\0\0\0\0\0")[0] == 503
    t1 = time.time()

    got = wait_lines(log, 6)
    assert got and len(got) == 6, got
    one, padded, curl_line, dead_line, grpc_hdr, grpc_503 = (l.split("|") for l in got)

    assert one[:10] == ["/one?key=abc&x=1", "/one", "/one", "/one", "abc", "-", "200", "-", "-", "-"], one
    assert one[10:13] == ["-", "-", "-"], "not a gRPC request: %r" % one
    # adding one header adds its name and value to REQUEST_HEADERS_BYTES, nothing else
    assert int(padded[13]) - int(one[13]) == len("x-pad") + len(pad), (one[13], padded[13])
    assert one[15:19] == ["DownstreamEnd", "main_chain", "svc.example", "svc.example"], one
    tx, dur = int(one[19]), int(one[20])
    assert 0 <= tx <= dur, (tx, dur)
    start, emit = float(one[21]), float(one[22])
    assert t0 - 1 <= start <= emit <= t1 + 1, (t0, start, emit, t1)
    # local time is UTC+3 for herald: the offset, and the hour three ahead of UTC's
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0300", one[23]), one[23]
    assert int(one[24]) == (int(one[25]) + 3) % 24, one[23:]

    # RESPONSE_HEADERS_BYTES: the fields curl got (names and values) plus ":status" "200"
    fields = [l.split(":", 1) for l in r.stdout.splitlines()[1:] if ":" in l]
    want = sum(len(k) + len(v.strip()) for k, v in fields) + len(":status") + 3
    assert int(curl_line[14]) == want, (curl_line[14], want, r.stdout)
    assert curl_line[17:19] == ["127.0.0.1:%d" % plain.port, "127.0.0.1"], "no DNS name: the address"

    assert dead_line[6:9] == ["503", "UF,URX", "UpstreamConnectionFailure,UpstreamRetryLimitExceeded"] or \
        dead_line[6:9] == ["503", "UF", "UpstreamConnectionFailure"], dead_line
    assert dead_line[9].startswith("upstream connect error or disconnect/reset before headers"), dead_line
    assert dead_line[19] == "-", "the request never went out: no REQUEST_TX_DURATION"

    assert grpc_hdr[10:13] == ["NotFound", "NOT_FOUND", "5"], grpc_hdr
    assert grpc_503[10:13] == ["Unavailable", "UNAVAILABLE", "14"], "inferred from HTTP 503: %r" % grpc_503


WIRE_OPS = ("%DOWNSTREAM_HEADER_BYTES_RECEIVED% %DOWNSTREAM_WIRE_BYTES_RECEIVED% %DOWNSTREAM_HEADER_BYTES_SENT% "
            "%DOWNSTREAM_WIRE_BYTES_SENT% %UPSTREAM_HEADER_BYTES_SENT% %UPSTREAM_WIRE_BYTES_SENT% "
            "%UPSTREAM_HEADER_BYTES_RECEIVED% %UPSTREAM_WIRE_BYTES_RECEIVED% %BYTES_RECEIVED% %BYTES_SENT%\n")


def backend_head_len(backend, nbytes):
    """The head HttpBackend writes for ?bytes=N (see http_backends.serve)."""
    head = ["HTTP/1.1 200 OK", "x-backend: %s" % backend.name,
            "x-body-sha256: %s" % hb.sha256(hb.pattern_bytes(nbytes)), "content-type: application/octet-stream",
            "content-length: %d" % nbytes]
    return len("\r\n".join(head) + "\r\n\r\n")


def test_http_access_log_wire_bytes_http1(herald, upstreams, port, tmp_path):
    """The wire and header byte counts of both connections, against the bytes
    the client wrote and read and the bytes the backend wrote and got: a
    chunked upload (its framing counts, BYTES_RECEIVED does not) and a
    Content-Length download."""
    b = upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    h, lp = hb.start_proxy(herald, port, [b.port], access_log=[hb.file_access_log(log, WIRE_OPS)])
    head = (b"POST /up?bytes=300 HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n"
            b"X-Pad: " + b"q" * 50 + b"\r\n\r\n")
    body = b"a\r\n0123456789\r\n5\r\nabcde\r\n0\r\n\r\n"
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    s.sendall(head + body)
    resp = b""
    while b"\r\n\r\n" not in resp or len(resp) < resp.index(b"\r\n\r\n") + 4 + 300:
        d = s.recv(65536)
        assert d, resp
        resp += d
    s.close()
    resp_head = resp.index(b"\r\n\r\n") + 4
    assert len(resp) == resp_head + 300, resp[:resp_head]

    f = [int(x) for x in wait_lines(log, 1)[0].split()]
    assert f[0] == len(head), (f, len(head))
    assert f[1] == len(head) + len(body), "the chunk framing is on the wire: %r" % f
    assert f[2] == resp_head and f[3] == len(resp), (f, resp_head, len(resp))
    got = b.requests[-1]
    req_line = "%s %s %s\r\n" % (got["method"], got["target"], got["version"])
    up_head = len(req_line) + sum(len(k) + 2 + len(v) + 2 for k, v in got["headers"]) + 2
    assert f[4] == up_head, (f, up_head, got["headers"])
    assert f[5] >= up_head + 15, "the upload went upstream too: %r" % f
    assert f[6] == backend_head_len(b, 300) and f[7] == f[6] + 300, (f, backend_head_len(b, 300))
    assert f[8:] == [15, 300], f


def test_http_access_log_wire_bytes_http2(herald, upstreams, port, tmp_path):
    """Over HTTP/2 (curl, prior knowledge) the downstream counts are the
    stream's frames with their 9-byte headers: what is not headers is the
    body plus 9 bytes per DATA frame (at most 16384 bytes each)."""
    b = upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    h, lp = hb.start_proxy(herald, port, [b.port], access_log=[hb.file_access_log(log, WIRE_OPS)])
    upload = tmp_path / "up.bin"
    upload.write_bytes(b"u" * 1000)
    r = hb.curl("-sS", "--http2-prior-knowledge", "-o", "/dev/null", "--data-binary", "@" + str(upload),
                "http://127.0.0.1:%d/h2?bytes=40000" % lp)
    assert r.returncode == 0, r.stderr
    f = [int(x) for x in wait_lines(log, 1)[0].split()]
    hdr_rx, wire_rx, hdr_tx, wire_tx = f[:4]
    assert hdr_rx > 9 and hdr_tx > 9, f
    frames_rx, extra_rx = divmod(wire_rx - hdr_rx - 1000, 9)
    assert extra_rx == 0 and 1 <= frames_rx <= 2, "1000 body bytes in one or two DATA frames: %r" % f
    frames_tx, extra_tx = divmod(wire_tx - hdr_tx - 40000, 9)
    assert extra_tx == 0 and frames_tx >= 3, "40000 bytes need three DATA frames at least: %r" % f
    assert f[6] == backend_head_len(b, 40000) and f[7] == f[6] + 40000, f
    assert f[8:] == [1000, 40000], f


def test_http_access_log_bad_operator_options(tmp_path):
    """A typo in PATH's or GRPC_STATUS's options stops the config, with where."""
    for fmt, want in (("%PATH(XQ)%", "WQ (with the query) or NQ"), ("%PATH(NQ:ORIGINAL)%", "ORIG, PATH or ORIG_OR_PATH"),
                      ("%GRPC_STATUS(CAMEL)%", "CAMEL_STRING, SNAKE_STRING or NUMBER")):
        cfg = {"static_resources": {"listeners": [hb.http_listener(1, hb.hcm(
            "x", [hb.route("/", "c")], access_log=[hb.file_access_log(str(tmp_path / "a.log"), fmt + "\n")]))],
            "clusters": [hb.http_cluster("c", [1])]}}
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(cfg))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode != 0, (fmt, r.stdout)
        assert want in r.stderr and re.search(r"bad\.json:\d+:\d+: .*access_log", r.stderr), (fmt, r.stderr)


def hb_wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


def test_http_stats_http_and_cluster(herald, upstreams, port):
    h, fp, backends = hb.start_front(herald, upstreams, port)
    for _ in range(3):
        assert hb.request(fp, "/app1")[0] == 200
    assert hb.request(fp, "/app2?status=503")[0] == 503
    assert hb.request(fp, "/app2?status=404")[0] == 404
    assert hb.request(fp, "/admin")[0] == 403
    h.wait_stat("http.ingress_http.downstream_rq_total", lambda v: v >= 6)
    st = h.stats()
    want = {
        "http.ingress_http.downstream_rq_total": 6,
        "http.ingress_http.downstream_rq_http1_total": 6,
        "http.ingress_http.downstream_cx_total": 6,
        "http.ingress_http.downstream_cx_http1_total": 6,
        "http.ingress_http.downstream_rq_2xx": 3,
        "http.ingress_http.downstream_rq_4xx": 2,
        "http.ingress_http.downstream_rq_5xx": 1,
        "http.ingress_http.downstream_rq_completed": 6,
        "cluster.app1.upstream_rq_total": 3,
        "cluster.app1.upstream_rq_completed": 3,
        "cluster.app1.upstream_rq_2xx": 3,
        "cluster.app1.upstream_rq_200": 3,
        "cluster.app2.upstream_rq_total": 2,
        "cluster.app2.upstream_rq_5xx": 1,
        "cluster.app2.upstream_rq_503": 1,
        "cluster.app2.upstream_rq_4xx": 1,
        "cluster.all_backends.upstream_rq_total": 0,
    }
    got = {k: st.get(k) for k in want}
    assert got == want, "differs: %s" % {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert st.get("cluster.app1.upstream_cx_http1_total", 0) >= 1
    assert "http.ingress_http.downstream_cx_active" in st and "cluster.app1.upstream_rq_active" in st
    # the prometheus rendering has them too
    status, prom = h.admin_get("/stats/prometheus")
    assert status == 200 and "http_downstream_rq_total" in prom, prom[:500]


def test_http_access_log_cluster_and_upstream_metadata(herald, upstreams, port, tmp_path):
    """%CLUSTER_METADATA(ns:key)% and %UPSTREAM_METADATA(ns:key)%: the
    cluster's metadata and the metadata of the endpoint that answered (two
    endpoints, round robin, each with its own version), nested keys, non-string
    values as JSON, "-" when absent; and the same operators in a tcp_proxy log."""
    a = upstreams(HttpBackend, "a")
    b = upstreams(HttpBackend, "b")
    log, tlog = str(tmp_path / "access.log"), str(tmp_path / "tcp.log")
    fmt = ("%UPSTREAM_HOST% %CLUSTER_METADATA(acme:team)% %CLUSTER_METADATA(acme:limits)% "
           "%UPSTREAM_METADATA(acme:version)% %UPSTREAM_METADATA(acme:build:sha)% %UPSTREAM_METADATA(acme:nope)% "
           "%UPSTREAM_METADATA(envoy.lb:canary)%\n")
    cluster = hb.http_cluster("backend", [a.port, b.port])
    cluster["metadata"] = {"filter_metadata": {"acme": {"team": "payments", "limits": {"rps": 5, "burst": True}}}}
    eps = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    eps[0]["metadata"] = {"filter_metadata": {"acme": {"version": "1.0", "build": {"sha": "abc123"}},
                                              "envoy.lb": {"canary": False}}}
    eps[1]["metadata"] = {"filter_metadata": {"acme": {"version": 2}}}
    lp, tp = port(), port()
    tcp = {"name": "tcp", "address": hb.sock_addr(tp), "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "tcp", "cluster": "backend", "access_log": [hb.file_access_log(tlog, fmt)]}}]}]}
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(lp, hb.hcm("ingress_http", [hb.route("/", "backend")],
                                                   access_log=[hb.file_access_log(log, fmt)])), tcp],
        "clusters": [cluster]}}
    herald(cfg)
    assert [hb.request(lp, "/x%d" % i)[0] for i in range(2)] == [200, 200]
    lines = sorted(wait_lines(log, 2))
    want = sorted(["127.0.0.1:%d payments {\"rps\":5,\"burst\":true} 1.0 abc123 - false" % a.port,
                   "127.0.0.1:%d payments {\"rps\":5,\"burst\":true} 2 - - -" % b.port])
    assert lines == want, lines
    # tcp_proxy: one connection, one line, from whichever endpoint it reached
    s = socket.create_connection(("127.0.0.1", tp), timeout=5)
    s.sendall(b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
    tline = wait_lines(tlog, 1)[0]
    assert tline in want, (tline, want)
