"""Route request_mirror_policies against real backends: each request is
copied, body and trailers included, to the mirror cluster with a "-shadow"
host; the client only ever sees the primary's answer, however slow, broken
or absent the mirror is; runtime_fraction and cluster_header choose."""

import json
import re
import time

import conftest
import http_backends as hb
from helpers import wait_for
from http_backends import HttpBackend


def mirrored(prefix, *policies, **action):
    return hb.route(prefix, "backend", request_mirror_policies=list(policies), **action)


def start(herald, port, b, m_port, routes, **kw):
    return hb.start_proxy(herald, port, [b.port], routes=routes,
                          extra_clusters=[hb.http_cluster("mirror", [m_port])], **kw)


def test_mirror_copies_requests_whole(herald, upstreams, port):
    b = upstreams(HttpBackend, "primary")
    m = upstreams(HttpBackend, "mirror")
    h, lp = start(herald, port, b, m.port, [mirrored("/", {"cluster": "mirror"})])
    body = hb.pattern_bytes(200000)
    status, headers, _ = hb.request(lp, "/up?x=1", method="POST", body=body, headers={"x-test": "yes"})
    assert status == 200 and headers.get("x-backend") == "primary"
    assert wait_for(lambda: m.served() == 1)
    copy, orig = m.requests[0], b.requests[0]
    assert (copy["method"], copy["target"]) == ("POST", "/up?x=1")
    assert copy["body_len"] == len(body) and copy["body_sha256"] == hb.sha256(body), copy
    assert hb.hget(copy["headers"], "x-test") == "yes"
    assert hb.hget(copy["headers"], "host") == "127.0.0.1-shadow:%d" % lp, copy["headers"]
    assert hb.hget(orig["headers"], "host") == "127.0.0.1:%d" % lp
    # chunked with trailers: the copy gets them too
    chunked = (b"POST /chunked HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 5\r\n\r\n")
    assert hb.status_of(hb.raw(lp, chunked)) == 200
    assert wait_for(lambda: m.served() == 2)
    copy = m.requests[1]
    assert copy["body_sha256"] == hb.sha256(b"hello") and hb.hget(copy["trailers"], "x-sum") == "5", copy
    assert hb.hget(copy["headers"], "host") == "example.com-shadow"
    st = h.stats()
    assert st.get("cluster.mirror.upstream_rq_total") == 2 and st.get("cluster.backend.upstream_rq_total") == 2


def test_mirror_never_holds_or_breaks_the_client(herald, upstreams, port):
    b = upstreams(HttpBackend, "primary")
    slow = upstreams(HttpBackend, "slow", delay_ms=1500)
    h, lp = start(herald, port, b, slow.port, [mirrored("/", {"cluster": "mirror"})])
    t0 = time.monotonic()
    status, headers, _ = hb.request(lp, "/fast")
    assert status == 200 and headers.get("x-backend") == "primary" and time.monotonic() - t0 < 1.0
    assert wait_for(lambda: slow.served() == 1)
    # the mirror gone: the client does not notice
    dead = port()
    h2, lp2 = start(herald, port, b, dead, [mirrored("/", {"cluster": "mirror"})])
    assert [hb.request(lp2, "/d%d" % i)[0] for i in range(3)] == [200] * 3
    assert h2.wait_stat("cluster.mirror.upstream_cx_connect_fail", lambda v: v >= 3) >= 3
    # the client leaves before its body is whole: the half copy is dropped, nothing crashes
    hb.raw(lp, b"POST /half HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc", read_until_close=False)
    assert hb.request(lp, "/after")[0] == 200


