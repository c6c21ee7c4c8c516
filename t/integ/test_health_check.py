"""Active health checking (cluster health_checks), the LB's use of host
health (panic mode included), /clusters health flags, the
cluster.<name>.health_check.* stats and the envoy.filters.http.health_check
filter with admin /healthcheck/fail and /healthcheck/ok."""

import http.server
import json
import threading
import time


import helpers
from http_backends import HttpBackend, hcm, http_cluster, http_listener, request, route, sock_addr

HC_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck"

INTERVAL = 0.1   # seconds, every check interval in these tests


class HealthBackend:
    """An HTTP/1.1 server: GET /healthz answers 200 while .healthy, else 503;
    anything else answers 200 with body = name (and counts it in .hits)."""

    def __init__(self, name):
        self.name = name
        self.healthy = True
        self.hits = 0
        self.checks = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path == "/healthz":
                    with outer.lock:
                        outer.checks += 1
                        self.check_headers = dict(self.headers)
                        outer.last_check_headers = {k.lower(): v for k, v in self.headers.items()}
                    status = 200 if outer.healthy else 503
                    body = b"ok" if status == 200 else b"down"
                else:
                    with outer.lock:
                        outer.hits += 1
                    status, body = 200, outer.name.encode()
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.last_check_headers = {}
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class PingServer(helpers.TcpServer):
    """Answers every "PING" it reads with self.reply (b"PONG")."""

    def __init__(self):
        self.reply = b"PONG"
        super().__init__()

    def handle(self, c):
        buf = b""
        while True:
            data = c.recv(4096)
            if not data:
                return
            buf += data
            while b"PING" in buf:
                buf = buf.split(b"PING", 1)[1]
                c.sendall(self.reply)


def http_hc(path="/healthz", unhealthy=2, healthy=2, **http_extra):
    hc = {"path": path}
    hc.update(http_extra)
    return {"timeout": "0.5s", "interval": "%gs" % INTERVAL, "no_traffic_interval": "%gs" % INTERVAL,
            "unhealthy_threshold": unhealthy, "healthy_threshold": healthy, "http_health_check": hc}


def proxy_config(lp, ports, hc, filters=(), name="backend", **cluster_extra):
    return {"static_resources": {
        "listeners": [http_listener(lp, hcm("ingress", [route("/", name)], list(filters)), "proxy")],
        "clusters": [http_cluster(name, ports, health_checks=[hc], **cluster_extra)]}}


def host_flags(h, cluster="backend"):
    """{"ip:port": health_flags} from /clusters."""
    status, body = h.admin_get("/clusters")
    assert status == 200
    out = {}
    for line in body.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "health_flags":
            out[parts[1]] = parts[3]
    return out


def wait_flags(h, want, cluster="backend", timeout=5.0):
    """Waits until /clusters shows exactly want ({addr: flags}); returns the last flags seen."""
    helpers.wait_for(lambda: host_flags(h, cluster) == want, timeout=timeout)
    return host_flags(h, cluster)


def addr(port):
    return "127.0.0.1:%d" % port


def spread(lp, n=20):
    """n requests through the proxy: {body: count}."""
    seen = {}
    for _ in range(n):
        status, _, body = request(lp, "/x")
        assert status == 200, (status, body)
        seen[body.decode()] = seen.get(body.decode(), 0) + 1
    return seen


