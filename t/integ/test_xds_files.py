"""Filesystem xDS: dynamic_resources.lds_config / cds_config with a
path_config_source. Listeners and clusters come from DiscoveryResponse files
and herald reloads when one changes, whatever the way it changed (an atomic
move, an edit in place, a Kubernetes ConfigMap symlink swap); a bad file is
refused with file:line:col and the old config keeps serving (Envoy's users
lose edits that are not atomic moves: envoyproxy/envoy#35888, #10979)."""

import json
import os
import re

import pytest

from conftest import PLUGIN_DIR, run_herald
from http_backends import HttpBackend, hcm, request, route
from reload_util import Reloads, set_subreaper

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


@pytest.fixture(autouse=True, scope="module")
def subreaper():
    """Reloaded heralds are re-parented to pytest when the old one exits."""
    assert set_subreaper(True)
    yield
    set_subreaper(False)


def lds(lp, routes):
    return {"version_info": "1", "resources": [{
        "@type": LISTENER, "name": "front",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": lp}},
        "filter_chains": [{"filters": [hcm("fs", routes)]}]}]}


def cds(name, backend_port):
    return {"resources": [{
        "@type": CLUSTER, "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": backend_port}}}}]}]}}]}


def write(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f)


def replace(path, doc):
    """An atomic move, as Envoy wants it."""
    write(path + ".tmp", doc)
    os.replace(path + ".tmp", path)


def bootstrap(lds_path, cds_path, extra=None):
    b = {"node": {"id": "fs-test", "cluster": "test"},
         "dynamic_resources": {"lds_config": {"path_config_source": {"path": lds_path},
                                              "resource_api_version": "V3"},
                               "cds_config": {"path_config_source": {"path": cds_path}}}}
    b.update(extra or {})
    return b


def backend_of(lp, path="/"):
    status, headers, body = request(lp, path)
    return status, headers.get("x-backend"), body


def test_listeners_and_clusters_from_files_follow_every_change(herald, upstreams, port, tmp_path):
    one, two = upstreams(HttpBackend, "one"), upstreams(HttpBackend, "two")
    lp = port()
    # the LDS file as a Kubernetes ConfigMap mounts it: lds.yaml -> ..data/lds.yaml, ..data -> v1
    for v in ("v1", "v2"):
        os.mkdir(tmp_path / v)
    write(str(tmp_path / "v1" / "lds.yaml"), lds(lp, [route("/", "app")]))
    os.symlink("v1", str(tmp_path / "..data"))
    os.symlink("..data/lds.yaml", str(tmp_path / "lds.yaml"))
    lds_path, cds_path = str(tmp_path / "lds.yaml"), str(tmp_path / "cds.yaml")
    write(cds_path, cds("app", one.port))
    h = herald(bootstrap(lds_path, cds_path), drain_time=1, args=["--parent-shutdown-time-s", "2"])
    r = Reloads(h)
    try:
        assert backend_of(lp)[:2] == (200, "one")

        # an atomic move
        before = r.counts()
        replace(cds_path, cds("app", two.port))
        assert r.wait_outcome(before), h.log_tail()
        assert backend_of(lp)[:2] == (200, "two")
        assert "%s changed: reloading" % cds_path in h.log()

        # an edit in place (what Envoy misses)
        before = r.counts()
        write(cds_path, cds("app", one.port))
        assert r.wait_outcome(before), h.log_tail()
        assert backend_of(lp)[:2] == (200, "one")

        # a ConfigMap update: a new directory, then the ..data symlink swapped atomically
        direct = route("/", None, direct_response={"status": 200, "body": {"inline_string": "from v2\n"}})
        write(str(tmp_path / "v2" / "lds.yaml"), lds(lp, [direct]))
        before = r.counts()
        os.symlink("v2", str(tmp_path / "..data.tmp"))
        os.replace(str(tmp_path / "..data.tmp"), str(tmp_path / "..data"))
        assert r.wait_outcome(before), h.log_tail()
        status, _, body = backend_of(lp)
        assert (status, body) == (200, b"from v2\n")

        # a broken file: refused, with where it is broken; the running config stays
        before = r.counts()
        with open(cds_path, "w") as f:
            f.write('{"resources": [{"@type": "%s", "name": "app", "conect_timeout": "1s"}]}' % CLUSTER)
        assert r.wait_outcome(before) is None
        log = h.log()
        assert re.search(r"%s:1:\d+: static_resources\.clusters\[0\]\.conect_timeout: unknown field" %
                         re.escape(cds_path), log), h.log_tail()
        assert "still serving the old configuration" in log
        assert backend_of(lp)[:2][0] == 200 and backend_of(lp)[2] == b"from v2\n"

        # fixed again
        before = r.counts()
        replace(cds_path, cds("app", two.port))
        assert r.wait_outcome(before), h.log_tail()
        assert backend_of(lp)[2] == b"from v2\n"
        # the log says why each reload began; no SIGHUP was sent
        assert "a dynamic_resources file changed: validating the configuration again" in h.log()
        assert "SIGHUP: validating" not in h.log()
    finally:
        r.cleanup()


def validate(cfg, tmp_path):
    path = tmp_path / "boot.json"
    path.write_text(json.dumps(cfg))
    return run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", PLUGIN_DIR])


def errors_of(r):
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


def test_resource_file_errors_name_the_file(tmp_path):
    lds_path, cds_path = str(tmp_path / "lds.json"), str(tmp_path / "cds.json")
    write(cds_path, cds("app", 1))
    # a missing file: the bootstrap's path field says which
    r = validate(bootstrap(lds_path, cds_path), tmp_path)
    errs = errors_of(r)
    assert r.returncode == 1 and len(errs) == 1, r.stderr
    assert re.match(r"error: .*boot\.json:\d+:\d+: dynamic_resources\.lds_config\.path_config_source\.path: "
                    r"the LDS file: .*lds\.json", errs[0]), errs[0]
    # a Cluster in the LDS file
    write(lds_path, cds("app", 1))
    r = validate(bootstrap(lds_path, cds_path), tmp_path)
    errs = errors_of(r)
    assert r.returncode == 1 and len(errs) == 1, r.stderr
    assert re.match(r"error: .*lds\.json:1:\d+: .*a LDS file holds Listeners: \"@type\": "
                    r"type\.googleapis\.com/envoy\.config\.listener\.v3\.Listener", errs[0]), errs[0]
    # a field a DiscoveryResponse does not have
    write(lds_path, dict(lds(1, [route("/", "app")]), listeners=[]))
    r = validate(bootstrap(lds_path, cds_path), tmp_path)
    assert r.returncode == 1 and "unknown field 'listeners' in a LDS file" in r.stderr, r.stderr
    # an xDS server: not supported, said so
    write(lds_path, lds(1, [route("/", "app")]))
    cfg = bootstrap(lds_path, cds_path)
    cfg["dynamic_resources"]["ads_config"] = {"api_type": "GRPC"}
    r = validate(cfg, tmp_path)
    assert r.returncode == 1 and "ads_config" in r.stderr and "not supported" in r.stderr, r.stderr
    # both files good: OK, and a static cluster beside them counts too
    write(lds_path, lds(1, [route("/", "app"), route("/s", "static")]))
    cfg = bootstrap(lds_path, cds_path, {"static_resources": {"clusters": [cds("static", 2)["resources"][0]]}})
    cfg["static_resources"]["clusters"][0].pop("@type")
    r = validate(cfg, tmp_path)
    assert r.returncode == 0, r.stderr
