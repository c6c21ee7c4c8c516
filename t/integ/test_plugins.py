"""Plugins: the out-of-tree example filter built against an installed SDK
only, a plugin built for another ABI major, and a filter no plugin provides."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import BUILDDIR, PLUGIN_DIR, SRCDIR, run_herald
from helpers import EchoServer, bootstrap, closed_by_peer, cluster, connect, recv_line, tcp_listener

EXAMPLE_SRC = os.path.join(SRCDIR, "sdk", "example")


def clean_make_env(**extra):
    """The environment for a nested make: nothing inherited from `make check`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env.update(extra)
    return env


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                       timeout=kw.pop("timeout", 600), **kw)
    assert r.returncode == 0, "%s failed (%d):\n%s" % (" ".join(cmd), r.returncode, r.stdout[-4000:])
    return r.stdout


@pytest.fixture(scope="module")
def installed_sdk(tmp_path_factory):
    """`make install DESTDIR=...` of the build tree: (destdir, dir of herald-sdk.pc)."""
    destdir = tmp_path_factory.mktemp("destdir")
    run(["make", "install", "DESTDIR=%s" % destdir], cwd=BUILDDIR, env=clean_make_env())
    pcs = sorted(destdir.rglob("herald-sdk.pc"))
    assert pcs, "make install did not install herald-sdk.pc"
    headers = sorted(p.name for p in destdir.rglob("include/herald/*.h"))
    assert "herald.h" in headers and "plugin.h" in headers, headers
    return destdir, pcs[0].parent


@pytest.fixture(scope="module")
def example_plugin_dir(installed_sdk, tmp_path_factory):
    """sdk/example copied out of the tree and built with only the installed SDK."""
    if not os.path.isdir(EXAMPLE_SRC):
        pytest.fail("no sdk/example in the source tree")
    destdir, pcdir = installed_sdk
    work = tmp_path_factory.mktemp("example") / "example"
    shutil.copytree(EXAMPLE_SRC, work, ignore=shutil.ignore_patterns("*.o", "*.so"))
    for d, _, names in os.walk(work):  # the source tree may be read-only (distcheck)
        os.chmod(d, 0o755)
        for n in names:
            os.chmod(os.path.join(d, n), 0o644)
    env = clean_make_env(PKG_CONFIG_LIBDIR=str(pcdir), PKG_CONFIG_PATH=str(pcdir),
                         PKG_CONFIG_SYSROOT_DIR=str(destdir))
    cflags = run(["pkg-config", "--cflags", "herald-sdk"], env=env).strip()
    assert str(destdir) in cflags, "pkg-config does not point into the install: %r" % cflags
    assert SRCDIR not in cflags
    run(["make"], cwd=work, env=env)
    sos = sorted(work.rglob("*.so"))
    assert sos, "building sdk/example produced no .so"
    return str(sos[0].parent)


def cidr_guard(deny, prefix):
    return {"name": "example.cidr_guard",
            "typed_config": {"@type": "type.googleapis.com/example.CidrGuard", "deny": deny, "stat_prefix": prefix}}


def test_example_plugin_denies_cidr(herald, upstreams, port, example_plugin_dir):
    backend = upstreams(EchoServer, tag="backend")
    lport = port()
    cfg = bootstrap([tcp_listener(lport, "b", before=[cidr_guard(["127.0.0.0/8"], "guard")])],
                    [cluster("b", [backend.addr])])
    h = herald(cfg, plugin_dirs=PLUGIN_DIR + ":" + example_plugin_dir)
    try:
        s = connect(lport)
        s.sendall(b"let me in\n")
        assert closed_by_peer(s, 5), "a client in a denied CIDR got through"
        s.close()
    except (ConnectionResetError, BrokenPipeError):
        pass   # the refusal is a reset: on a loaded machine it can beat connect() or sendall()
    assert h.wait_stat("cidr_guard.guard.denied", lambda v: v >= 1) == 1
    assert h.stat("cidr_guard.guard.allowed") == 0