def test_http_check_takes_a_failing_host_out_and_back(herald, upstreams, port):
    a, b = upstreams(HealthBackend, "a"), upstreams(HealthBackend, "b")
    lp = port()
    h = herald(proxy_config(lp, [a.port, b.port], http_hc(
        host="hc.example", request_headers_to_add=[
            {"header": {"key": "x-hc", "value": "1"}},
            {"header": {"key": "user-agent", "value": "no"}, "append_action": "ADD_IF_ABSENT"},
            {"header": {"key": "x-absent", "value": "no"}, "append_action": "OVERWRITE_IF_EXISTS"},
            {"header": {"key": "x-empty", "value": ""}}])), concurrency=3)
    assert wait_flags(h, {addr(a.port): "healthy", addr(b.port): "healthy"}) == \
        {addr(a.port): "healthy", addr(b.port): "healthy"}
    assert b.last_check_headers.get("host") == "hc.example"
    assert b.last_check_headers.get("user-agent") == "Envoy/HC"
    assert b.last_check_headers.get("x-hc") == "1"
    assert "x-absent" not in b.last_check_headers and "x-empty" not in b.last_check_headers
    assert set(spread(lp)) == {"a", "b"}

    # a 503 is not an expected status: out at the first failed check (Envoy's "active" failure)
    t0 = time.monotonic()
    b.healthy = False
    flags = wait_flags(h, {addr(a.port): "healthy", addr(b.port): "/failed_active_hc"}, timeout=3)
    took = time.monotonic() - t0
    assert flags[addr(b.port)] == "/failed_active_hc", flags
    assert took < INTERVAL * 2 + 1.0, took
    assert spread(lp) == {"a": 20}

    status, body = h.admin_get("/clusters?format=json")
    assert status == 200
    hosts = {"%s:%d" % (x["address"]["socket_address"]["address"], x["address"]["socket_address"]["port_value"]):
             x for x in json.loads(body)["cluster_statuses"][0]["host_statuses"]}
    assert hosts[addr(b.port)]["health_status"]["failed_active_health_check"] is True
    assert hosts[addr(a.port)]["health_status"]["failed_active_health_check"] is False
    assert hosts[addr(a.port)]["health_status"]["eds_health_status"] == "HEALTHY"

    s = h.stats()
    assert s["cluster.backend.health_check.attempt"] > 2
    assert s["cluster.backend.health_check.success"] > 2
    assert s["cluster.backend.health_check.failure"] >= 1
    assert s["cluster.backend.health_check.network_failure"] == 0
    assert s["cluster.backend.health_check.healthy"] == 1
    assert s["cluster.backend.membership_healthy"] == 1
    for name in ("passive_failure", "verify_cluster", "degraded"):
        assert "cluster.backend.health_check." + name in s

    # back after healthy_threshold (2) passing checks
    b.healthy = True
    flags = wait_flags(h, {addr(a.port): "healthy", addr(b.port): "healthy"}, timeout=3)
    assert flags[addr(b.port)] == "healthy"
    assert set(spread(lp)) == {"a", "b"}
    assert h.stat("cluster.backend.health_check.healthy") == 2


def test_unreachable_host_and_panic_mode(herald, upstreams, port):
    """A host nobody listens on fails by network failures; with one of two
    hosts healthy (50%, not below the threshold) there is no panic; with the
    only host of a cluster down, traffic still goes to it in panic mode."""
    a = upstreams(HealthBackend, "a")
    dead = port()
    lp = port()
    h = herald(proxy_config(lp, [a.port, dead], http_hc(unhealthy=2)))
    flags = wait_flags(h, {addr(a.port): "healthy", addr(dead): "/failed_active_hc"})
    assert flags == {addr(a.port): "healthy", addr(dead): "/failed_active_hc"}
    assert h.wait_stat("cluster.backend.health_check.network_failure", lambda v: v >= 1) >= 1
    assert spread(lp, 10) == {"a": 10}
    assert h.stat("cluster.backend.lb_healthy_panic") == 0

    # only host unhealthy: panic, requests still routed to it
    lp2 = port()
    h2 = herald(proxy_config(lp2, [a.port], http_hc(unhealthy=1, healthy=1)))
    wait_flags(h2, {addr(a.port): "healthy"})
    a.healthy = False
    assert wait_flags(h2, {addr(a.port): "/failed_active_hc"}) == {addr(a.port): "/failed_active_hc"}
    assert spread(lp2, 5) == {"a": 5}
    assert h2.wait_stat("cluster.backend.lb_healthy_panic", lambda v: v >= 5) >= 5


