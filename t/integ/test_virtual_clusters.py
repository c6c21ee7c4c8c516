"""VirtualHost.virtual_clusters: requests classed by their headers (:path,
:method...) into virtual clusters with Envoy's stats under
vhost.<virtual host>.vcluster.<name>. (counted by the router: totals, codes,
times, retries, timeouts), the catch-all "other", %VIRTUAL_CLUSTER_NAME% in
the access log, and clear errors for bad entries."""

import json
import re

import conftest
import http_backends as hb
from helpers import wait_lines
from http_backends import HttpBackend

LOG_FMT = "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %VIRTUAL_CLUSTER_NAME%\n"
VCS = [
    {"name": "api_reads", "headers": [{"name": ":path", "string_match": {"prefix": "/api/"}},
                                      {"name": ":method", "string_match": {"exact": "GET"}}]},
    {"name": "writes", "headers": [{"name": ":method", "string_match": {"exact": "POST"}}]},
]


def start(herald, port, b, log, routes=None):
    lp = port()
    routes = routes or [hb.route("/static", direct_response={"status": 200, "body": {"inline_string": "s"}}),
                        hb.route("/", "backend")]
    lst = hb.http_listener(lp, hb.hcm("ingress_http", routes, vhost_extra={"name": "app", "virtual_clusters": VCS},
                                      access_log=[hb.file_access_log(log, LOG_FMT)]), "proxy")
    cfg = {"static_resources": {"listeners": [lst], "clusters": [hb.http_cluster("backend", [b.port])]}}
    return herald(cfg), lp


def vstats(h, name):
    p = "vhost.app.vcluster.%s." % name
    return {k[len(p):]: v for k, v in h.stats().items() if k.startswith(p)}


def test_virtual_clusters_class_requests(herald, upstreams, port, tmp_path):
    b = upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    h, lp = start(herald, port, b, log)
    assert hb.request(lp, "/api/a")[0] == 200
    assert hb.request(lp, "/api/b?status=503")[0] == 503
    assert hb.request(lp, "/api/c", method="POST", body=b"x")[0] == 200
    assert hb.request(lp, "/elsewhere")[0] == 200
    assert hb.request(lp, "/static")[0] == 200       # a direct response: no upstream, no virtual cluster
    lines = wait_lines(log, 5)
    assert lines == ["GET /api/a 200 api_reads", "GET /api/b?status=503 503 api_reads", "POST /api/c 200 writes",
                     "GET /elsewhere 200 other", "GET /static 200 -"], lines
    reads = vstats(h, "api_reads")
    assert reads["upstream_rq_total"] == 2 and reads["upstream_rq_completed"] == 2, reads
    assert (reads["upstream_rq_200"], reads["upstream_rq_503"], reads["upstream_rq_2xx"], reads["upstream_rq_5xx"]) \
        == (1, 1, 1, 1), reads
    assert vstats(h, "writes")["upstream_rq_total"] == 1
    assert vstats(h, "other")["upstream_rq_200"] == 1
    # the cluster's own stats count all three upstream answers as before
    assert h.stat("cluster.backend.upstream_rq_200") == 3
    status, text = h.admin_get("/stats")
    assert re.search(r"^vhost\.app\.vcluster\.api_reads\.upstream_rq_time: P0\(", text, re.M), text[:2000]


def test_virtual_clusters_retries_and_timeouts(herald, upstreams, port, tmp_path):
    b = upstreams(HttpBackend, "b")
    log = str(tmp_path / "access.log")
    routes = [hb.route("/api/slow", "backend", timeout="0.3s"),
              hb.route("/", "backend", retry_policy={"retry_on": "5xx", "num_retries": 2})]
    h, lp = start(herald, port, b, log, routes)
    assert hb.request(lp, "/api/flaky?fail=1&key=k1")[0] == 200
    assert hb.request(lp, "/api/slow?delay_ms=1500", timeout=5)[0] == 504
    st = vstats(h, "api_reads")
    assert (st["upstream_rq_total"], st["upstream_rq_retry"], st["upstream_rq_retry_success"]) == (2, 1, 1), st
    assert (st["upstream_rq_timeout"], st["upstream_rq_504"]) == (1, 1), st
    assert "upstream_rq_per_try_timeout" not in st, st   # not one of Envoy's virtual cluster stats
    assert h.stat("cluster.backend.upstream_rq_retry") == 1


def test_virtual_clusters_bad_configs(tmp_path):
    cases = [
        ([{"name": "x"}], r"virtual_clusters\[0\]: missing required field 'headers'"),
        ([{"headers": [{"name": ":method", "string_match": {"exact": "GET"}}]}], r"virtual_clusters\[0\]: missing required field 'name'"),
        ([{"name": "x", "pattern": "^/api"}], r"pattern: .*v2 field"),
        ([{"name": "x", "headers": [{"name": ":path", "string_match": {"safe_regex": {"regex": "("}}}]}],
         r"regex"),
    ]
    for vcs, want in cases:
        cfg = {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "backend")],
                                                     vhost_extra={"virtual_clusters": vcs}))],
            "clusters": [hb.http_cluster("backend", [1])]}}
        path = tmp_path / "vc.json"
        path.write_text(json.dumps(cfg))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*vc.json:\d+:\d+: .*" + want, r.stderr), (want, r.stderr)
