"""mongo_proxy: the real pymongo driver (Debian python3-pymongo) through
herald to mongo_double.MongoDouble, a wire-protocol TEST DOUBLE (no MongoDB
server is available here). Stats, the JSON access log, dynamic metadata (seen
in the debug log), zlib OP_COMPRESSED, TLS passthrough, the delay fault, and
hostile input (bytes must pass untouched, decoding_error counted)."""

import json
import os
import shutil
import socket
import struct
import subprocess
import time

import pytest

from helpers import EchoServer, bootstrap, cluster, tcp_listener

pymongo = pytest.importorskip("pymongo", reason="needs python3-pymongo")
bson = pytest.importorskip("bson")

from mongo_double import MongoDouble  # noqa: E402

MONGO_TYPE = "type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy"


def mongo_filter(**extra):
    cfg = {"@type": MONGO_TYPE, "stat_prefix": "mp"}
    cfg.update(extra)
    return {"name": "envoy.filters.network.mongo_proxy", "typed_config": cfg}


def start(herald, port, upstream_port, **extra):
    lp = port()
    cfg = bootstrap([tcp_listener(lp, "db", before=[mongo_filter(**extra)])],
                    [cluster("db", [("127.0.0.1", upstream_port)])])
    return herald(cfg), lp


def client(lp, **kw):
    return pymongo.MongoClient("127.0.0.1", lp, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
                               socketTimeoutMS=10000, **kw)


