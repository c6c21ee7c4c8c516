"""The shipped HTTP configurations: the default etc/herald.yaml (the front
proxy with four built-in demo backends) works end to end with curl,
etc/examples/front-proxy.yaml works with four real backends, and
`herald --mode validate` warns about the walkthrough's shadowed routes."""

import collections
import os
import re
import socket
import subprocess
import sys
import time

import pytest

import conftest
import http_backends as hb
from conftest import PLUGIN_DIR, SRCDIR, run_herald
from http_backends import HttpBackend

DEFAULT = os.path.join(SRCDIR, "etc", "herald.yaml")
FRONT = os.path.join(SRCDIR, "etc", "examples", "front-proxy.yaml")
WALKTHROUGH = os.path.join(SRCDIR, "etc", "examples", "walkthrough-traffic-split.yaml")
DEFAULT_PORTS = (8080, 8081, 8082, 8083, 8084, 10000)


def with_ports(path, mapping):
    """The text of a config with its port_value numbers replaced (mapping:
    old -> new; 9901 becomes the test's admin port), ready for Herald.start
    ("$" escaped for its template)."""
    text = open(path).read().replace("$", "$$")
    for old, new in mapping.items():
        text = re.sub(r"port_value: %d\b" % old, "port_value: %s" % new, text)
    return text.replace("port_value: 9901", "port_value: $admin_port")


def curl_names(*urls):
    """Backend names answered on one curl connection (curl reuses it)."""
    r = hb.curl(*urls)
    assert r.returncode == 0, r.stderr
    return re.findall(r"hello from (app\d)", r.stdout)


def port_free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ------------------------------------------------------------------ validate


def test_http_validate_shipped_configs():
    for path in (DEFAULT, FRONT):
        r = run_herald(["--mode", "validate", "-c", path, "--plugin-dir", PLUGIN_DIR])
        assert r.returncode == 0, "%s:\n%s" % (path, r.stderr)
        warnings = [line for line in (r.stdout + r.stderr).splitlines() if "warning" in line.lower()]
        assert warnings == [], "%s warns:\n%s" % (path, "\n".join(warnings))


