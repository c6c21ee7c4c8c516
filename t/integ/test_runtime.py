"""The layered runtime against the real binary: a static layer shown by
/runtime, route runtime_fraction steered live by /runtime_modify (admin
layer) and by swapping a disk layer's symlink, and /runtime_modify refused
when there is no admin layer."""

import json
import os

import http_backends as hb
from helpers import wait_for
from http_backends import HttpBackend

CANARY_KEY = "routing.canary.percent"


def routes(numerator=0, key=CANARY_KEY):
    """/ goes to `canary` for runtime_fraction of the requests, else to `stable`."""
    frac = {"default_value": {"numerator": numerator, "denominator": "HUNDRED"}}
    if key:
        frac["runtime_key"] = key
    return [hb.route(None, "canary", match={"prefix": "/", "runtime_fraction": frac}),
            hb.route("/", "stable")]


def start(herald, upstreams, port, layers, numerator=0):
    stable, canary = upstreams(HttpBackend, "stable"), upstreams(HttpBackend, "canary")
    lp = port()
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(lp, hb.hcm("ingress_http", routes(numerator)), "front")],
        "clusters": [hb.http_cluster("stable", [stable.port]), hb.http_cluster("canary", [canary.port])]},
        "layered_runtime": {"layers": layers}}
    return herald(cfg), lp


def backends(lp, n=20):
    seen = []
    for _ in range(n):
        status, headers, _ = hb.request(lp, "/x")
        assert status == 200
        seen.append(headers.get("x-backend"))
    return seen


def runtime(h):
    status, body = h.admin_get("/runtime")
    assert status == 200, body
    return json.loads(body)


STATIC = {"name": "base", "static_layer": {"feature": {"x": 5, "enabled": True}, "plain.key": "hello"}}
ADMIN = {"name": "admin", "admin_layer": {}}


def test_static_layer_in_runtime_dump(herald, upstreams, port):
    h, lp = start(herald, upstreams, port, [STATIC, ADMIN])
    doc = runtime(h)
    assert doc["layers"] == ["base", "admin"]
    assert doc["entries"]["feature.x"] == {"final_value": "5", "layer_values": ["5", ""]}
    assert doc["entries"]["feature.enabled"]["final_value"] == "true"
    assert doc["entries"]["plain.key"]["final_value"] == "hello"
    st = h.stats()
    assert st["runtime.num_keys"] == 3 and st["runtime.num_layers"] == 2
    assert st["runtime.load_success"] >= 1 and st["runtime.admin_overrides_active"] == 0


def test_runtime_fraction_follows_admin_overrides(herald, upstreams, port):
    h, lp = start(herald, upstreams, port, [STATIC, ADMIN])
    assert set(backends(lp)) == {"stable"}, "0% default: the canary route never matches"
    assert h.admin_post("/runtime_modify?%s=100" % CANARY_KEY) == (200, "OK\n")
    assert set(backends(lp)) == {"canary"}, "100: always"
    doc = runtime(h)
    assert doc["entries"][CANARY_KEY] == {"final_value": "100", "layer_values": ["", "100"]}
    assert h.stat("runtime.admin_overrides_active") == 1
    # about half at 50 (40 requests: both seen, with overwhelming probability)
    assert h.admin_post("/runtime_modify?%s=50&other=1" % CANARY_KEY)[0] == 200
    assert set(backends(lp, 40)) == {"stable", "canary"}
    # an empty value removes the override: back to the default 0%
    assert h.admin_post("/runtime_modify?%s=&other=" % CANARY_KEY)[0] == 200
    assert set(backends(lp)) == {"stable"}
    assert CANARY_KEY not in runtime(h)["entries"]
    assert h.stat("runtime.admin_overrides_active") == 0
    # GET is refused (it changes state), and a call without keys is a 400 with the usage
    assert h.admin_get("/runtime_modify?%s=100" % CANARY_KEY)[0] in (400, 405)
    assert CANARY_KEY not in runtime(h)["entries"]
    status, body = h.admin_post("/runtime_modify")
    assert status == 400 and "usage" in body