def test_pending_until_first_check(herald, upstreams, port):
    """Before its first check a host shows /failed_active_hc/pending_active_hc."""
    upstreams(HealthBackend, "a")
    lp = port()
    hc = http_hc()
    hc["initial_jitter"] = "0s"
    hc["interval"] = "30s"
    hc["no_traffic_interval"] = "30s"
    # a timeout longer than the test: the first check never answers
    blackhole = helpers.NeverReadServer()
    try:
        hc["timeout"] = "20s"
        h = herald(proxy_config(lp, [blackhole.port], hc))
        flags = host_flags(h)
        assert flags == {addr(blackhole.port): "/failed_active_hc/pending_active_hc"}, flags
        status, body = h.admin_get("/clusters?format=json")
        hs = json.loads(body)["cluster_statuses"][0]["host_statuses"][0]["health_status"]
        assert hs["pending_active_hc"] is True and hs["failed_active_health_check"] is True
    finally:
        blackhole.stop()


def test_tcp_check_send_receive(herald, upstreams, port):
    srv = upstreams(PingServer)
    lp = port()
    hc = {"timeout": "0.3s", "interval": "%gs" % INTERVAL, "no_traffic_interval": "%gs" % INTERVAL,
          "unhealthy_threshold": 2, "healthy_threshold": 1,
          "tcp_health_check": {"send": {"text": "50494e47"}, "receive": [{"text": "504F"}, {"text": "4E47"}]}}
    cfg = {"static_resources": {
        "listeners": [helpers.tcp_listener(lp, "backend")],
        "clusters": [helpers.cluster("backend", [("127.0.0.1", srv.port)], health_checks=[hc])]}}
    # JSON: a plain YAML scalar like 50494e47 would read as a number
    h = herald(cfg, fmt="json")
    assert wait_flags(h, {addr(srv.port): "healthy"}) == {addr(srv.port): "healthy"}
    # a wrong answer never matches: the checks time out (network failures) until unhealthy
    srv.reply = b"NOPE"
    assert wait_flags(h, {addr(srv.port): "/failed_active_hc"}) == {addr(srv.port): "/failed_active_hc"}
    assert h.stat("cluster.backend.health_check.network_failure") >= 2
    srv.reply = b"PONG"
    assert wait_flags(h, {addr(srv.port): "healthy"}) == {addr(srv.port): "healthy"}


def test_tcp_connect_only_check(herald, upstreams, port):
    srv = upstreams(helpers.EchoServer)
    dead = port()
    lp = port()
    hc = {"timeout": "0.3s", "interval": "%gs" % INTERVAL, "no_traffic_interval": "%gs" % INTERVAL,
          "unhealthy_threshold": 1, "healthy_threshold": 1, "tcp_health_check": {}}
    cfg = {"static_resources": {
        "listeners": [helpers.tcp_listener(lp, "backend")],
        "clusters": [helpers.cluster("backend", [("127.0.0.1", srv.port), ("127.0.0.1", dead)], health_checks=[hc])]}}
    h = herald(cfg)
    want = {addr(srv.port): "healthy", addr(dead): "/failed_active_hc"}
    assert wait_flags(h, want) == want


def h2_backend_config(lp):
    """A herald listener speaking h2c (codec AUTO) answering /healthz 200 and /bad 503 itself."""
    routes = [route("/healthz", direct_response={"status": 200, "body": {"inline_string": "ok"}}),
              route("/bad", direct_response={"status": 503})]
    return {"static_resources": {"listeners": [http_listener(lp, hcm("h2back", routes))], "clusters": []}}


def test_http2_check(herald, port):
    bp = port()
    back = herald(h2_backend_config(bp))
    lp = port()
    cfg = {"static_resources": {
        "listeners": [http_listener(lp, hcm("ingress", [route("/", "good")]), "proxy")],
        "clusters": [http_cluster("good", [bp], health_checks=[http_hc(codec_client_type="HTTP2")]),
                     http_cluster("bad", [bp], health_checks=[http_hc("/bad", codec_client_type="HTTP2")])]}}
    h = herald(cfg)
    assert wait_flags(h, {addr(bp): "healthy"}, "good") == {addr(bp): "healthy"}
    assert wait_flags(h, {addr(bp): "/failed_active_hc"}, "bad") == {addr(bp): "/failed_active_hc"}
    # the checks reached the back as HTTP/2
    assert back.wait_stat("http.h2back.downstream_rq_http2_total", lambda v: v >= 3) >= 3
    assert h.stat("cluster.good.health_check.success") >= 2