def test_http_validate_warns_about_shadowed_walkthrough_routes():
    r = run_herald(["--mode", "validate", "-c", WALKTHROUGH, "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    never = [line for line in out.splitlines() if "never match" in line]
    assert len(never) == 2, "wanted two 'can never match' warnings:\n" + out
    lines = open(WALKTHROUGH).read().splitlines()
    catch_all = next(i + 1 for i, line in enumerate(lines) if re.search(r'prefix: "/"\s*$', line))
    for prefix, warning in zip(("/app1", "/app2"), never):
        line_no = next(i + 1 for i, line in enumerate(lines) if 'prefix: "%s"' % prefix in line)
        assert "warning" in warning.lower(), warning
        assert '"%s"' % prefix in warning or "'%s'" % prefix in warning or prefix in warning, warning
        assert re.search(r"(:%d:|line %d\b)" % (line_no, line_no), warning), \
            "%s: the warning does not name line %d:\n%s" % (prefix, line_no, warning)
        assert "walkthrough-traffic-split.yaml" in warning, warning
        # it says why: the catch-all "/" route before it
        assert re.search(r"(:%d\b|line %d\b|\"/\"|'/')" % (catch_all, catch_all), warning), warning


def test_http_validate_clean_route_order_has_no_warning(tmp_path):
    text = open(WALKTHROUGH).read()
    fixed = re.sub(r'(              - match:\n                  prefix: "/"\n                route:\n'
                   r'                  cluster: allbackend_cluster\n)(.*?)(\n  clusters:)',
                   lambda m: m.group(2).rstrip("\n") + "\n" + m.group(1).rstrip("\n") + m.group(3), text,
                   flags=re.S)
    assert fixed != text
    path = tmp_path / "fixed.yaml"
    path.write_text(fixed)
    r = run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 0, r.stderr
    assert "never match" not in r.stdout + r.stderr


# ------------------------------------------------------------------ the default config


def check_default_front(front, tcp_port, h=None):
    # / : all four, in turn, on one keep-alive connection
    names = curl_names(*["http://127.0.0.1:%d/" % front] * 8)
    assert collections.Counter(names) == {"app1": 2, "app2": 2, "app3": 2, "app4": 2}, names
    assert sorted(names[:4]) == ["app1", "app2", "app3", "app4"], names
    # the README's command: curl's URL glob, four requests on one connection
    names = curl_names("http://127.0.0.1:%d/?n=[1-4]" % front)
    assert sorted(names) == ["app1", "app2", "app3", "app4"], names
    # /app1 and /app2: only their own backend
    assert curl_names(*["http://127.0.0.1:%d/app1" % front] * 3 + ["http://127.0.0.1:%d/app1/x" % front]) \
        == ["app1"] * 4
    assert curl_names(*["http://127.0.0.1:%d/app2/y?z" % front] * 3) == ["app2"] * 3
    # /admin: rbac's 403
    for path in ("/admin", "/admin/stats", "/admin/quitquitquit"):
        r = hb.curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:%d%s" % (front, path))
        assert r.stdout == "403", (path, r.stdout, r.stderr)
    r = hb.curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                "http://127.0.0.1:%d/admin/quitquitquit" % front)
    assert r.stdout == "403"
    # the TCP proxy demo still reaches the admin interface
    r = hb.curl("http://127.0.0.1:%d/ready" % tcp_port)
    assert r.stdout.strip() == "LIVE", r.stdout + r.stderr
    if h is not None:
        assert h.alive()
        st = h.wait_stat("http.ingress_http.downstream_rq_total", lambda v: v >= 23)
        assert st == 23, st
        stats = h.stats()
        assert stats.get("http.ingress_http.downstream_rq_4xx") == 4
        assert stats.get("cluster.app1.upstream_rq_total") == 4
        assert stats.get("cluster.app2.upstream_rq_total") == 3
        assert stats.get("cluster.all_backends.upstream_rq_total") == 12
        for i in (1, 2, 3, 4):
            assert stats.get("http.app%d.downstream_rq_total" % i, 0) >= 3, i
        # the access log lines (stdout, Envoy's default format)
        log = h.log()
        assert re.search(r'"GET /app1 HTTP/1\.1" 200 ', log), h.log_tail()
        assert re.search(r'"GET /admin HTTP/1\.1" 403 ', log), h.log_tail()


def test_http_default_config_end_to_end(herald, port):
    ports = {p: port() for p in DEFAULT_PORTS}
    h = herald(with_ports(DEFAULT, ports), concurrency=2, log_level="info")
    check_default_front(ports[8080], ports[10000], h)


def test_http_default_config_as_shipped(tmp_path):
    """The README's command: herald -c etc/herald.yaml, untouched, on its own ports."""
    if not all(port_free(p) for p in DEFAULT_PORTS + (9901,)):
        pytest.skip("a default port (8080-8084, 9901, 10000) is in use on this machine")
    h = conftest.Herald(str(tmp_path), "shipped")
    h.admin_port = 9901
    try:
        h.logf = open(h.log_path, "wb")
        h.cmd = [conftest.HERALD_BIN, "-c", DEFAULT, "--plugin-dir", PLUGIN_DIR, "--drain-time-s", "1"]
        h.proc = subprocess.Popen(h.cmd, stdout=h.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        h.pid = h.proc.pid
        h.wait_up("ready", 10)
        check_default_front(8080, 10000, h)
        status, body = h.admin_get("/listeners")
        assert status == 200 and "127.0.0.1:8080" in body, body
    finally:
        h.check()


def test_http_admin_not_reachable_from_front(herald, port):
    """The admin interface is only on loopback; through the front proxy,
    /admin... and admin-looking paths never reach it."""
    ports = {p: port() for p in DEFAULT_PORTS}
    h = herald(with_ports(DEFAULT, ports))
    import yaml
    admin = yaml.safe_load(open(DEFAULT))["admin"]["address"]["socket_address"]
    assert admin == {"address": "127.0.0.1", "port_value": 9901}, admin
    # /stats and /quitquitquit on the front are answered by a demo backend, not the admin
    r = hb.curl("-s", "-X", "POST", "http://127.0.0.1:%d/quitquitquit" % ports[8080])
    assert r.stdout.startswith("hello from app"), r.stdout
    r = hb.curl("-s", "http://127.0.0.1:%d/admin/quitquitquit" % ports[8080], "-X", "POST", "-o", "/dev/null",
                "-w", "%{http_code}")
    assert r.stdout == "403"
    assert h.alive()
    assert h.admin_get("/ready")[0] == 200


# ------------------------------------------------------------------ front-proxy.yaml with real backends


def test_http_front_proxy_example_with_real_backends(herald, upstreams, port):
    backends = [upstreams(HttpBackend, "app%d" % i) for i in (1, 2, 3, 4)]
    front = port()
    mapping = {8080: front}
    mapping.update({8081 + i: b.port for i, b in enumerate(backends)})
    h = herald(with_ports(FRONT, mapping))
    seen = []
    for _ in range(8):
        status, headers, body = hb.request(front, "/")
        assert status == 200
        seen.append(headers["x-backend"])
    assert collections.Counter(seen) == {"app1": 2, "app2": 2, "app3": 2, "app4": 2}, seen
    for _ in range(3):
        assert hb.request(front, "/app1/a")[1]["x-backend"] == "app1"
        assert hb.request(front, "/app2/b")[1]["x-backend"] == "app2"
    assert hb.request(front, "/admin")[0] == 403
    assert [b.served() for b in backends] == [5, 5, 2, 2]
    assert h.wait_stat("cluster.all_backends.upstream_rq_total", lambda v: v >= 8) == 8
    # the backends see the client through x-forwarded-for
    hdrs = dict((k.lower(), v) for k, v in backends[0].requests[-1]["headers"])
    assert hdrs.get("x-forwarded-for") == "127.0.0.1"


def test_http_front_proxy_example_with_python_http_server(herald, port, tmp_path):
    """The example's own run instructions: python3 -m http.server backends."""
    ports = [port() for _ in range(4)]
    procs = []
    try:
        for i, p in enumerate(ports):
            d = tmp_path / ("www%d" % (i + 1))
            d.mkdir()
            (d / "whoami").write_text("app%d\n" % (i + 1))
            procs.append(subprocess.Popen([sys.executable, "-m", "http.server", str(p), "--bind", "127.0.0.1"],
                                          cwd=str(d), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in ports:
            assert hb_wait_port(p)
        front = port()
        mapping = {8080: front}
        mapping.update({8081 + i: p for i, p in enumerate(ports)})
        herald(with_ports(FRONT, mapping))
        r = hb.curl(*["http://127.0.0.1:%d/whoami" % front] * 4)
        assert sorted(r.stdout.split()) == ["app1", "app2", "app3", "app4"], r.stdout + r.stderr
        r = hb.curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:%d/app1/" % front)
        assert r.stdout == "404"   # http.server has no /app1/ directory: its 404, proxied
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)


def hb_wait_port(p, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False