def test_runtime_modify_without_admin_layer(herald, upstreams, port):
    h, lp = start(herald, upstreams, port, [STATIC], numerator=100)
    status, body = h.admin_post("/runtime_modify?%s=0" % CANARY_KEY)
    assert status == 503 and "No admin layer specified" in body
    assert set(backends(lp, 5)) == {"canary"}, "the default 100% still applies"


def make_runtime_dir(root, name, values):
    d = os.path.join(root, name)
    for key, value in values.items():
        path = os.path.join(d, "rt", *key.split("."))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(value + "\n")
    return d


def swap_symlink(link, target):
    tmp = link + ".new"
    os.symlink(target, tmp)
    os.rename(tmp, link)   # atomic: what Envoy's watcher expects (a move onto the link)


def test_disk_layer_reloaded_on_symlink_swap(herald, upstreams, port, tmp_path):
    root = str(tmp_path / "runtime")
    os.makedirs(root)
    v1 = make_runtime_dir(root, "v1", {CANARY_KEY: "# placeholder\n0", "disk.only": "a"})
    link = os.path.join(root, "current")
    os.symlink(v1, link)
    disk = {"name": "disk", "disk_layer": {"symlink_root": link, "subdirectory": "rt"}}
    h, lp = start(herald, upstreams, port, [STATIC, disk, ADMIN])
    doc = runtime(h)
    assert doc["layers"] == ["base", "disk", "admin"]
    assert doc["entries"]["disk.only"]["final_value"] == "a"
    assert doc["entries"][CANARY_KEY] == {"final_value": "0", "layer_values": ["", "0", ""]}
    assert set(backends(lp, 10)) == {"stable"}
    loads = h.stat("runtime.load_success")

    v2 = make_runtime_dir(root, "v2", {CANARY_KEY: "100", "disk.only": "b"})
    swap_symlink(link, v2)

    def reloaded():
        e = runtime(h)["entries"]
        return e.get("disk.only", {}).get("final_value") == "b"
    assert wait_for(reloaded, timeout=5.0), "/runtime does not show the new disk layer: %r" % runtime(h)
    assert set(backends(lp, 10)) == {"canary"}
    assert h.stat("runtime.load_success") > loads
    assert h.stat("runtime.override_dir_not_exists") >= 2, "Envoy counts 'exists' only for 2+ disk layers"

    # the admin layer still wins over the disk layer
    assert h.admin_post("/runtime_modify?%s=0" % CANARY_KEY)[0] == 200
    assert set(backends(lp, 10)) == {"stable"}


def test_weighted_clusters_runtime_key_prefix(herald, upstreams, port):
    """weighted_clusters.runtime_key_prefix: <prefix>.<cluster> overrides each weight."""
    stable, canary = upstreams(HttpBackend, "stable"), upstreams(HttpBackend, "canary")
    lp = port()
    wc = {"runtime_key_prefix": "routing.split",
          "clusters": [{"name": "stable", "weight": 100}, {"name": "canary", "weight": 0}]}
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(lp, hb.hcm("ingress_http", [hb.route("/", weighted_clusters=wc)]), "front")],
        "clusters": [hb.http_cluster("stable", [stable.port]), hb.http_cluster("canary", [canary.port])]},
        "layered_runtime": {"layers": [ADMIN]}}
    h = herald(cfg)
    assert set(backends(lp, 10)) == {"stable"}
    assert h.admin_post("/runtime_modify?routing.split.stable=0&routing.split.canary=5")[0] == 200
    assert set(backends(lp, 10)) == {"canary"}
    assert h.admin_post("/runtime_modify?routing.split.stable=&routing.split.canary=")[0] == 200
    assert set(backends(lp, 10)) == {"stable"}
