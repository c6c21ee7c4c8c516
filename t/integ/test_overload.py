"""Overload protection against the real binary: the global limit of the
global_downstream_max_connections resource monitor (N connections held, the
next one closed at once and counted, room again after closes and resets,
sockets still in listener filters counted too), the per-listener limit
from the runtime, the global runtime key, and the admin listener never
limited."""

import re
import socket
import subprocess
import struct

from helpers import EchoServer, bootstrap, closed_by_peer, cluster, connect, recv_line, tcp_listener, wait_for

MONITOR = "envoy.resource_monitors.global_downstream_max_connections"
MONITOR_TYPE = ("type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                "DownstreamConnectionsConfig")
INSPECTOR = {"name": "envoy.filters.listener.tls_inspector",
             "typed_config": {"@type": "type.googleapis.com/"
                              "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}


def overload_manager(n):
    return {"refresh_interval": "0.25s", "resource_monitors": [{
        "name": MONITOR, "typed_config": {"@type": MONITOR_TYPE, "max_active_downstream_connections": n}}]}


def stat_of(h, suffix, lport):
    """listener.<address>.<suffix> for the listener on lport."""
    st = h.stats()
    vals = [v for k, v in st.items() if k.startswith("listener.") and k.endswith("_%d.%s" % (lport, suffix))]
    assert len(vals) == 1, "listener.*_%d.%s: %r" % (lport, suffix, vals)
    return vals[0]


def served(lport):
    """A connection that got through to the echo backend (it sends its tag)."""
    s = connect(lport, timeout=3)
    assert recv_line(s) == b"echo", "connection through the proxy did not reach the backend"
    return s


def refused(lport):
    s = connect(lport, timeout=3)
    try:
        return closed_by_peer(s, timeout=2)
    finally:
        s.close()


def reset(s):
    """Closes with an RST (SO_LINGER 0), as a crashing peer would."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def wait_active(h, lport, n):
    v = wait_for(lambda: stat_of(h, "downstream_cx_active", lport) == n, timeout=5)
    assert v, "downstream_cx_active did not reach %d: %s" % (n, stat_of(h, "downstream_cx_active", lport))


def start(herald, upstreams, port, n_listeners=1, concurrency=2, listener_filters=(), **extra):
    echo = upstreams(EchoServer, tag="echo")
    ports = [port() for _ in range(n_listeners)]
    listeners = []
    for i, p in enumerate(ports):
        lst = tcp_listener(p, "echo", stat_prefix="tcp%d" % i, name="l%d" % i)
        if listener_filters:
            lst["listener_filters"] = list(listener_filters)
        listeners.append(lst)
    cfg = bootstrap(listeners, [cluster("echo", [echo.addr])])
    cfg.update(extra)
    return herald(cfg, concurrency=concurrency), ports


def test_global_limit_from_resource_monitor(herald, upstreams, port):
    h, (lp, lp2) = start(herald, upstreams, port, n_listeners=2, overload_manager=overload_manager(3))
    held = [served(lp), served(lp), served(lp2)]
    assert refused(lp), "the 4th connection must be closed at once"
    assert refused(lp2), "the limit is global: the other listener refuses too"
    assert stat_of(h, "downstream_global_cx_overflow", lp) == 1
    assert stat_of(h, "downstream_global_cx_overflow", lp2) == 1
    # the admin listener is never limited
    assert h.admin_get("/ready")[0] == 200
    # a normal close and a reset both give the slot back
    held.pop().close()
    reset(held.pop())
    wait_for(lambda: stat_of(h, "downstream_cx_active", lp2) == 0 and stat_of(h, "downstream_cx_active", lp) == 1)
    held += [served(lp2), served(lp)]
    assert refused(lp)
    assert stat_of(h, "downstream_global_cx_overflow", lp) == 2
    # many rounds of open/reset leave no leaked count behind
    for s in held:
        reset(s)
    wait_active(h, lp, 0)
    for _ in range(5):
        batch = [served(lp) for _ in range(3)]
        assert refused(lp2)
        for s in batch:
            reset(s)
        wait_active(h, lp, 0)
    for s in [served(lp), served(lp), served(lp)]:
        s.close()


def test_sockets_in_listener_filters_count(herald, upstreams, port):
    """tls_inspector holds a silent client in the listener filter: it counts,
    and gives its slot back when the peer goes away."""
    h, (lp,) = start(herald, upstreams, port, listener_filters=[INSPECTOR], overload_manager=overload_manager(2))
    silent = [connect(lp), connect(lp)]
    wait_for(lambda: stat_of(h, "downstream_pre_cx_active", lp) == 2)
    assert refused(lp)
    assert stat_of(h, "downstream_global_cx_overflow", lp) == 1
    reset(silent.pop())
    silent.pop().close()
    wait_for(lambda: stat_of(h, "downstream_pre_cx_active", lp) == 0)
    # plain text passes the inspector: these are real connections again
    a = connect(lp)
    a.sendall(b"hi\n")
    assert recv_line(a) == b"echo"
    b = connect(lp)
    b.sendall(b"hi\n")
    assert recv_line(b) == b"echo"
    assert refused(lp)
    a.close()
    b.close()


def test_per_listener_limit_from_runtime(herald, upstreams, port):
    layers = {"layers": [
        {"name": "static", "static_layer": {"envoy.resource_limits.listener.l0.connection_limit": 2}},
        {"name": "admin", "admin_layer": {}}]}
    h, (lp, lp2) = start(herald, upstreams, port, n_listeners=2, layered_runtime=layers)
    held = [served(lp), served(lp)]
    assert refused(lp)
    assert stat_of(h, "downstream_cx_overflow", lp) == 1
    assert stat_of(h, "downstream_global_cx_overflow", lp) == 0
    held += [served(lp2) for _ in range(4)]   # the other listener has no limit
    # raise the limit live
    assert h.admin_post("/runtime_modify?envoy.resource_limits.listener.l0.connection_limit=3")[0] == 200
    held.append(served(lp))
    assert refused(lp)
    assert stat_of(h, "downstream_cx_overflow", lp) == 2
    # the global runtime key (Envoy's older knob) caps everything: 7 are open
    assert h.admin_post("/runtime_modify?overload.global_downstream_max_connections=7")[0] == 200
    assert refused(lp2)
    assert stat_of(h, "downstream_global_cx_overflow", lp2) == 1
    reset(held.pop(0))
    wait_active(h, lp, 2)
    held.append(served(lp2))
    for s in held:
        s.close()


def test_unsupported_monitor_is_refused(herald, tmp_path):
    from conftest import run_herald
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("overload_manager:\n  resource_monitors:\n  - name: envoy.resource_monitors.cgroup_memory\n"
                   "    typed_config: {'@type': type.googleapis.com/envoy.extensions.resource_monitors."
                   "cgroup_memory.v3.CgroupMemoryConfig}\n")
    r = run_herald(["--mode", "validate", "-c", str(cfg)])
    assert r.returncode == 1
    assert "not supported" in r.stderr and "cgroup_memory" in r.stderr
    cfg.write_text("overload_manager:\n  actions:\n  - name: envoy.overload_actions.stop_accepting_requests\n")
    r = run_herald(["--mode", "validate", "-c", str(cfg)])
    assert r.returncode == 1 and "triggers" in r.stderr, r.stderr


def test_no_count_leak_under_churn(herald, upstreams, port):
    """Many clients on 2 workers open, get refused, close and reset at once;
    afterwards exactly the limit can be open again."""
    import threading
    h, (lp,) = start(herald, upstreams, port, listener_filters=[INSPECTOR], overload_manager=overload_manager(4))
    errors = []

    def client(i):
        try:
            for k in range(25):
                s = socket.create_connection(("127.0.0.1", lp), timeout=3)
                if (i + k) % 3 == 0:
                    s.sendall(b"x\n")          # through the inspector to tcp_proxy
                if (i + k) % 2 == 0:
                    reset(s)
                else:
                    s.close()
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    ok = wait_for(lambda: stat_of(h, "downstream_cx_active", lp) == 0
                  and stat_of(h, "downstream_pre_cx_active", lp) == 0, timeout=10)
    assert ok, "connections still counted active after all clients left"
    held = []
    for _ in range(4):
        s = connect(lp)
        s.sendall(b"hi\n")
        assert recv_line(s) == b"echo"
        held.append(s)
    assert refused(lp)
    for s in held:
        s.close()


# ------------------------------------------------------------------ pressure monitors and actions

import json  # noqa: E402

import conftest  # noqa: E402
import http_backends as hb  # noqa: E402
from http_backends import HttpBackend  # noqa: E402

INJECTED = "envoy.resource_monitors.injected_resource"
INJECTED_TYPE = ("type.googleapis.com/envoy.extensions.resource_monitors.injected_resource.v3."
                 "InjectedResourceConfig")
FIXED_HEAP = "envoy.resource_monitors.fixed_heap"
FIXED_HEAP_TYPE = "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"
ACTION = "envoy.overload_actions."


def pressure_manager(monitor, actions, threshold=0.9):
    return {"refresh_interval": "0.05s", "resource_monitors": [monitor],
            "actions": [{"name": ACTION + a, "triggers": [{"name": monitor["name"],
                                                          "threshold": {"value": threshold}}]}
                        for a in actions]}


def injected(path):
    return {"name": INJECTED, "typed_config": {"@type": INJECTED_TYPE, "filename": str(path)}}


def http_with_overload(herald, upstreams, port, om, extra_listeners=()):
    b = upstreams(HttpBackend, "b")
    lp = port()
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(lp, hb.hcm("ingress_http", [hb.route("/", "backend")]), "proxy")]
        + list(extra_listeners),
        "clusters": [hb.http_cluster("backend", [b.port])]}, "overload_manager": om}
    return herald(cfg), lp, b


def set_pressure(h, path, value, action, want):
    path.write_text("%s\n" % value)
    got = h.wait_stat("overload.%s%s.active" % (ACTION, action), lambda v: v == want)
    assert got == want, "%s.active stayed %s" % (action, got)


def test_stop_accepting_requests_follows_the_pressure(herald, upstreams, port, tmp_path):
    p = tmp_path / "pressure"
    p.write_text("0.1\n")
    h, lp, b = http_with_overload(herald, upstreams, port,
                                  pressure_manager(injected(p), ["stop_accepting_requests"]))
    assert hb.request(lp, "/before")[0] == 200
    set_pressure(h, p, 0.95, "stop_accepting_requests", 1)
    assert h.stat("overload.%s.pressure" % INJECTED) == 95
    status, headers, body = hb.request(lp, "/during")
    assert (status, body) == (503, b"envoy overloaded"), (status, body)
    r = hb.curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
                "http://127.0.0.1:%d/h2" % lp)
    assert r.stdout == "503"
    assert b.served() == 1
    assert h.stat("http.ingress_http.downstream_rq_overload_close") == 2
    set_pressure(h, p, 0.2, "stop_accepting_requests", 0)
    assert hb.request(lp, "/after")[0] == 200
    # a file that cannot be read keeps the last reading and is counted
    p.write_text("not a number\n")
    assert h.wait_stat("overload.%s.failed_updates" % INJECTED, lambda v: v >= 1) >= 1
    assert hb.request(lp, "/still")[0] == 200


def test_disable_keepalive_and_reject_connections(herald, upstreams, port, tmp_path):
    p = tmp_path / "pressure"
    p.write_text("0\n")
    bypass_port = port()
    bypass = hb.http_listener(bypass_port, hb.hcm("bypass", [hb.route("/", "backend")]), "bypass")
    bypass["bypass_overload_manager"] = True
    om = pressure_manager(injected(p), ["disable_http_keepalive"], threshold=0.5)
    om["actions"].append({"name": ACTION + "reject_incoming_connections",
                          "triggers": [{"name": INJECTED, "threshold": {"value": 0.9}}]})
    h, lp, b = http_with_overload(herald, upstreams, port, om, [bypass])
    status, headers, _ = hb.request(lp, "/ka")
    assert status == 200 and headers.get("connection") != "close"
    set_pressure(h, p, 0.6, "disable_http_keepalive", 1)
    status, headers, _ = hb.request(lp, "/nka")
    assert status == 200 and headers.get("connection") == "close", headers
    assert h.stat("http.ingress_http.downstream_cx_overload_disable_keepalive") >= 1
    # HTTP/2: the request is served and the connection told to go (GOAWAY),
    # counted once for the connection
    before = h.stat("http.ingress_http.downstream_cx_overload_disable_keepalive")
    r = subprocess.run(["nghttp", "-nv", "http://127.0.0.1:%d/h2" % lp], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    out = r.stdout.decode(errors="replace")
    assert re.search(r"recv GOAWAY frame.*\n.*error_code=NO_ERROR", out), out
    assert re.search(r":status: 200", out), out
    assert h.stat("http.ingress_http.downstream_cx_overload_disable_keepalive") == before + 1
    set_pressure(h, p, 0.95, "reject_incoming_connections", 1)
    s = connect(lp, timeout=3)
    assert closed_by_peer(s), "a new connection was not closed"
    s.close()
    assert stat_of(h, "downstream_cx_overload_reject", lp) >= 1
    assert hb.request(bypass_port, "/bypass")[0] == 200      # bypass_overload_manager
    assert h.admin_get("/ready")[0] == 200                   # the admin listener is never refused


def test_fixed_heap_monitor(herald, upstreams, port):
    """fixed_heap: the bytes malloc has handed out over max_heap_size_bytes.
    A 16 KiB budget is far below what herald holds: overloaded at once."""
    om = pressure_manager({"name": FIXED_HEAP, "typed_config": {"@type": FIXED_HEAP_TYPE,
                                                                "max_heap_size_bytes": 16 << 10}},
                          ["stop_accepting_requests", "shrink_heap"], threshold=0.95)
    h, lp, b = http_with_overload(herald, upstreams, port, om)
    assert h.wait_stat("overload.%sstop_accepting_requests.active" % ACTION, lambda v: v == 1) == 1
    assert h.stat("overload.%s.pressure" % FIXED_HEAP) > 100
    assert h.stat("overload.%sshrink_heap.active" % ACTION) == 1
    assert hb.request(lp, "/heavy")[0] == 503
    om2 = pressure_manager({"name": FIXED_HEAP, "typed_config": {"@type": FIXED_HEAP_TYPE,
                                                                 "max_heap_size_bytes": 1 << 40}},
                           ["stop_accepting_requests"])
    h2, lp2, _ = http_with_overload(herald, upstreams, port, om2)
    assert hb.request(lp2, "/light")[0] == 200
    assert 0 <= h2.stat("overload.%s.pressure" % FIXED_HEAP) < 1


SCALE_TYPE = "type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig"


def test_scaled_trigger_and_reduce_timeouts(herald, upstreams, port, tmp_path):
    """A scaled trigger (0.5 -> 0.9): the action's scale follows the pressure
    between them; reduce_timeouts shortens the HCM's idle timeout (30 s) and
    stream idle timeout (60 s) toward their minimums, and connections and
    streams already waiting get the new length, as Envoy's scaled timers;
    stop_accepting_requests on a scaled trigger acts only when saturated."""
    p = tmp_path / "pressure"
    p.write_text("0.1\n")
    scaled = {"name": INJECTED, "scaled": {"scaling_threshold": 0.5, "saturation_threshold": 0.9}}
    om = {"refresh_interval": "0.05s", "resource_monitors": [injected(p)], "actions": [
        {"name": ACTION + "reduce_timeouts", "triggers": [scaled], "typed_config": {
            "@type": SCALE_TYPE, "timer_scale_factors": [
                {"timer": "HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_timeout": "0.3s"},
                {"timer": "HTTP_DOWNSTREAM_STREAM_IDLE", "min_scale": {"value": 1}}]}},
        {"name": ACTION + "stop_accepting_requests", "triggers": [scaled]}]}
    b = upstreams(HttpBackend, "b")
    lp = port()
    hcm = hb.hcm("ingress_http", [hb.route("/", "backend", timeout="0s")], stream_idle_timeout="60s",
                 common_http_protocol_options={"idle_timeout": "30s"})
    cfg = {"static_resources": {"listeners": [hb.http_listener(lp, hcm, "proxy")],
                                "clusters": [hb.http_cluster("backend", [b.port])]}, "overload_manager": om}
    h = herald(cfg)
    idle = connect(lp, timeout=10)
    idle.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")
    # half way between the thresholds: the scale is 50%; the saturated-only action stays off
    p.write_text("0.7\n")
    assert h.wait_stat("overload.%sreduce_timeouts.scale_percent" % ACTION, lambda v: v == 50) == 50
    assert h.stat("overload.%sreduce_timeouts.active" % ACTION) == 0
    assert hb.request(lp, "/half")[0] == 200
    assert not closed_by_peer(idle, timeout=1.0), "at 50% the idle timeout is still ~15 s"
    # a request whose backend stalls, waiting on its stream idle timer (60 s)
    slow = connect(lp, timeout=10)
    slow.sendall(b"GET /slow?delay_ms=8000 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wait_for(lambda: b.served() >= 3, timeout=5)
    # saturated: 0.3 s idle, 0.6 s stream idle (1% of 60 s), both re-armed at once
    p.write_text("0.95\n")
    assert h.wait_stat("overload.%sreduce_timeouts.scale_percent" % ACTION, lambda v: v == 100) == 100
    assert closed_by_peer(idle, timeout=3), "the idle keep-alive connection was not closed"
    idle.close()
    slow.settimeout(5)
    got = slow.recv(65536)
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    slow.close()
    assert h.stat("http.ingress_http.downstream_cx_idle_timeout") >= 1
    assert h.stat("http.ingress_http.downstream_rq_idle_timeout") == 1
    assert h.stat("overload.%sstop_accepting_requests.active" % ACTION) == 1
    assert hb.request(lp, "/saturated")[0] == 503
    # the pressure goes: full timeouts again for new idle connections
    p.write_text("0.1\n")
    assert h.wait_stat("overload.%sreduce_timeouts.scale_percent" % ACTION, lambda v: v == 0) == 0
    again = connect(lp, timeout=10)
    again.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
    assert again.recv(65536).startswith(b"HTTP/1.1 200")
    assert not closed_by_peer(again, timeout=1.0)
    again.close()


def test_overload_action_config_errors(tmp_path):
    mon = {"name": INJECTED, "typed_config": {"@type": INJECTED_TYPE, "filename": "/nonexistent"}}
    cases = [
        ({"resource_monitors": [mon], "actions": [{"name": ACTION + "make_coffee",
                                                    "triggers": [{"name": INJECTED, "threshold": {"value": 0.5}}]}]},
         r"actions\[0\]\.name: not supported: overload action 'envoy.overload_actions.make_coffee'"),
        ({"resource_monitors": [mon], "actions": [{"name": ACTION + "shrink_heap",
                                                    "triggers": [{"name": "nope", "threshold": {"value": 0.5}}]}]},
         r"triggers\[0\]\.name: trigger names resource monitor 'nope'"),
        ({"resource_monitors": [mon], "actions": [{"name": ACTION + "shrink_heap", "triggers": [
            {"name": INJECTED, "scaled": {"scaling_threshold": 0.9, "saturation_threshold": 0.5}}]}]},
         r"triggers\[0\]\.scaled: scaling_threshold must be less than saturation_threshold"),
        ({"resource_monitors": [mon], "actions": [{"name": ACTION + "reduce_timeouts", "triggers": [
            {"name": INJECTED, "threshold": {"value": 0.5}}]}]},
         r"actions\[0\]: reduce_timeouts needs a typed_config"),
        ({"resource_monitors": [mon], "actions": [{"name": ACTION + "reduce_timeouts", "triggers": [
            {"name": INJECTED, "threshold": {"value": 0.5}}], "typed_config": {"@type": SCALE_TYPE,
             "timer_scale_factors": [{"timer": "HTTP_DOWNSTREAM_CONNECTION_MAX", "min_timeout": "1s"}]}}]},
         r"timer: not supported: timer HTTP_DOWNSTREAM_CONNECTION_MAX"),
        ({"resource_monitors": [mon], "actions": [{"name": ACTION + "reduce_timeouts", "triggers": [
            {"name": INJECTED, "threshold": {"value": 0.5}}], "typed_config": {"@type": SCALE_TYPE,
             "timer_scale_factors": [{"timer": "HTTP_DOWNSTREAM_STREAM_IDLE"}]}}]},
         r"timer_scale_factors\[0\]: a timer needs min_timeout or min_scale"),
        ({"resource_monitors": [mon], "actions": [{"name": ACTION + "shrink_heap", "triggers": [
            {"name": INJECTED, "threshold": {"value": 0.5}}], "typed_config": {"@type": SCALE_TYPE}}]},
         r"typed_config: overload action 'envoy.overload_actions.shrink_heap' takes no typed_config"),
        ({"resource_monitors": [mon], "actions": [{"name": ACTION + "shrink_heap",
                                                    "triggers": [{"name": INJECTED, "threshold": {"value": 1.5}}]}]},
         r"threshold\.value: value must be from 0 to 1"),
        ({"resource_monitors": [{"name": FIXED_HEAP, "typed_config": {"@type": FIXED_HEAP_TYPE}}]},
         r"max_heap_size_bytes: must be an integer greater than 0"),
    ]
    for om, want in cases:
        path = tmp_path / "om.json"
        path.write_text(json.dumps({"overload_manager": om}))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path)])
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*om.json:\d+:\d+: overload_manager\..*" + want, r.stderr), (want, r.stderr)