def hc_filter(pass_through, path="/healthz"):
    return {"name": "envoy.filters.http.health_check", "typed_config": {
        "@type": HC_FILTER_TYPE, "pass_through_mode": pass_through,
        "headers": [{"name": ":path", "string_match": {"exact": path}}]}}


def test_health_check_filter(herald, upstreams, port):
    be = upstreams(HttpBackend, "app")
    lp, lp2 = port(), port()
    cfg = {"static_resources": {
        "listeners": [http_listener(lp, hcm("hc", [route("/", "app")], [hc_filter(False)]), "own"),
                      http_listener(lp2, hcm("hcpass", [route("/", "app")], [hc_filter(True)]), "pass")],
        "clusters": [http_cluster("app", [be.port])]}}
    h = herald(cfg)
    status, headers, _ = request(lp, "/healthz")
    assert status == 200 and "x-envoy-immediate-health-check-fail" not in headers
    status, headers, _ = request(lp, "/other")
    assert status == 200 and headers.get("x-backend") == "app"
    served = len(be.requests)
    status, headers, _ = request(lp2, "/healthz")
    assert status == 200 and headers.get("x-backend") == "app"   # pass-through reached the backend
    assert len(be.requests) == served + 1

    assert h.admin_post("/healthcheck/fail")[0] == 200
    status, headers, _ = request(lp, "/healthz")
    assert status == 503 and headers.get("x-envoy-immediate-health-check-fail") == "true"
    status, headers, _ = request(lp2, "/healthz")
    assert status == 503 and headers.get("x-envoy-immediate-health-check-fail") == "true"
    assert len(be.requests) == served + 1                          # not forwarded while failing
    status, headers, _ = request(lp, "/other")                     # normal traffic still served, flagged
    assert status == 200 and headers.get("x-envoy-immediate-health-check-fail") == "true"

    assert h.admin_post("/healthcheck/ok")[0] == 200
    status, headers, _ = request(lp, "/healthz")
    assert status == 200 and "x-envoy-immediate-health-check-fail" not in headers


def test_herald_in_front_of_herald(herald, upstreams, port):
    """The front checks each back's health_check filter; /healthcheck/fail on
    one back takes it out of the front's rotation, /healthcheck/ok brings it back."""
    app1, app2 = upstreams(HttpBackend, "app1"), upstreams(HttpBackend, "app2")
    backs, bports = [], []
    for app in (app1, app2):
        bp = port()
        backs.append(herald({"static_resources": {
            "listeners": [http_listener(bp, hcm("back", [route("/", "app")], [hc_filter(False)]))],
            "clusters": [http_cluster("app", [app.port])]}}))
        bports.append(bp)
    lp = port()
    front = herald(proxy_config(lp, bports, http_hc(unhealthy=2, healthy=1)))
    both = {addr(bports[0]): "healthy", addr(bports[1]): "healthy"}
    assert wait_flags(front, both) == both

    def who(n=10):
        seen = {}
        for _ in range(n):
            status, headers, _ = request(lp, "/x")
            assert status == 200
            seen[headers.get("x-backend")] = seen.get(headers.get("x-backend"), 0) + 1
        return seen

    assert set(who()) == {"app1", "app2"}
    assert backs[0].admin_post("/healthcheck/fail")[0] == 200
    want = {addr(bports[0]): "/failed_active_hc", addr(bports[1]): "healthy"}
    assert wait_flags(front, want, timeout=3) == want
    assert who() == {"app2": 10}
    assert backs[0].admin_post("/healthcheck/ok")[0] == 200
    assert wait_flags(front, both, timeout=3) == both
    assert set(who()) == {"app1", "app2"}


