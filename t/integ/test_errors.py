"""Config errors stop start-up with file:line:col and a useful message; garbage
on the wire never crashes herald."""

import os
import random
import re
import socket
import struct

import pytest

from conftest import PLUGIN_DIR, run_herald
from helpers import EchoServer, bootstrap, cluster, connect, recv_line, tcp_listener

BASE = """\
static_resources:
  listeners:
  - name: l
    address:
      socket_address: {address: 127.0.0.1, port_value: 10000}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: c
  clusters:
  - name: c
    CLUSTER_LINE
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: 127.0.0.1, port_value: 9}
"""

CASES = {
    # name: (line replacing CLUSTER_LINE, the bad key, regexes the message must match)
    "typo_did_you_mean": ("conect_timeout: 1s", "conect_timeout",
                          [r"conect_timeout", r"did you mean", r"connect_timeout"]),
    "v2_hosts": ("hosts: [{socket_address: {address: 127.0.0.1, port_value: 9}}]", "hosts",
                 [r"hosts", r"load_assignment"]),
    "bad_enum": ("lb_policy: ROUND_ROBBIN", "lb_policy",
                 [r"ROUND_ROBBIN", r"ROUND_ROBIN"]),
}


@pytest.mark.parametrize("mode", ["serve", "validate"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_config_error_has_location(tmp_path, case, mode):
    line_text, key, patterns = CASES[case]
    text = BASE.replace("CLUSTER_LINE", line_text)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line_no = next(i for i, line in enumerate(text.splitlines(), 1) if line.strip() == line_text)
    r = run_herald(["--mode", mode, "-c", str(path), "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 1, "exit %d for a bad config\n%s" % (r.returncode, r.stderr)
    loc = re.compile(r"^error: %s:(\d+):(\d+): (.*)$" % re.escape(str(path)))
    errors = [m for m in map(loc.match, r.stderr.splitlines()) if m]
    assert errors, "no 'error: FILE:LINE:COL: ...' line:\n%s" % r.stderr
    ours = [m for m in errors if key in m.group(3)]
    assert ours, "no error about %r:\n%s" % (key, r.stderr)
    m = ours[0]
    assert int(m.group(1)) == line_no, "error on line %s, the mistake is on line %d:\n%s" \
        % (m.group(1), line_no, r.stderr)
    assert int(m.group(2)) == 5, "error at column %s, the key starts at column 5:\n%s" % (m.group(2), r.stderr)
    for p in patterns:
        assert re.search(p, m.group(3)), "message %r does not match %r" % (m.group(3), p)


def test_garbage_on_the_wire_never_crashes(herald, upstreams, port):
    backend = upstreams(EchoServer, tag="echo")
    lport = port()
    h = herald(bootstrap([tcp_listener(lport, "g")], [cluster("g", [backend.addr])]), log_level="info")
    rnd = random.Random(1234)
    junk_http = [b"GET / HTTP/1.1\r\n" + b"X" * 70000 + b"\r\n\r\n",
                 b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
                 b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(200),
                 b"POST /quit HTTP/1.1\r\nContent-Length: -1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                 b"\r\n\r\n\r\n", b"\x00" * 1000]
    for i in range(60):
        target = lport if i % 2 == 0 else h.admin_port
        payload = junk_http[i % len(junk_http)] if i % 3 == 0 else os.urandom(rnd.randint(1, 65536))
        try:
            s = connect(target, timeout=2)
            s.sendall(payload)
            if i % 4 == 0:  # abortive close: RST instead of FIN
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                s.settimeout(0.5)
                try:
                    s.recv(65536)
                except (socket.timeout, ConnectionResetError):
                    pass
            s.close()
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
    assert h.alive(), "herald died on garbage input\n" + h.log_tail()
    status, _ = h.admin_get("/ready")
    assert status == 200
    s = connect(lport)
    try:
        assert recv_line(s) == b"echo"
    finally:
        s.close()