@pytest.fixture
def double(port):
    made = []

    def make(**kw):
        d = MongoDouble(port(), **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


def crud(db):
    db.c.insert_many([{"_id": i, "x": i % 3} for i in range(250)])
    assert len(list(db.c.find({"x": 1}))) == 83
    assert len(list(db.c.find().batch_size(50))) == 250          # 4 getMores
    db.c.update_one({"_id": 1}, {"$set": {"y": 2}})
    assert db.c.find_one({"_id": 1}) == {"_id": 1, "x": 1, "y": 2}
    assert len(list(db.c.aggregate([{"$match": {"x": 2}}]))) == 83
    db.c.delete_many({"x": 0})
    blob = os.urandom(8 << 20)                                    # an 8 MiB document
    db.big.insert_one({"_id": "big", "blob": blob})
    assert db.big.find_one({"_id": "big"})["blob"] == blob


REPLY_HISTOGRAMS = ("reply_num_docs", "reply_size", "reply_time_ms")


def check_reply_histograms(h, p):
    """Envoy's per command and per collection reply histograms, recorded once
    replies are matched to their requests by responseTo."""
    names = [p + "cmd.%s.%s" % (cmd, n) for cmd in ("find", "getMore", "insert") for n in REPLY_HISTOGRAMS]
    names += [p + "collection.c.query." + n for n in REPLY_HISTOGRAMS]
    status, text = h.admin_get("/stats")
    assert status == 200
    lines = dict(x.split(": ", 1) for x in text.splitlines() if ": " in x)
    for n in names:
        assert n in lines, n
        assert "No recorded values" not in lines[n], (n, lines[n])
        assert "P100(" in lines[n], (n, lines[n])
    status, body = h.admin_get("/stats?format=json")
    assert status == 200
    hist = [x["histograms"] for x in json.loads(body)["stats"] if "histograms" in x]
    assert hist, body[:500]
    computed = {x["name"]: x["values"] for x in hist[0]["computed_quantiles"]}
    for n in names:
        assert n in computed, n
        # a histogram with no values has null quantiles; the max (P100) is set once counted
        assert computed[n][-1]["cumulative"] is not None, (n, computed[n])
    p100 = {n: computed[n][-1]["cumulative"] for n in names}
    # find of {x: 1} returns 83 documents (in its first batch of 101), the whole-collection find 101
    assert p100[p + "cmd.find.reply_num_docs"] >= 83, p100
    assert p100[p + "collection.c.query.reply_num_docs"] >= 83, p100
    # the 8 MiB document comes back in one find reply
    assert p100[p + "cmd.find.reply_size"] >= (8 << 20), p100
    # only unmatched names are absent: insert replies carry one body document
    assert p100[p + "cmd.insert.reply_num_docs"] >= 1, p100


def test_mongo_crud_stats_log_metadata(herald, port, double, tmp_path):
    d = double()
    log = str(tmp_path / "mongo.log")
    h, lp = start(herald, port, d.port, access_log=log, emit_dynamic_metadata=True,
                  commands=["insert", "update", "delete", "find", "getMore", "aggregate"])
    with client(lp) as c:
        crud(c.test)
    p = "mongo.mp."
    h.wait_stat(p + "cmd.delete.total", lambda v: v >= 1)
    st = h.stats()
    assert st[p + "decoding_error"] == 0
    assert st[p + "op_query"] >= 1          # the legacy isMaster handshake
    assert st[p + "op_reply"] >= 1
    assert st[p + "op_msg"] >= 10 and st[p + "op_msg_reply"] >= 10
    assert st[p + "cmd.insert.total"] == 2
    assert st[p + "cmd.update.total"] == 1
    assert st[p + "cmd.delete.total"] == 1
    assert st[p + "cmd.getMore.total"] == 4
    assert st[p + "cmd.find.total"] == 4
    assert st[p + "cmd.aggregate.total"] == 1
    assert st[p + "collection.c.query.total"] == 3
    assert st[p + "collection.c.query.scatter_get"] == 2
    assert st[p + "op_reply_valid_cursor"] >= 4
    assert st[p + "op_query_active"] == 0
    check_reply_histograms(h, p)
    lines = [json.loads(x) for x in open(log).read().splitlines()]
    cmds = [x["message"]["command"] for x in lines]
    assert cmds.count("insert") == 2 and cmds.count("getMore") == 4
    assert all(set(x) >= {"time", "message", "upstream_host"} for x in lines)
    ins = [x["message"] for x in lines if x["message"]["command"] == "insert"]
    assert ins[0]["db"] == "test" and ins[0]["collection"] == "c" and ins[0]["opcode"] == "OP_MSG"
    assert any(x["message"]["length"] > (8 << 20) for x in lines)
    text = h.log()
    assert "envoy.filters.network.mongo_proxy: test.c = insert,query,update,get" in text or \
        "test.c = insert,query" in text, text[-3000:]


def test_mongo_zlib_compressed(herald, port, double):
    d = double()
    h, lp = start(herald, port, d.port)
    with client(lp, compressors="zlib") as c:
        crud(c.test)
    p = "mongo.mp."
    v = h.wait_stat(p + "op_compressed", lambda v: v >= 20)
    assert v >= 20
    st = h.stats()
    assert st[p + "decoding_error"] == 0
    assert st[p + "op_query_active"] == 0


def test_mongo_tls_passthrough(herald, port, double, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    key, crt = str(tmp_path / "k.pem"), str(tmp_path / "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    d = double(certfile=crt, keyfile=key)
    h, lp = start(herald, port, d.port)
    with client(lp, tls=True, tlsAllowInvalidCertificates=True) as c:
        c.test.t.insert_one({"_id": 1})
        assert c.test.t.find_one({"_id": 1}) == {"_id": 1}
    st = h.stats()
    assert st["mongo.mp.op_msg"] == 0 and st["mongo.mp.op_query"] == 0   # opaque: nothing decoded


def test_mongo_delay_fault(herald, port, double):
    d = double()
    h, lp = start(herald, port, d.port,
                  delay={"fixed_delay": "0.3s", "percentage": {"numerator": 100, "denominator": "HUNDRED"}})
    with client(lp) as c:
        c.admin.command("ping")
        t0 = time.monotonic()
        c.admin.command("ping")
        took = time.monotonic() - t0
    assert took >= 0.28, took
    assert h.stat("mongo.mp.delays_injected") >= 2


def frame(op, body, rid=1, to=0):
    return struct.pack("<iiii", 16 + len(body), rid, to, op) + body


def echo_all(lp, data, timeout=5):
    s = socket.create_connection(("127.0.0.1", lp), timeout=timeout)
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        b = s.recv(1 << 20)
        if not b:
            break
        got += b
    s.close()
    return got


def test_mongo_hostile_input_passes(herald, port, upstreams):
    echo = upstreams(EchoServer)
    h, lp = start(herald, port, echo.port)
    # a BSON nesting bomb in a well-framed OP_MSG
    depth = 2000
    inner = b"\x05\x00\x00\x00\x00"
    for _ in range(depth):
        inner = struct.pack("<i", len(inner) + 8) + b"\x03a\x00" + inner + b"\x00"
    bomb = frame(2013, b"\0\0\0\0\0" + inner)
    # a document whose length lies, an unknown opcode, a short body: three errors,
    # each in a sound frame, then a valid OP_MSG that must still be decoded
    liar = frame(2013, b"\0\0\0\0\0" + struct.pack("<i", 1 << 30) + b"\x00" * 8)
    unknown = frame(4242, b"xyz")
    short = frame(2004, b"\x00\x00")
    good = frame(2013, b"\0\0\0\0\0" + bson.encode({"ping": 1, "$db": "admin"}))
    data = bomb + liar + unknown + short + good
    assert echo_all(lp, data) == data
    # the echo sends it all back: each error is counted once per direction
    assert h.wait_stat("mongo.mp.decoding_error", lambda v: v >= 8) == 8
    assert h.stat("mongo.mp.op_msg") == 1 and h.stat("mongo.mp.op_msg_reply") == 1
    # 100 MiB claimed: decoding stops for the connection, bytes still pass, nothing allocated for it
    huge = struct.pack("<iiii", 100 << 20, 1, 0, 2013) + os.urandom(256 << 10)
    assert echo_all(lp, huge) == huge
    assert h.wait_stat("mongo.mp.decoding_error", lambda v: v >= 10) == 10
    # random bytes split in odd pieces
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    junk = os.urandom(300000)
    for i in range(0, len(junk), 7777):
        s.sendall(junk[i:i + 7777])
    got = b""
    while len(got) < len(junk):
        b = s.recv(1 << 20)
        if not b:
            break
        got += b
    s.close()
    assert got == junk
    assert h.alive()


class SilentServer:
    """Accepts and reads, never answers: requests stay active."""

    def __init__(self, port):
        import threading
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.port = port
        self.conns = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def stop(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_mongo_close_with_active_request(herald, port):
    srv = SilentServer(port())
    try:
        h, lp = start(herald, port, srv.port)
        s = socket.create_connection(("127.0.0.1", lp), timeout=5)
        s.sendall(frame(2013, b"\0\0\0\0\0" + bson.encode({"find": "c", "$db": "t"})))
        assert h.wait_stat("mongo.mp.op_query_active", lambda v: v == 1) == 1
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # a reset: the connection goes at once
        assert h.wait_stat("mongo.mp.cx_destroy_remote_with_active_rq", lambda v: v == 1) == 1
        assert h.wait_stat("mongo.mp.op_query_active", lambda v: v == 0) == 0
    finally:
        srv.stop()


def test_mongo_config_errors(tmp_path):
    from conftest import PLUGIN_DIR, run_herald
    cfg = bootstrap([tcp_listener(1, "db", before=[mongo_filter(stat_prefx="x",
                                                                delay={"percentage": {"numerator": 5}})])],
                    [cluster("db", [("127.0.0.1", 2)])])
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"].pop("stat_prefix")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    r = run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 1
    assert "did you mean 'stat_prefix'" in r.stderr + r.stdout


NODE_CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mongo_node_client.js")


@pytest.fixture(scope="module")
def node_mongodb(tmp_path_factory):
    """node_modules with the npm `mongodb` driver (6.x), or a skip: a missing
    Node.js or a registry outage is not herald's failure."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("needs node and npm for the npm mongodb driver")
    d = tmp_path_factory.mktemp("node_mongodb")
    try:
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--loglevel=error",
                            "mongodb@6"], cwd=str(d), capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.skip("npm install mongodb@6 took longer than 90 s (registry unreachable?)")
    mods = d / "node_modules"
    if r.returncode != 0 or not (mods / "mongodb").is_dir():
        pytest.skip("npm install mongodb@6 failed (registry unreachable?): " + (r.stderr or r.stdout)[-500:])
    return node, str(mods)


def test_mongo_node_driver(herald, port, double, node_mongodb):
    """The real npm `mongodb` driver (the client the issue names) through
    mongo_proxy + tcp_proxy: handshake, insertOne, find with a filter,
    updateOne, aggregate with $match, a batchSize 4 cursor needing getMore."""
    node, mods = node_mongodb
    d = double()
    h, lp = start(herald, port, d.port, commands=["insert", "update", "find", "getMore", "aggregate"])
    r = subprocess.run([node, NODE_CLIENT, str(lp)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, NODE_PATH=mods))
    assert r.returncode == 0, r.stderr[-3000:] + h.log_tail()
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["insert"] is True
    assert out["find"] == [{"_id": "a", "x": 1}]
    assert out["update"] == {"matched": 1, "modified": 1}
    assert out["after"] == [{"_id": "a", "x": 1, "y": 2}]
    assert sorted(x["_id"] for x in out["agg"] if x["_id"] != "a") == list(range(1, 30, 2))
    assert {"_id": "a", "x": 1, "y": 2} in out["agg"] and len(out["agg"]) == 16
    assert [x["_id"] for x in out["batched"]] == list(range(0, 30, 2))   # 4 + 4 + 4 + 3
    assert d.ops.count("getMore") == 3
    p = "mongo.mp."
    h.wait_stat(p + "cmd.getMore.total", lambda v: v >= 3)
    st = h.stats()
    assert st[p + "decoding_error"] == 0
    # insertOne + insertMany, 3 finds, updateOne, aggregate, 3 getMores (+ handshakes, endSessions)
    assert st[p + "op_msg"] >= 10 and st[p + "op_msg_reply"] >= 10
    assert st[p + "cmd.insert.total"] == 2
    assert st[p + "cmd.find.total"] == 3
    assert st[p + "cmd.update.total"] == 1
    assert st[p + "cmd.aggregate.total"] == 1
    assert st[p + "cmd.getMore.total"] == 3
    assert st[p + "op_query_active"] == 0
    assert h.alive()