def test_validate_health_check_config(herald, tmp_path):
    """--mode validate accepts a full health check and refuses what herald does not do."""
    from conftest import run_herald
    good = {"static_resources": {"clusters": [http_cluster("c", [1], health_checks=[{
        "timeout": "1s", "interval": "5s", "initial_jitter": "1s", "interval_jitter": "1s",
        "interval_jitter_percent": 10, "unhealthy_threshold": 3, "healthy_threshold": 2,
        "reuse_connection": False, "no_traffic_interval": "60s", "no_traffic_healthy_interval": "60s",
        "unhealthy_interval": "10s", "unhealthy_edge_interval": "2s", "healthy_edge_interval": "2s",
        "always_log_health_check_failures": True,
        "http_health_check": {"host": "x", "path": "/h", "expected_statuses": [{"start": 200, "end": 300}],
                              "retriable_statuses": [{"start": 503, "end": 504}],
                              "request_headers_to_add": [{"header": {"key": "a", "value": "b"},
                                                          "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
                              "request_headers_to_remove": ["x-y"], "codec_client_type": "HTTP2",
                              "method": "HEAD"}}],
        common_lb_config={"healthy_panic_threshold": {"value": 25}})]}}
    p = tmp_path / "good.json"
    p.write_text(json.dumps(good))
    r = run_herald(["--mode", "validate", "-c", str(p)])
    assert r.returncode == 0, r.stderr
    bad = json.loads(json.dumps(good))
    bad["static_resources"]["clusters"][0]["health_checks"][0]["event_log_path"] = "/tmp/x"
    p.write_text(json.dumps(bad))
    r = run_herald(["--mode", "validate", "-c", str(p)])
    assert r.returncode == 1 and "event_log_path" in r.stderr and "not supported" in r.stderr, r.stderr


def test_endpoint_health_check_port(herald, upstreams, port):
    """Endpoint.health_check_config.port_value: the checks go to another port."""
    app, hc_target = upstreams(HealthBackend, "app"), upstreams(HealthBackend, "hc")
    hc_target.healthy = False
    lp = port()
    cfg = proxy_config(lp, [app.port], http_hc(unhealthy=1, healthy=1))
    ep = cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    ep["health_check_config"] = {"port_value": hc_target.port}
    h = herald(cfg)
    assert wait_flags(h, {addr(app.port): "/failed_active_hc"}) == {addr(app.port): "/failed_active_hc"}
    assert app.checks == 0 and hc_target.checks >= 1
    hc_target.healthy = True
    assert wait_flags(h, {addr(app.port): "healthy"}) == {addr(app.port): "healthy"}


def test_endpoint_health_check_address(herald, upstreams, port):
    """Endpoint.health_check_config.address (with port_value overriding its port)."""
    app, hc_target = upstreams(HealthBackend, "app"), upstreams(HealthBackend, "hc")
    hc_target.healthy = False
    lp = port()
    cfg = proxy_config(lp, [app.port], http_hc(unhealthy=1, healthy=1))
    ep = cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    ep["health_check_config"] = {"address": sock_addr(port()), "port_value": hc_target.port}
    h = herald(cfg)
    assert wait_flags(h, {addr(app.port): "/failed_active_hc"}) == {addr(app.port): "/failed_active_hc"}
    assert app.checks == 0 and hc_target.checks >= 1


def test_strict_dns_hosts_get_checked(herald, upstreams, port):
    """Hosts that DNS brings in later are checked too."""
    a = upstreams(HealthBackend, "a")
    lp = port()
    cfg = proxy_config(lp, [a.port], http_hc(unhealthy=1, healthy=1), type="STRICT_DNS",
                       dns_lookup_family="V4_ONLY")
    ep = cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    ep["address"]["socket_address"]["address"] = "localhost"
    h = herald(cfg)
    assert wait_flags(h, {addr(a.port): "healthy"}) == {addr(a.port): "healthy"}
    assert a.checks >= 1
    a.healthy = False
    assert wait_flags(h, {addr(a.port): "/failed_active_hc"}) == {addr(a.port): "/failed_active_hc"}
