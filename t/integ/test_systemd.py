"""systemd integration (issue 6 item 8): etc/herald.service passes
`systemd-analyze verify`, and herald speaks the sd_notify protocol on
$NOTIFY_SOCKET: READY=1 with MAINPID at start, RELOADING=1 then READY=1 with
the new MAINPID on SIGHUP, STOPPING=1 on SIGTERM."""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import BUILDDIR, HERALD_BIN, SRCDIR
from helpers import EchoServer, bootstrap, cluster, tcp_listener
from reload_util import Reloads, set_subreaper, wait_gone


def unit_text(bindir, sysconfdir):
    with open(os.path.join(SRCDIR, "etc", "herald.service.in")) as f:
        return f.read().replace("@bindir@", bindir).replace("@sysconfdir@", sysconfdir)


def test_unit_verifies(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    assert os.access(HERALD_BIN, os.X_OK)
    text = unit_text(BUILDDIR, str(tmp_path))
    for key in ("Type=notify", "NotifyAccess=all", "ExecReload=/bin/kill -HUP $MAINPID", "User=herald",
                "NoNewPrivileges=yes", "ProtectSystem=strict", "AmbientCapabilities=CAP_NET_BIND_SERVICE"):
        assert key in text, key
    unit = tmp_path / "herald.service"
    unit.write_text(text)
    # --man=no: the man pages named by Documentation= are not installed here
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout
    # the unit made by `make` names the configured bindir
    built = os.path.join(BUILDDIR, "etc", "herald.service")
    if os.path.exists(built):
        assert "/herald -c " in open(built).read()


class Notifications:
    """A NOTIFY_SOCKET: a datagram socket at a path or an abstract name."""

    def __init__(self, tmp_path, abstract):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "herald-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            path = str(tmp_path / "notify.sock")
            self.sock.bind(path)
            self.env = path
        self.messages = []

    def next(self, timeout=10.0):
        """The next message as {key: value}."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        self.messages.append(data)
        return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)

    def wait_for(self, key, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            m = self.next(max(0.05, deadline - time.monotonic()))
            if key in m:
                return m

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_sd_notify(herald, upstreams, port, tmp_path, abstract):
    backend = upstreams(EchoServer, tag="x")
    n = Notifications(tmp_path, abstract)
    assert set_subreaper(True)
    r = None
    try:
        lp = port()
        h = herald(bootstrap([tcp_listener(lp, "c")], [cluster("c", [backend.addr])]),
                   env={"NOTIFY_SOCKET": n.env}, args=["--parent-shutdown-time-s", "5"])
        r = Reloads(h)
        m = n.wait_for("READY")
        assert m["READY"] == "1" and m["MAINPID"] == str(h.pid), n.messages

        newpid = r.sighup()
        assert newpid and newpid != h.pid
        m = n.wait_for("RELOADING")
        assert m["RELOADING"] == "1" and int(m["MONOTONIC_USEC"]) > 0, n.messages
        m = n.wait_for("READY")
        assert m["MAINPID"] == str(newpid), n.messages
        # the old process hands over without claiming the service stops
        assert h.wait_exit(10) == 0
        with pytest.raises(socket.timeout):
            n.next(timeout=0.3)

        os.kill(newpid, signal.SIGTERM)
        m = n.wait_for("STOPPING")
        assert m["STOPPING"] == "1"
        assert wait_gone(newpid, 10) == 0
    finally:
        if r:
            r.cleanup()
        set_subreaper(False)
        n.close()
