#!/usr/bin/env python3
"""idle_rss.py -- proxy RSS per idle proxied TCP connection: herald vs HAProxy (mode tcp).

    bench/idle_rss.py                 # N=10000 (or as many as RLIMIT_NOFILE allows)
    N=2000 bench/idle_rss.py          # quicker

For each proxy in turn (herald --concurrency 1, then haproxy nbthread 1; both pinned to
PROXY_CPU, default 1): start it with one tcp listener to a backend that accepts and holds
every connection (a child of this script, pinned to LOAD_CPU, default 0); open and close one
warm-up connection; read the proxy's VmRSS; open N connections through it (in batches, each
batch waits until the backend holds its upstream half, so every one is really proxied);
wait 1 s; read VmRSS again; close them all (RST, so no TIME_WAIT piles up) and stop the proxy.
Prints one "RESULT<TAB>idle<TAB>proxy<TAB>kib_per_conn<TAB>n<TAB>rss_before_kib<TAB>
rss_after_kib" line per proxy and a markdown table with the herald/haproxy ratio.

The proxy needs 2 descriptors per proxied connection: RLIMIT_NOFILE is raised to 65536 when
the hard limit allows, otherwise N is lowered to fit under the hard limit (reported).
Everything listens on 127.0.0.1; every process started here is stopped by PID; the whole run
is bounded by TIMEOUT seconds (default 240). Knobs: N BASE_PORT (28120, uses +0..+2)
LOAD_CPU PROXY_CPU HERALD PLUGIN_DIR TIMEOUT.
"""
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def hold(port):
    """Backend: accept and keep every connection until SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4096)
    held = []
    while True:
        c, _ = ls.accept()
        held.append(c)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def nfds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def listening(port):
    want = ":%04X" % port
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if p[1].endswith(want) and p[3] == "0A":
                        return True
        except OSError:
            pass
    return False


def wait_until(cond, secs, what):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {secs} s waiting for {what}")


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(name, proc, port, be_pid, n, be_base):
    """Open n idle proxied connections through port; return (rss_before, rss_after, rss_closed)."""
    # one warm-up connection, so lazy first-use allocations are not charged to the idle ones
    w = socket.create_connection(("127.0.0.1", port), timeout=5)
    wait_until(lambda: nfds(be_pid) >= be_base + 1, 10, f"{name}: warm-up connection at the backend")
    w.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.close()
    wait_until(lambda: nfds(be_pid) <= be_base + 1, 10, f"{name}: warm-up connection to close")
    time.sleep(0.5)
    before = rss_kib(proc.pid)
    conns = []
    batch = 500
    try:
        while len(conns) < n:
            for _ in range(min(batch, n - len(conns))):
                conns.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            # the backend holds the warm-up's closed socket too (it never reads), hence +1
            wait_until(lambda: nfds(be_pid) >= be_base + 1 + len(conns), 20,
                       f"{name}: {len(conns)} upstream connections at the backend")
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited (status {proc.returncode})")
        time.sleep(1)
        after = rss_kib(proc.pid)
    finally:
        for c in conns:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
    time.sleep(1)
    closed = rss_kib(proc.pid) if proc.poll() is None else 0
    return before, after, closed


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--hold":
        hold(int(sys.argv[2]))
        return 0
    n_want = int(os.environ.get("N", "10000"))
    base = int(os.environ.get("BASE_PORT", "28120"))
    load_cpu = os.environ.get("LOAD_CPU", "0")
    proxy_cpu = os.environ.get("PROXY_CPU", "1")
    herald = os.environ.get("HERALD", os.path.join(HERE, "..", "build", "herald"))
    plugin_dir = os.environ.get("PLUGIN_DIR", os.path.join(HERE, "..", "build", "plugins"))
    timeout = int(os.environ.get("TIMEOUT", "240"))
    be_port, he_port, ha_port = base, base + 1, base + 2

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want_fds = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want_fds, max(hard, want_fds)))
    except (ValueError, OSError):
        want_fds = hard if hard != resource.RLIM_INFINITY else 65536
        resource.setrlimit(resource.RLIMIT_NOFILE, (want_fds, hard))
    # proxy: 2 fds per connection + listeners/epoll/pipes; haproxy checks 2*maxconn + ~15
    n = min(n_want, (want_fds - 100) // 2)
    note = ""
    if n < n_want:
        note = (f"RLIMIT_NOFILE hard limit is {hard} (cannot raise to 65536 here), so "
                f"N={n} instead of {n_want}")
    for p in (be_port, he_port, ha_port):
        if listening(p):
            print(f"idle_rss.py: port {p} already in use (set BASE_PORT)", file=sys.stderr)
            return 1

    def on_alarm(*_):
        raise TimeoutError(f"idle_rss.py: TIMEOUT={timeout}s reached")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(timeout)

    tmp = tempfile.mkdtemp(prefix="herald-idle-rss.")
    procs = {}
    results = []
    print(f"# idle_rss.py  {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}  N={n} "
          f"LOAD_CPU={load_cpu} PROXY_CPU={proxy_cpu} RLIMIT_NOFILE={want_fds}")
    if note:
        print(f"# note: {note}")
    try:
        procs["backend"] = subprocess.Popen(
            ["taskset", "-c", load_cpu, sys.executable, os.path.abspath(__file__), "--hold", str(be_port)])
        wait_until(lambda: listening(be_port), 10, "backend to listen")
        be_pid = procs["backend"].pid
        time.sleep(0.2)
        be_base = nfds(be_pid)

        yaml = subprocess.run([os.path.join(HERE, "tcp.sh"), "--herald-yaml", str(he_port), str(be_port)],
                              check=True, capture_output=True, text=True).stdout
        with open(os.path.join(tmp, "herald.yaml"), "w") as f:
            f.write(yaml)
        with open(os.path.join(tmp, "haproxy.cfg"), "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn {n + 10}
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
listen idle
  bind 127.0.0.1:{ha_port}
  server s1 127.0.0.1:{be_port}
""")
        cmds = {
            "herald": (["taskset", "-c", proxy_cpu, herald, "-c", os.path.join(tmp, "herald.yaml"),
                        "--plugin-dir", plugin_dir, "--concurrency", "1", "-l", "warning"], he_port),
            "haproxy": (["taskset", "-c", proxy_cpu, "haproxy", "-db", "-f",
                         os.path.join(tmp, "haproxy.cfg")], ha_port),
        }
        for name in ("herald", "haproxy"):
            cmd, port = cmds[name]
            log = open(os.path.join(tmp, name + ".log"), "w")
            procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            wait_until(lambda: listening(port) or procs[name].poll() is not None, 10, f"{name} to listen")
            if procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited at startup: {open(log.name).read()[-500:]}")
            t0 = time.monotonic()
            before, after, closed = measure(name, procs[name], port, be_pid, n, be_base)
            per = (after - before) / n
            results.append((name, per, before, after, closed))
            print(f"RESULT\tidle\t{name}\t{per:.2f}\t{n}\t{before}\t{after}\t{closed}", flush=True)
            print(f"# {name}: {n} idle proxied connections in {time.monotonic() - t0:.1f} s; "
                  f"VmRSS {before} -> {after} KiB ({per:.2f} KiB/conn), {closed} KiB after closing",
                  flush=True)
            stop(procs[name])
            # wait for the backend to see the upstream halves go (bounded), for the next proxy
            try:
                wait_until(lambda: nfds(be_pid) <= be_base + 1, 10, "upstream connections to close")
            except RuntimeError:
                pass
            # the backend keeps its accepted sockets: restart it clean for the next proxy
            stop(procs["backend"])
            procs["backend"] = subprocess.Popen(
                ["taskset", "-c", load_cpu, sys.executable, os.path.abspath(__file__), "--hold", str(be_port)])
            wait_until(lambda: listening(be_port), 10, "backend to listen")
            be_pid = procs["backend"].pid
            time.sleep(0.2)
            be_base = nfds(be_pid)
    except (RuntimeError, TimeoutError, OSError, subprocess.CalledProcessError) as e:
        print(f"idle_rss.py: {e}", file=sys.stderr)
    finally:
        signal.alarm(0)
        for p in procs.values():
            stop(p)
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)

    print()
    print("## idle_rss summary (VmRSS growth per idle proxied connection; lower is better)")
    print("| proxy | conns | VmRSS before KiB | VmRSS with conns KiB | after close KiB | KiB/conn |")
    print("|---|--:|--:|--:|--:|--:|")
    per = {}
    for name, k, before, after, closed in results:
        per[name] = k
        print(f"| {name} | {n} | {before} | {after} | {closed} | {k:.2f} |")
    if per.get("haproxy", 0) > 0 and "herald" in per:
        print(f"\nherald/haproxy KiB per idle connection: {per['herald'] / per['haproxy']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
