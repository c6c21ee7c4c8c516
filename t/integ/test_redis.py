"""redis_proxy in front of real redis-server processes (Debian's redis-server;
redis-cli checks each server directly): keys hashed over the hosts of a
cluster, multi-key commands split and put back together, pipelines answered
in order, prefix routes, AUTH both ways, unsupported commands, op_timeout
with a stopped server, a killed server, bad input, Envoy's stats, and the
Envoy example config. Skipped when redis-server is not installed."""

import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

import helpers
from conftest import PLUGIN_DIR, SRCDIR, free_port, run_herald, scan_log

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
if not REDIS_SERVER or not REDIS_CLI:
    pytest.skip("needs redis-server and redis-cli (Debian redis-server, redis-tools)", allow_module_level=True)

RP_TYPE = "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"
OPTS_KEY = "envoy.filters.network.redis_proxy"
OPTS_TYPE = "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProtocolOptions"
EXAMPLE = os.path.normpath(os.path.join(SRCDIR, "..", "shared", "conformance", "envoy-configs",
                                        "examples-redis-envoy.yaml"))


# ------------------------------------------------------------------ RESP


class Err(str):
    """An error reply (a str, so tests compare it to the text)."""


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Client:
    """A RESP client over a plain socket: every byte it sends is the test's."""

    def __init__(self, port, timeout=5.0):
        self.sock = helpers.connect(port, timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, *cmds):
        self.sock.sendall(b"".join(encode(*c) for c in cmds))

    def call(self, *args):
        self.send(args)
        return self.read()

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return Err(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise AssertionError("not RESP: %r" % line)

    def closed(self, timeout=5.0):
        """True when the proxy closes the connection (after what it had to send)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


# ------------------------------------------------------------------ servers


class RedisServer:
    """A redis-server on 127.0.0.1 with nothing on disk, stopped by its PID."""

    def __init__(self, workdir, port=None, args=()):
        self.port = port or free_port()
        self.dir = workdir
        self.args = list(args)
        self.password = None
        if "--requirepass" in self.args:
            self.password = self.args[self.args.index("--requirepass") + 1]
        self.start()

    def start(self):
        self.log = open(os.path.join(self.dir, "redis-%d.log" % self.port), "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no"] + self.args,
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                s.sendall(encode("PING"))
                reply = s.recv(100)
                s.close()
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("redis-server on port %d did not start" % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def cli(self, *args):
        cmd = [REDIS_CLI, "-p", str(self.port), "--raw"]
        if self.password:
            cmd += ["--no-auth-warning", "-a", self.password]
        r = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def keys(self):
        return set(self.cli("KEYS", "*").split())

    def get(self, key):
        return self.cli("GET", key).rstrip("\n")

    def calls(self, command):
        """How often the server ran command (INFO commandstats)."""
        for line in self.cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_%s:" % command):
                return int(line.split("calls=")[1].split(",")[0])
        return 0


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Three redis-servers for the whole module, emptied before each test that uses them."""
    d = str(tmp_path_factory.mktemp("redis"))
    made = []
    try:
        for _ in range(3):
            made.append(RedisServer(d))
        yield made
    finally:
        for s in made:
            s.stop()


@pytest.fixture
def redis3(servers):
    for s in servers:
        s.cli("FLUSHALL")
        s.cli("CONFIG", "RESETSTAT")
    return servers


@pytest.fixture
def own_servers(tmp_path):
    """A factory for servers a test stops, pauses or configures itself."""
    made = []

    def make(**kw):
        s = RedisServer(str(tmp_path), **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


# ------------------------------------------------------------------ config


def redis_filter(catch_all="redis", routes=None, stat_prefix="rp", op_timeout="1s", settings=None,
                 case_insensitive=False, **extra):
    prefix_routes = {}
    if routes:
        prefix_routes["routes"] = routes
    if case_insensitive:
        prefix_routes["case_insensitive"] = True
    if catch_all:
        prefix_routes["catch_all_route"] = catch_all if isinstance(catch_all, dict) else {"cluster": catch_all}
    st = {"op_timeout": op_timeout}
    st.update(settings or {})
    cfg = {"@type": RP_TYPE, "stat_prefix": stat_prefix, "settings": st, "prefix_routes": prefix_routes}
    cfg.update(extra)
    return {"name": "envoy.filters.network.redis_proxy", "typed_config": cfg}


def listener(port, filt, name=None):
    return {"name": name or "redis_%d" % port, "address": helpers.sock_addr(port),
            "filter_chains": [{"filters": [filt]}]}


def redis_cluster(name, servers, lb_policy="MAGLEV", password=None, username=None, **extra):
    c = helpers.cluster(name, [("127.0.0.1", s.port) for s in servers], lb_policy=lb_policy,
                        connect_timeout="1s", **extra)
    if password:
        opts = {"@type": OPTS_TYPE, "auth_password": {"inline_string": password}}
        if username:
            opts["auth_username"] = {"inline_string": username}
        c["typed_extension_protocol_options"] = {OPTS_KEY: opts}
    return c


def start(herald, port, servers, filt=None, lb_policy="MAGLEV", concurrency=1, drain_time=1, **kw):
    lp = port()
    cfg = helpers.bootstrap([listener(lp, filt or redis_filter(**kw))],
                            [redis_cluster("redis", servers, lb_policy)])
    return herald(cfg, concurrency=concurrency, drain_time=drain_time), lp


def where(servers, key):
    """The servers holding key."""
    return [s for s in servers if s.cli("EXISTS", key).strip() == "1"]


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("lb_policy", ["MAGLEV", "RING_HASH"])
def test_keys_hashed_over_hosts(herald, port, redis3, lb_policy):
    """SET/GET through herald: each key lives on exactly one server, the same
    one every time (another herald with two workers finds every key), and the
    keys are spread over all three."""
    h, lp = start(herald, port, redis3, lb_policy=lb_policy)
    c = Client(lp)
    keys = ["key:%d" % i for i in range(300)]
    c.send(*[("SET", k, "v1-" + k) for k in keys])
    assert [c.read() for _ in keys] == ["OK"] * len(keys)
    c.send(*[("SET", k, "v2-" + k) for k in keys])   # the same key goes to the same server
    assert [c.read() for _ in keys] == ["OK"] * len(keys)
    c.close()
    held = [s.keys() for s in redis3]
    assert sum(len(k) for k in held) == len(keys), "a key is on more than one server: %s" % [len(k) for k in held]
    assert set().union(*held) == set(keys)
    for k in held:
        assert len(k) > len(keys) // 10, "keys are not spread: %s" % [len(x) for x in held]
    for s, k in zip(redis3, held):
        probe = sorted(k)[0]
        assert s.get(probe) == "v2-" + probe
    h2, lp2 = start(herald, port, redis3, lb_policy=lb_policy, concurrency=2)
    c2 = Client(lp2)
    c2.send(*[("GET", k) for k in keys])
    assert [c2.read() for _ in keys] == [("v2-" + k).encode() for k in keys]
    c2.close()
    h.wait_stat("redis.rp.command.set.success", lambda v: v == 600)
    assert h.stat("redis.rp.command.set.total") == 600
    assert h.stat("redis.rp.command.set.error") == 0
    assert h.stat("cluster.redis.upstream_rq_total") == 600
    assert h.stat("redis.rp.downstream_rq_total") == 600


def test_multi_key_commands(herald, port, redis3):
    h, lp = start(herald, port, redis3)
    c = Client(lp)
    keys = ["mk%d" % i for i in range(40)]
    args = []
    for k in keys:
        args += [k, "val-" + k]
    assert c.call("MSET", *args) == "OK"
    spread = [len(s.keys()) for s in redis3]
    assert sum(spread) == 40 and min(spread) > 0, spread
    assert all(len(where(redis3, k)) == 1 for k in keys[:5])
    got = c.call("MGET", keys[0], "missing", *keys[1:])
    assert got == [b"val-" + keys[0].encode(), None] + [b"val-" + k.encode() for k in keys[1:]]
    assert c.call("EXISTS", *keys[:10], "missing", keys[0]) == 11
    assert c.call("TOUCH", *keys[:3]) == 3
    assert c.call("DEL", *keys[:20], "missing") == 20
    assert c.call("UNLINK", *keys[20:30]) == 10
    assert c.call("EXISTS", *keys) == 10
    assert sum(len(s.keys()) for s in redis3) == 10
    # a wrong type on one server: MGET keeps the others, DEL/MSET count errors
    assert c.call("LPUSH", "alist", "x") == 1
    assert c.call("SET", "astr", "y") == "OK"
    assert c.call("MGET", "astr", "alist") == [b"y", Err("WRONGTYPE Operation against a key holding the "
                                                          "wrong kind of value")]
    assert c.call("MSET", "a", "1", "b") == Err("wrong number of arguments for 'MSET' command")
    assert c.call("GET") == Err("invalid request")
    c.close()
    h.wait_stat("redis.rp.command.mget.total", lambda v: v == 2)
    assert h.stat("redis.rp.command.mget.success") == 1
    assert h.stat("redis.rp.command.mget.error") == 1
    assert h.stat("redis.rp.command.mset.error") == 1
    assert h.stat("redis.rp.command.del.success") == 1
    assert h.stat("redis.rp.splitter.invalid_request") == 1


def test_pipeline_answered_in_order(herald, port, redis3):
    """Thousands of commands in one write, to all three servers, one of them
    slowed by a Lua busy loop: the replies come back in request order."""
    h, lp = start(herald, port, redis3, concurrency=2)
    c = Client(lp)
    slow = "local i = 0 while i < 2000000 do i = i + 1 end return redis.call('GET', KEYS[1])"
    cmds, want = [], []
    for i in range(3000):
        k = "p%d" % i
        if i % 500 == 0:
            cmds.append(("EVAL", slow, 1, k))
            want.append(None)
        cmds.append(("SET", k, i))
        want.append("OK")
        cmds.append(("INCR", k))
        want.append(i + 1)
        if i % 7 == 0:
            cmds.append(("PING",))
            want.append("PONG")
        if i % 11 == 0:
            cmds.append(("MGET", k, "p0", "nosuch"))
            want.append([str(i + 1).encode(), b"1", None])
        if i % 13 == 0:
            cmds.append(("KEYS", "*"))
            want.append(Err("unsupported command 'KEYS'"))
        cmds.append(("GET", k))
        want.append(str(i + 1).encode())
    c.send(*cmds)
    got = [c.read() for _ in cmds]
    assert got == want
    c.close()
    h.wait_stat("redis.rp.downstream_rq_total", lambda v: v == len(cmds))
    assert h.stat("redis.rp.downstream_rq_active") == 0


def test_redis_py_client(herald, port, redis3):
    """A real client library (python3-redis): pipelines and the usual calls."""
    redis = pytest.importorskip("redis", reason="needs python3-redis")
    h, lp = start(herald, port, redis3)
    r = redis.Redis(host="127.0.0.1", port=lp, socket_timeout=5)
    assert r.ping()
    p = r.pipeline(transaction=False)
    for i in range(200):
        p.set("py%d" % i, i)
        p.get("py%d" % i)
    out = p.execute()
    assert out == [x for i in range(200) for x in (True, str(i).encode())]
    assert r.mget(["py1", "py2", "nosuch"]) == [b"1", b"2", None]
    assert r.hset("h", mapping={"a": 1, "b": 2}) == 2
    assert r.hgetall("h") == {b"a": b"1", b"b": b"2"}
    assert r.delete("py1", "py2", "h") == 3
    with pytest.raises(redis.exceptions.ResponseError, match="unsupported command 'SCAN'"):
        r.execute_command("SCAN", 0)
    r.close()


def test_prefix_routes_remove_prefix(herald, port, redis3):
    a, b, rest = redis3
    lp, lp2 = port(), port()
    routes = [{"prefix": "user:", "remove_prefix": True, "cluster": "a"},
              {"prefix": "user:vip:", "cluster": "b"}]
    cfg = helpers.bootstrap(
        [listener(lp, redis_filter(catch_all="rest", routes=routes, case_insensitive=True)),
         listener(lp2, redis_filter(catch_all=None, routes=routes, stat_prefix="nocatch"))],
        [redis_cluster("a", [a]), redis_cluster("b", [b]), redis_cluster("rest", [rest])])
    h = herald(cfg)
    c = Client(lp)
    assert c.call("SET", "user:1", "one") == "OK"
    assert c.call("SET", "USER:2", "two") == "OK"            # case_insensitive, prefix cut by its length
    assert c.call("SET", "user:vip:3", "three") == "OK"      # the longest prefix wins, kept whole
    assert c.call("SET", "other", "four") == "OK"
    assert c.call("MSET", "user:5", "five", "x6", "six") == "OK"
    assert a.keys() == {"1", "2", "5"}
    assert b.keys() == {"user:vip:3"}
    assert rest.keys() == {"other", "x6"}
    assert c.call("GET", "user:1") == b"one"
    assert c.call("MGET", "user:2", "user:vip:3", "other") == [b"two", b"three", b"four"]
    c.close()
    c = Client(lp2)
    assert c.call("GET", "other") == Err("no upstream host")
    assert c.call("GET", "user:1") == b"one"
    assert c.call("MGET", "user:1", "other") == [b"one", Err("no upstream host")]
    assert c.call("DEL", "other", "user:1") == Err("finished with 1 error(s)")
    c.close()
    h.wait_stat("redis.nocatch.command.get.error", lambda v: v == 1)


def test_mirror_and_hashtags(herald, port, redis3):
    """request_mirror_policy copies writes only (exclude_read_commands);
    enable_hashtagging sends keys sharing a {tag} to one server."""
    main, mirror, _ = redis3
    lp, lp2 = port(), port()
    route = {"cluster": "main", "request_mirror_policy": [{"cluster": "mirror", "exclude_read_commands": True}]}
    cfg = helpers.bootstrap(
        [listener(lp, redis_filter(catch_all=route)),
         listener(lp2, redis_filter(stat_prefix="tags", settings={"enable_hashtagging": True}))],
        [redis_cluster("main", [main]), redis_cluster("mirror", [mirror]), redis_cluster("redis", redis3)])
    herald(cfg)
    c = Client(lp)
    assert c.call("SET", "m1", "x") == "OK"
    assert c.call("GET", "m1") == b"x"
    assert c.call("MSET", "m2", "y", "m3", "z") == "OK"
    c.close()
    assert helpers.wait_for(lambda: mirror.keys() == {"m1", "m2", "m3"})
    assert mirror.calls("get") == 0 and main.calls("get") == 1
    for s in redis3:
        s.cli("FLUSHALL")
    c = Client(lp2)
    for i in range(30):
        assert c.call("SET", "{user7}.f%d" % i, i) == "OK"
    c.close()
    held = [len(s.keys()) for s in redis3]
    assert sorted(held) == [0, 0, 30], held


def test_downstream_auth(herald, port, redis3):
    lp, lp2, lp3 = port(), port(), port()
    cfg = helpers.bootstrap(
        [listener(lp, redis_filter(stat_prefix="pw", downstream_auth_passwords=[
            {"inline_string": "s3cret"}, {"inline_bytes": "b3RoZXI="}])),   # "other"
         listener(lp2, redis_filter(stat_prefix="acl", downstream_auth_username={"inline_string": "app"},
                                    downstream_auth_passwords=[{"inline_string": "s3cret"}])),
         listener(lp3, redis_filter(stat_prefix="open"))],
        [redis_cluster("redis", redis3)])
    herald(cfg)
    c = Client(lp)
    assert c.call("GET", "a") == Err("NOAUTH Authentication required.")
    assert c.call("PING") == Err("NOAUTH Authentication required.")
    assert c.call("AUTH", "wrong") == Err("ERR invalid password")
    assert c.call("AUTH", "s3cret") == "OK"
    assert c.call("SET", "a", "1") == "OK"
    assert c.call("AUTH", "wrong") == Err("ERR invalid password")
    assert c.call("GET", "a") == Err("NOAUTH Authentication required.")
    assert c.call("AUTH", "other") == "OK"
    assert c.call("AUTH", "default", "s3cret") == "OK"
    assert c.call("GET", "a") == b"1"
    c.close()
    c = Client(lp2)
    assert c.call("AUTH", "someone", "s3cret") == Err("WRONGPASS invalid username-password pair")
    assert c.call("GET", "a") == Err("NOAUTH Authentication required.")
    assert c.call("AUTH", "app", "s3cret") == "OK"
    assert c.call("GET", "a") == b"1"
    c.close()
    c = Client(lp3)
    assert c.call("AUTH", "x") == Err("ERR Client sent AUTH, but no password is set")
    assert c.call("AUTH", "u", "x") == Err("ERR Client sent AUTH, but no username-password pair is set")
    assert c.call("GET", "a") == b"1"
    c.close()
    # AUTH stays in the proxy: no server saw one
    assert sum(s.calls("auth") for s in redis3) == 0


def test_upstream_auth(herald, port, own_servers):
    """RedisProtocolOptions on the cluster: herald AUTHs to the servers
    (password only, and ACL user + password); without them the server's
    NOAUTH comes through."""
    pw = own_servers(args=["--requirepass", "upw"])
    acl = own_servers(args=["--user", "proxy", "on", ">ppw", "~*", "+@all", "--user", "default", "off"])
    acl.password = None
    lp, lp2, lp3 = port(), port(), port()
    cfg = helpers.bootstrap(
        [listener(lp, redis_filter(catch_all="pw", stat_prefix="a")),
         listener(lp2, redis_filter(catch_all="acl", stat_prefix="b")),
         listener(lp3, redis_filter(catch_all="nopw", stat_prefix="c"))],
        [redis_cluster("pw", [pw], password="upw"), redis_cluster("acl", [acl], password="ppw", username="proxy"),
         redis_cluster("nopw", [pw])])
    herald(cfg)
    c = Client(lp)
    assert c.call("SET", "k", "v") == "OK"
    assert c.call("GET", "k") == b"v"
    c.close()
    c = Client(lp2)
    assert c.call("SET", "k2", "v2") == "OK"
    c.close()
    assert acl.cli("--user", "proxy", "--pass", "ppw", "--no-auth-warning", "GET", "k2").strip() == "v2"
    c = Client(lp3)
    assert c.call("GET", "k").startswith("NOAUTH")
    c.close()


def test_local_and_unsupported_commands(herald, port, redis3):
    h, lp = start(herald, port, redis3)
    c = Client(lp)
    assert c.call("PING") == "PONG"
    assert c.call("ping", "hello") == b"hello"
    assert c.call("ECHO", "e\r\nx") == b"e\r\nx"
    assert c.call("ECHO") == Err("invalid request")
    t = c.call("TIME")
    assert len(t) == 2 and abs(int(t[0]) - time.time()) < 5 and 0 <= int(t[1]) < 1000000
    refused = ["MULTI", "EXEC", "DISCARD", "WATCH k", "SUBSCRIBE ch", "PSUBSCRIBE c*", "KEYS *", "SCAN 0",
               "CLIENT LIST", "SELECT 1", "HELLO 3", "BLPOP k 0", "FLUSHALL", "INFO", "CONFIG GET *", "MONITOR",
               "DEBUG SLEEP 0", "Foo bar"]
    for cmd in refused:
        assert c.call(*cmd.split()) == Err("unsupported command '%s'" % cmd.split()[0]), cmd
    assert c.call("GET", "x") is None   # the connection is still good
    # not arrays of bulk strings, an empty array
    c.send_raw(b"*1\r\n:1\r\n*0\r\n+PING\r\n*2\r\n$3\r\nGET\r\n*1\r\n$1\r\nx\r\n")
    assert [c.read() for _ in range(4)] == [Err("invalid request")] * 4
    # inline commands, as telnet users type them
    c.send_raw(b"SET inl  val\r\nGET inl\n")
    assert [c.read(), c.read()] == ["OK", b"val"]
    assert c.call("QUIT") == "OK"
    assert c.closed()
    for s in redis3:
        for cmd in ("multi", "keys", "select", "client|list", "subscribe", "flushall", "config|get", "debug"):
            assert s.calls(cmd) == 0, "%s reached a server" % cmd
    h.wait_stat("redis.rp.splitter.unsupported_command", lambda v: v == len(refused))
    assert h.stat("redis.rp.splitter.invalid_request") == 5
    assert h.stat("redis.rp.command.get.total") == 2
    assert h.wait_stat("redis.rp.downstream_cx_active", lambda v: v == 0) == 0


def test_half_close_gets_every_reply(herald, port, redis3):
    """A client that sends its commands and shuts its side (nc -N style) still gets every reply, then EOF."""
    h, lp = start(herald, port, redis3)
    c = Client(lp)
    c.send(*[("SET", "hc%d" % i, i) for i in range(500)], ("MGET", "hc1", "hc499"))
    c.sock.shutdown(socket.SHUT_WR)
    assert [c.read() for _ in range(500)] == ["OK"] * 500
    assert c.read() == [b"1", b"499"]
    assert c.closed()


def test_op_timeout(herald, port, own_servers):
    """A stopped server: its commands are answered "upstream failure" after
    op_timeout, the other server's keep working, and once it runs again the
    proxy reconnects."""
    a, b = own_servers(), own_servers()
    h, lp = start(herald, port, [a, b], op_timeout="0.3s")
    c = Client(lp)
    keys = ["t%d" % i for i in range(40)]
    c.send(*[("SET", k, "v") for k in keys])
    assert [c.read() for _ in keys] == ["OK"] * len(keys)
    on_a = sorted(a.keys())
    on_b = sorted(b.keys())
    assert on_a and on_b
    a.pause()
    try:
        t0 = time.monotonic()
        assert c.call("GET", on_a[0]) == Err("upstream failure")
        took = time.monotonic() - t0
        assert 0.25 < took < 2, took
        c.send(("GET", on_a[1]), ("GET", on_b[0]), ("MGET", on_b[1], on_a[2]))
        assert [c.read() for _ in range(3)] == [Err("upstream failure"), b"v", [b"v", Err("upstream failure")]]
    finally:
        a.resume()
    assert c.call("GET", on_a[0]) == b"v"
    c.close()
    h.wait_stat("cluster.redis.upstream_rq_timeout", lambda v: v == 2)
    assert h.stat("redis.rp.command.get.error") == 2
    assert h.stat("redis.rp.command.mget.error") == 1


def test_killed_server(herald, port, own_servers):
    """A server killed: commands for it get "upstream failure" at once (no
    hang), the rest is served, the proxy stays up, and a restarted server is
    used again."""
    a, b = own_servers(), own_servers()
    h, lp = start(herald, port, [a, b])
    c = Client(lp)
    keys = ["k%d" % i for i in range(40)]
    c.send(*[("SET", k, "v") for k in keys])
    assert [c.read() for _ in keys] == ["OK"] * len(keys)
    on_a, on_b = sorted(a.keys()), sorted(b.keys())
    a.proc.kill()
    a.proc.wait(5)
    t0 = time.monotonic()
    c.send(*[("GET", k) for k in keys])
    got = dict(zip(keys, [c.read() for _ in keys]))
    assert time.monotonic() - t0 < 2
    assert all(got[k] == Err("upstream failure") for k in on_a)
    assert all(got[k] == b"v" for k in on_b)
    assert c.call("MGET", on_a[0], on_b[0]) == [Err("upstream failure"), b"v"]
    assert c.call("EXISTS", on_a[0], on_b[0]) == Err("finished with 1 error(s)")
    status, _ = h.admin_get("/ready")
    assert status == 200
    a.log.close()
    a.start()
    assert c.call("SET", on_a[0], "back") == "OK"
    assert a.get(on_a[0]) == "back"
    c.close()


def test_client_leaves_with_requests_waiting(herald, port, own_servers):
    """Clients that reset their connections while their requests wait on a
    stopped server are gone at once (a client that only closes its side
    waits for its replies); the replies that come later are dropped, and the
    connection to the server serves the next client."""
    a = own_servers()
    h, lp = start(herald, port, [a], op_timeout="10s")
    c = Client(lp)
    assert c.call("SET", "w", "1") == "OK"
    a.pause()
    try:
        for i in range(3):
            c = Client(lp)
            c.send(("GET", "w"), ("INCR", "w"), ("MGET", "w", "w"))
            time.sleep(0.1)
            if i:
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        assert h.wait_stat("redis.rp.downstream_cx_active", lambda v: v == 1) == 1   # the first, still waiting
        assert h.stat("cluster.redis.upstream_rq_active") == 12
    finally:
        a.resume()
    c = Client(lp)
    assert c.call("GET", "w") == b"4"
    c.close()
    assert h.wait_stat("redis.rp.downstream_cx_active", lambda v: v == 0) == 0
    h.wait_stat("cluster.redis.upstream_rq_active", lambda v: v == 0)
    assert h.stat("redis.rp.downstream_rq_active") == 0
    assert h.stat("cluster.redis.upstream_cx_total") == 1


def test_drain_closes_idle_clients(herald, port, redis3):
    """On SIGTERM an idle client connection is closed at once (not at the
    end of the 20 s drain time) and herald exits."""
    h, lp = start(herald, port, redis3, drain_time=20)
    c = Client(lp)
    assert c.call("PING") == "PONG"
    t0 = time.monotonic()
    h.signal(signal.SIGTERM)
    assert c.closed(timeout=10)
    assert h.wait_exit(10) == 0
    assert time.monotonic() - t0 < 5, "the idle connection held the drain"
    c.close()


@pytest.mark.parametrize("bad,why", [
    (b"$abc\r\n", "bad length"),
    (b"*99999999999\r\n", "array too long"),
    (b"*1\r\n$999999999999\r\n", "bulk too long"),
    (b"*1\r\n" * 12 + b"$1\r\nx\r\n", "nested too deep"),
    (b"+OK\rX", "CR without LF"),
    (b"A" * 70000, "inline line too long"),
    (b"*2\r\n$3\r\nGET\r\n$1\r\nxy\r\n", "bulk longer than announced"),
])
def test_bad_input_closed_cleanly(herald, port, redis3, bad, why):
    """Requests before the bad bytes are answered, then "downstream protocol
    error", then the close; counted; the proxy goes on serving."""
    h, lp = start(herald, port, redis3)
    c = Client(lp)
    c.send_raw(encode("SET", "before", "1") + encode("GET", "before") + bad)
    assert c.read() == "OK"
    assert c.read() == b"1"
    assert c.read() == Err("downstream protocol error")
    assert c.closed()
    c.close()
    h.wait_stat("redis.rp.downstream_cx_protocol_error", lambda v: v == 1)
    assert h.stat("redis.rp.downstream_rq_total") == 2
    c = Client(lp)
    assert c.call("GET", "before") == b"1"
    c.close()
    assert h.wait_stat("redis.rp.downstream_cx_rx_bytes_buffered", lambda v: v == 0) == 0


def test_big_values_and_backpressure(herald, port, redis3):
    """An 8 MiB value both ways, and a client that reads nothing while 2000
    big replies pile up: reading from it pauses, memory stays bounded, and
    every reply still arrives in order once it reads."""
    h, lp = start(herald, port, redis3)
    c = Client(lp, timeout=20)
    big = os.urandom(8 << 20)
    assert c.call("SET", "big", big) == "OK"
    assert c.call("GET", "big") == big
    assert c.call("SET", "mid", b"m" * 65536) == "OK"
    rss0 = h.rss_kb()
    n = 2000
    c.send(*[("GET", "mid") for _ in range(n)])   # 128 MiB of replies
    time.sleep(1)
    grew = h.rss_kb() - rss0
    assert grew < 48 * 1024, "herald grew by %d KiB holding replies for a client that does not read" % grew
    got = [c.read() for _ in range(n)]
    assert got == [b"m" * 65536] * n
    c.close()


def test_stats_names(herald, port, redis3):
    """Envoy's stat names under redis.<stat_prefix>., gauges back to 0 once the clients left."""
    h, lp = start(herald, port, redis3, latency_in_micros=True)
    for _ in range(2):
        c = Client(lp)
        assert c.call("SET", "s", "1") == "OK"
        assert c.call("GET", "s") == b"1"
        assert c.call("SCAN", 0) == Err("unsupported command 'SCAN'")
        c.close()
    h.wait_stat("redis.rp.downstream_cx_active", lambda v: v == 0)
    st = h.stats()
    want = {"redis.rp.downstream_cx_total": 2, "redis.rp.downstream_cx_active": 0,
            "redis.rp.downstream_cx_protocol_error": 0, "redis.rp.downstream_cx_drain_close": 0,
            "redis.rp.downstream_rq_total": 6, "redis.rp.downstream_rq_active": 0,
            "redis.rp.downstream_cx_rx_bytes_buffered": 0, "redis.rp.downstream_cx_tx_bytes_buffered": 0,
            "redis.rp.splitter.unsupported_command": 2, "redis.rp.splitter.invalid_request": 0,
            "redis.rp.command.get.total": 2, "redis.rp.command.get.success": 2, "redis.rp.command.get.error": 0,
            "redis.rp.command.set.total": 2, "cluster.redis.upstream_rq_total": 4,
            "cluster.redis.upstream_rq_active": 0}
    assert {k: st.get(k) for k in want} == want
    assert st["redis.rp.downstream_cx_rx_bytes_total"] > 0 and st["redis.rp.downstream_cx_tx_bytes_total"] > 0
    _, body = h.admin_get("/stats")
    assert "redis.rp.command.get.latency: P0(" in body
    _, prom = h.admin_get("/stats/prometheus")
    assert "envoy_redis_rp_command_get_total" in prom


def test_max_buffer_size_before_flush(herald, port, redis3):
    """Requests held for max_buffer_size_before_flush still go after buffer_flush_timeout."""
    h, lp = start(herald, port, redis3, settings={"max_buffer_size_before_flush": 1 << 20,
                                                   "buffer_flush_timeout": "0.05s"})
    c = Client(lp)
    t0 = time.monotonic()
    assert c.call("SET", "f", "1") == "OK"
    assert time.monotonic() - t0 >= 0.04
    c.send(*[("INCR", "f") for _ in range(100)])
    assert [c.read() for _ in range(100)] == list(range(2, 102))
    c.close()


def test_example_config_validates():
    if not os.path.exists(EXAMPLE):
        pytest.skip("no %s" % EXAMPLE)
    r = run_herald(["--mode", "validate", "-c", EXAMPLE, "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 0, r.stderr
    assert not scan_log(r.stderr)


def test_example_config_runs(herald, port, own_servers, tmp_path):
    """Envoy's example, unchanged but for its ports and the host name of its
    STRICT_DNS cluster: GET/SET through it."""
    if not os.path.exists(EXAMPLE):
        pytest.skip("no %s" % EXAMPLE)
    s = own_servers()
    lp = port()
    text = open(EXAMPLE).read()
    assert "port_value: 1999" in text and "address: redis" in text and "port_value: 6379" in text
    text = (text.replace("port_value: 1999", "port_value: %d" % lp)
            .replace("address: redis\n", "address: localhost\n")
            .replace("port_value: 6379", "port_value: %d" % s.port)
            .replace("port_value: 8001", "port_value: $admin_port")
            .replace("address: 0.0.0.0", "address: 127.0.0.1"))
    h = herald(text)
    c = Client(lp)
    assert c.call("SET", "example", "works") == "OK"
    assert c.call("GET", "example") == b"works"
    c.close()
    assert s.get("example") == "works"
    h.wait_stat("redis.egress_redis.command.get.success", lambda v: v == 1)


@pytest.mark.parametrize("typed,want", [
    ({"faults": [{"fault_type": "ERROR"}]}, "not supported: .*faults"),
    ({"settings": {"op_timeout": "1s", "enable_redirection": True}}, "not supported: enable_redirection"),
    ({"settings": {"op_timeout": "1s", "read_policy": "REPLICA"}}, "not supported: read_policy REPLICA"),
    ({"settings": {"op_timeout": "1s", "dns_cache_config": {}}}, "not supported: .*dns_cache_config"),
    ({"settings": {"enable_hashtagging": True}}, "missing required field 'op_timeout'"),
    ({"settings": None}, "missing required field 'settings'"),
    ({"prefix_routes": {}}, "prefix_routes needs routes or a catch_all_route"),
    ({"prefix_routes": {"routes": [{"prefix": "a", "cluster": "redis"}, {"prefix": "a", "cluster": "redis"}]}},
     "prefix 'a' is given twice"),
    ({"prefix_routes": {"catch_all_route": {"cluster": "redis", "key_formatter": "%KEY%"}}},
     "not supported: .*key_formatter"),
    ({"cluster": "redis"}, "no longer a field"),
    ({"stat_prefix": ""}, "stat_prefix must not be empty"),
    ({"downstream_auth_username": {"inline_string": "u"}}, "downstream_auth_username needs"),
    ({"external_auth_provider": {}}, "not supported: .*external_auth_provider"),
])
def test_config_errors(tmp_path, typed, want):
    import json
    import re
    f = redis_filter()
    f["typed_config"].update(typed)
    f["typed_config"] = {k: v for k, v in f["typed_config"].items() if v is not None}
    cfg = helpers.bootstrap([listener(free_port(), f)], [helpers.cluster("redis", [("127.0.0.1", 1)],
                                                                         lb_policy="MAGLEV")])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    r = run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 1, r.stderr
    assert re.search(r"error: .*bad\.json:\d+:\d+: .*" + want, r.stderr), r.stderr


def test_protocol_options_errors(tmp_path):
    import json
    cl = helpers.cluster("redis", [("127.0.0.1", 1)], lb_policy="MAGLEV")
    cases = [
        ({OPTS_KEY: {"@type": OPTS_TYPE, "auth_username": {"inline_string": "u"}}},
         "auth_username needs auth_password"),
        ({OPTS_KEY: {"@type": OPTS_TYPE, "aws_iam": {}}}, "not supported: .*aws_iam"),
        ({OPTS_KEY: {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"}},
         "must be type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProtocolOptions"),
        ({"envoy.filters.network.thrift_proxy": {}}, "not supported"),
    ]
    import re
    for opts, want in cases:
        c = dict(cl, typed_extension_protocol_options=opts)
        cfg = helpers.bootstrap([listener(free_port(), redis_filter())], [c])
        path = tmp_path / "opts.json"
        path.write_text(json.dumps(cfg))
        r = run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", PLUGIN_DIR])
        assert r.returncode == 1 and re.search(r"error: .*opts\.json:\d+:\d+: .*" + want, r.stderr), (opts, r.stderr)