def test_mirror_fraction_header_and_suffix(herald, upstreams, port):
    b = upstreams(HttpBackend, "primary")
    m = upstreams(HttpBackend, "mirror")
    routes = [mirrored("/never", {"cluster": "mirror",
                                  "runtime_fraction": {"default_value": {"numerator": 0}}}),
              mirrored("/byheader", {"cluster_header": "x-mirror-to"}),
              mirrored("/plain", {"cluster": "mirror", "disable_shadow_host_suffix_append": True}),
              hb.route("/", "backend")]
    h, lp = start(herald, port, b, m.port, routes)
    assert [hb.request(lp, "/never/%d" % i)[0] for i in range(5)] == [200] * 5
    assert hb.request(lp, "/byheader/none")[0] == 200
    assert hb.request(lp, "/byheader/yes", headers={"x-mirror-to": "mirror"})[0] == 200
    assert hb.request(lp, "/plain/x")[0] == 200
    assert wait_for(lambda: m.served() == 2)
    time.sleep(0.3)
    assert [r["path"] for r in m.requests] == ["/byheader/yes", "/plain/x"], m.requests
    assert hb.hget(m.requests[1]["headers"], "host") == "127.0.0.1:%d" % lp


def test_mirror_config_errors(tmp_path):
    cases = [
        ({"runtime_fraction": {"default_value": {"numerator": 5}}},
         r"request_mirror_policies\[0\]: a mirror policy needs cluster or cluster_header"),
        ({"cluster": "nope"}, r"unknown cluster 'nope'|cluster 'nope'"),
    ]
    for policy, want in cases:
        cfg = {"static_resources": {
            "listeners": [hb.http_listener(1, hb.hcm("x", [mirrored("/", policy)]))],
            "clusters": [hb.http_cluster("backend", [1])]}}
        path = tmp_path / "mirror.json"
        path.write_text(json.dumps(cfg))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*mirror.json:\d+:\d+: .*(" + want + ")", r.stderr), (want, r.stderr)


def test_mirror_policies_of_vhost_and_route_config(herald, upstreams, port):
    """request_mirror_policies of a virtual host serve its routes that have
    none; a route's own list replaces it whole; the route configuration's
    serve virtual hosts with none."""
    b = upstreams(HttpBackend, "primary")
    m = upstreams(HttpBackend, "mirror")
    m2 = upstreams(HttpBackend, "mirror2")
    routes = [mirrored("/own", {"cluster": "mirror2", "disable_shadow_host_suffix_append": True}),
              hb.route("/", "backend")]
    h, lp = hb.start_proxy(herald, port, [b.port], routes=routes,
                           extra_clusters=[hb.http_cluster("mirror", [m.port]), hb.http_cluster("mirror2", [m2.port])],
                           vhost_extra={"request_mirror_policies": [{"cluster": "mirror"}]},
                           route_config_extra={"request_mirror_policies": [{"cluster": "mirror2"}]})
    assert hb.request(lp, "/plain")[0] == 200
    assert hb.request(lp, "/own/x")[0] == 200
    assert wait_for(lambda: m.served() == 1 and m2.served() == 1)
    time.sleep(0.2)
    assert [r["target"] for r in m.requests] == ["/plain"]      # the vhost's policy
    assert [r["target"] for r in m2.requests] == ["/own/x"]     # the route's, not merged with the vhost's
    assert hb.hget(m2.requests[0]["headers"], "host") == "127.0.0.1:%d" % lp
    assert hb.hget(m.requests[0]["headers"], "host") == "127.0.0.1-shadow:%d" % lp


def test_route_config_mirror_policy_and_its_cluster_checked(herald, upstreams, port, tmp_path):
    b = upstreams(HttpBackend, "primary")
    m = upstreams(HttpBackend, "mirror")
    h, lp = start(herald, port, b, m.port, [hb.route("/", "backend")],
                  route_config_extra={"request_mirror_policies": [{"cluster": "mirror"}]})
    assert hb.request(lp, "/rc")[0] == 200
    assert wait_for(lambda: m.served() == 1)
    # a vhost-level policy naming an unknown cluster stops start-up, as a route's does
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "backend")],
                                                vhost_extra={"request_mirror_policies": [{"cluster": "nope"}]}))],
        "clusters": [hb.http_cluster("backend", [1])]}}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(cfg))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
    assert r.returncode == 1 and re.search(r"m.json:\d+:\d+: .*request_mirror_policies.*unknown cluster 'nope'",
                                           r.stderr), r.stderr