def test_example_plugin_allows_other_cidr(herald, upstreams, port, example_plugin_dir):
    backend = upstreams(EchoServer, tag="backend")
    lport = port()
    cfg = bootstrap([tcp_listener(lport, "b", before=[cidr_guard(["10.0.0.0/8"], "guard")])],
                    [cluster("b", [backend.addr])])
    h = herald(cfg, plugin_dirs=PLUGIN_DIR + ":" + example_plugin_dir)
    payload = b"y" * 999 + b"\n"
    s = connect(lport)
    try:
        assert recv_line(s) == b"backend"
        s.sendall(payload)
        assert recv_line(s) == payload[:-1]
    finally:
        s.close()
    assert h.wait_stat("cidr_guard.guard.allowed", lambda v: v >= 1) == 1
    assert h.stat("cidr_guard.guard.denied") == 0
    # rx: what the client sent; tx: what herald wrote to it (the tag line, then the echo).
    assert h.wait_stat("cidr_guard.guard.rx_bytes", lambda v: v >= len(payload)) == len(payload)
    assert h.wait_stat("cidr_guard.guard.tx_bytes", lambda v: v >= len(payload) + 8) == len(payload) + 8


ABI99_C = r"""
#include <herald/plugin.h>
/* Written by hand: HERALD_PLUGIN() would stamp this SDK's own ABI. */
__attribute__((visibility("default"))) const struct herald_plugin herald_plugin = {
    .magic = HERALD_PLUGIN_MAGIC,
    .abi_major = 99,
    .abi_minor = 0,
    .struct_size = sizeof(struct herald_plugin),
    .name = "test.abi_future",
    .build_signature = HERALD_BUILD_SIGNATURE,
    .kind = HERALD_PLUGIN_NETWORK_FILTER,
    .version = "9.9.9",
    .description = "a plugin from a future SDK",
};
"""


def test_plugin_for_other_abi_major_is_refused(tmp_path, port, abi_version):
    src = tmp_path / "abi99.c"
    src.write_text(ABI99_C)
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    run(["cc", "-shared", "-fPIC", "-fvisibility=hidden", "-I", os.path.join(SRCDIR, "sdk", "include"),
         "-o", str(plugdir / "abi99.so"), str(src)])
    lport = port()
    cfg = tmp_path / "abi.yaml"
    cfg.write_text(CONFIG_WITH_FILTER.replace("$filter", "test.abi_future").replace("$port", str(lport)))
    r = run_herald(["-c", str(cfg), "--plugin-dir", PLUGIN_DIR + ":" + str(plugdir)])
    assert r.returncode == 1, "exit %d\n%s" % (r.returncode, r.stderr)
    major = abi_version[0]
    lines = [line for line in r.stderr.splitlines() if "99" in line and re.search(r"\b%d\b" % major, line)]
    assert lines, "no error naming ABI 99 and this herald's ABI %d:\n%s" % (major, r.stderr)
    assert any(line.startswith("error:") for line in r.stderr.splitlines()), r.stderr


CONFIG_WITH_FILTER = """\
static_resources:
  listeners:
  - name: l
    address:
      socket_address: {address: 127.0.0.1, port_value: $port}
    filter_chains:
    - filters:
      - name: $filter
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: c
  clusters:
  - name: c
    connect_timeout: 1s
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: 127.0.0.1, port_value: 9}
"""


@pytest.mark.parametrize("mode", ["serve", "validate"])
def test_unknown_filter_is_named(tmp_path, port, mode):
    cfg = tmp_path / "unknown.yaml"
    text = CONFIG_WITH_FILTER.replace("$filter", "envoy.filters.network.no_such_filter")
    cfg.write_text(text.replace("$port", str(port())))
    r = run_herald(["--mode", mode, "-c", str(cfg), "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 1, "exit %d\n%s" % (r.returncode, r.stderr)
    want = "unknown filter 'envoy.filters.network.no_such_filter' (no plugin provides it; searched: %s)" \
        % PLUGIN_DIR
    lines = [line for line in r.stderr.splitlines() if want in line]
    assert lines, "expected %r in:\n%s" % (want, r.stderr)
    line_no = CONFIG_WITH_FILTER.splitlines().index("      - name: $filter") + 1
    assert re.match(r"error: %s:%d:\d+: " % (re.escape(str(cfg)), line_no), lines[0]), lines[0]
