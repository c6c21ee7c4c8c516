"""The command line: --version, --help, --list-plugins, --describe,
--config-yaml, and a JSON config file."""

import os
import re

from conftest import PLUGIN_DIR, SRCDIR, run_herald
from helpers import EchoServer, bootstrap, cluster, connect, recv_line, tcp_listener


def package_version():
    text = open(os.path.join(SRCDIR, "configure.ac")).read()
    return re.search(r"AC_INIT\(\[herald\], \[([^\]]+)\]", text).group(1)


def test_version():
    r = run_herald(["--version"])
    assert r.returncode == 0, r.stderr
    assert package_version() in r.stdout, r.stdout


def test_help():
    r = run_herald(["--help"])
    assert r.returncode == 0, r.stderr
    for opt in ("--config-path", "--config-yaml", "--mode", "--concurrency", "--log-level",
                "--plugin-dir", "--list-plugins", "--drain-time-s", "--version"):
        assert opt in r.stdout, "--help does not mention %s" % opt


def test_bad_option_fails():
    r = run_herald(["--no-such-option"])
    assert r.returncode != 0 and r.returncode > 0
    assert r.stderr.strip()


def test_list_plugins():
    r = run_herald(["--list-plugins", "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 0, r.stderr
    assert "envoy.filters.network.tcp_proxy" in r.stdout, r.stdout


def test_describe_tcp_proxy():
    r = run_herald(["--describe", "envoy.filters.network.tcp_proxy", "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 0, r.stderr
    for field in ("stat_prefix", "cluster", "max_connect_attempts"):
        assert field in r.stdout, "--describe does not list %s:\n%s" % (field, r.stdout)


def test_config_yaml_validate():
    yaml_text = ("static_resources: {clusters: [{name: c, connect_timeout: 1s, load_assignment: "
                 "{cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: "
                 "{address: 127.0.0.1, port_value: 9}}}}]}]}}]}")
    r = run_herald(["--mode", "validate", "--config-yaml", yaml_text, "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 0, r.stderr


def test_json_config_file_serves(herald, upstreams, port):
    backend = upstreams(EchoServer, tag="json")
    lport = port()
    h = herald(bootstrap([tcp_listener(lport, "j")], [cluster("j", [backend.addr])]), fmt="json")
    assert h.config_path.endswith(".json")
    s = connect(lport)
    try:
        assert recv_line(s) == b"json"
    finally:
        s.close()
