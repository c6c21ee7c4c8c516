"""mysql_proxy in front of a real MariaDB (Debian's mariadb-server), with the
mariadb CLI and pymysql: logins, queries, big payloads, TLS, concurrency,
exact stats, and rbac denying DELETE on one table by mysql_proxy's metadata.
Skipped when mariadbd or pymysql is missing."""

import json
import os
import subprocess
import threading
import time

import pytest

import helpers

pymysql = pytest.importorskip("pymysql")
import mysql_server  # noqa: E402 -- after the importorskip
if not mysql_server.available():
    pytest.skip("mariadb-server is not installed", allow_module_level=True)
CLI = mysql_server.CLI


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    m = mysql_server.MariaDB(str(tmp_path_factory.mktemp("mariadb")))
    try:
        m.start()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield {"port": m.port, "sock": m.sock, "dir": m.dir}
    m.stop()


def config(db_port, listen, rbac=False, access_log=None):
    mp = {"@type": "type.googleapis.com/envoy.extensions.filters.network.mysql_proxy.v3.MySQLProxy",
          "stat_prefix": "db"}
    if access_log:
        mp["access_log"] = access_log
    filters = [{"name": "envoy.filters.network.mysql_proxy", "typed_config": mp}]
    if rbac:
        filters.append({"name": "envoy.filters.network.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "stat_prefix": "sqlrbac", "enforcement_type": "CONTINUOUS",
            "rules": {"action": "DENY", "policies": {"no-delete-orders": {
                "permissions": [{"metadata": {
                    "filter": "envoy.filters.network.mysql_proxy",
                    "path": [{"key": "orders.shop"}],
                    "value": {"list_match": {"one_of": {"string_match": {"exact": "delete"}}}}}}],
                "principals": [{"any": True}]}}}}})
    filters.append({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "mysql_tcp", "cluster": "mysql"}})
    return {"static_resources": {
        "listeners": [{"name": "mysql", "address": helpers.sock_addr(listen),
                       "filter_chains": [{"filters": filters}]}],
        "clusters": [{"name": "mysql", "type": "STATIC", "connect_timeout": "2s",
                      "load_assignment": {"cluster_name": "mysql", "endpoints": [{"lb_endpoints": [
                          {"endpoint": {"address": helpers.sock_addr(db_port)}}]}]}}]}}


def connect(port, **kw):
    args = dict(host="127.0.0.1", port=port, user="app", password="secret", database="shop",
                connect_timeout=10, read_timeout=30)
    args.update(kw)
    return pymysql.connect(**args)


def test_mysql_sessions_stats_and_payloads(mariadb, herald, port, tmp_path):
    lp = port()
    alog = str(tmp_path / "mysql_access.log")
    h = herald(config(mariadb["port"], lp, access_log=alog))
    # a known sequence: 1 good login with 3 queries, 1 failed login
    c = connect(lp, autocommit=True)
    with c.cursor() as cur:
        cur.execute("SELECT item FROM orders WHERE id = 1")
        assert cur.fetchone() == ("book",)
        cur.execute("INSERT INTO items (v) VALUES (1), (2)")
        cur.execute("SELECT COUNT(*) FROM items")
    c.close()
    with pytest.raises(pymysql.err.OperationalError) as e:
        connect(lp, password="wrong")
    assert e.value.args[0] == 1045
    h.wait_stat("mysql.db.login_failures", lambda v: v == 1)
    h.wait_stat("mysql.db.sessions", lambda v: v == 2)
    assert h.stat("mysql.db.login_attempts") == 2
    # (autocommit=True matches the server's default: pymysql sends no SET)
    assert h.stat("mysql.db.queries_parsed") == 3
    assert h.stat("mysql.db.queries_parse_error") == 0
    assert h.stat("mysql.db.decoder_errors") == 0
    assert h.stat("mysql.db.protocol_errors") == 0
    # access_log: one JSON line per login result and per query, with the server's answer
    lines = [json.loads(x) for x in open(alog)]
    assert [(x["event"], x["result"]) for x in lines] == [
        ("login", "ok"), ("query", "ok"), ("query", "ok"), ("query", "ok"), ("login", "error")]
    assert lines[4]["error_code"] == 1045 and lines[4]["user"] == "app"
    q = lines[1]
    assert q["query"] == "SELECT item FROM orders WHERE id = 1" and q["user"] == "app"
    assert q["database"] == "shop" and q["tables"] == {"orders.shop": "select"}
    assert lines[2]["tables"] == {"items.shop": "insert"}
    assert all(x["connection_id"] == lines[0]["connection_id"] for x in lines[:4])
    assert lines[0]["time"].endswith("Z") and lines[0]["time"][10] == "T"
    c = connect(lp, autocommit=True)
    with c.cursor() as cur:
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM nosuch WHERE note = 'a\"b\\\\c\u00e9'")
    c.close()
    h.wait_stat("mysql.db.sessions", lambda v: v == 3)
    deadline = time.monotonic() + 5
    while len(open(alog).readlines()) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    last = json.loads(open(alog).readlines()[-1])
    assert last["result"] == "error" and last["error_code"] == 1146
    assert last["query"] == "SELECT * FROM nosuch WHERE note = 'a\"b\\\\c\u00e9'"
    assert h.stat("mysql.db.queries_parsed") == 4

    c = connect(lp, autocommit=True, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    with c.cursor() as cur:
        # multi-statements
        cur.execute("SELECT 1; SELECT item FROM orders WHERE id = 2")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset() and cur.fetchall() == (("pen",),)
        # a 20,000-row result intact
        cur.execute("SELECT seq, MD5(seq) FROM seq_1_to_20000")
        rows = cur.fetchall()
        assert len(rows) == 20000 and rows[-1][0] == 20000 and rows[123][1] == __import__("hashlib").md5(
            b"124").hexdigest()
        # a 20 MiB query: payload over several 16 MiB packets, both ways
        big = os.urandom(20 << 20)
        cur.execute("INSERT INTO blobs (b) VALUES (%s)", (big,))
        cur.execute("SELECT b FROM blobs ORDER BY id DESC LIMIT 1")
        assert cur.fetchone()[0] == big
    # a prepared statement (binary protocol) through the mariadb CLI
    if CLI:
        out = subprocess.run([CLI, "--no-defaults", "-h", "127.0.0.1", "-P", str(lp), "-u", "app", "-psecret",
                              "shop", "-N", "-e",
                              "PREPARE s FROM 'SELECT item FROM orders WHERE id = ?'; SET @i = 2; "
                              "EXECUTE s USING @i; DEALLOCATE PREPARE s"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "pen"
    c.close()
    assert h.stat("mysql.db.decoder_errors") == 0


def test_mysql_tls_and_concurrency(mariadb, herald, port):
    lp = port()
    h = herald(config(mariadb["port"], lp))
    if CLI:
        out = subprocess.run([CLI, "--no-defaults", "-h", "127.0.0.1", "-P", str(lp), "-u", "app", "-psecret",
                              "--ssl", "--ssl-verify-server-cert",
                              "--ssl-ca=" + os.path.join(mariadb["dir"], "ca.pem"), "shop", "-N", "-e",
                              "SELECT item FROM orders WHERE id = 1; SHOW STATUS LIKE 'Ssl_cipher'"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split("\n")[0] == "book"
        assert "Ssl_cipher\t" in out.stdout and out.stdout.strip().split("\t")[-1]
        h.wait_stat("mysql.db.upgraded_to_ssl", lambda v: v == 1)

    errors = []

    def worker(i):
        try:
            c = connect(lp)
            with c.cursor() as cur:
                cur.execute("SELECT %s, item FROM orders WHERE id = 1", (i,))
                assert cur.fetchone() == (i, "book")
            c.close()
        except Exception as e:  # noqa: BLE001 -- collected and reported
            errors.append(repr(e))
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors
    h.wait_stat("mysql.db.login_attempts", lambda v: v >= 50)
    assert h.stat("mysql.db.decoder_errors") == 0


def test_mysql_rbac_denies_delete_on_one_table(mariadb, herald, port):
    lp = port()
    h = herald(config(mariadb["port"], lp, rbac=True))
    c = connect(lp, autocommit=True)
    with c.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM orders")
        assert cur.fetchone() == (2,)
        cur.execute("DELETE FROM items WHERE v = 12345")  # another table: allowed
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("DELETE FROM orders WHERE id = 1")
    h.wait_stat("sqlrbac.rbac.denied", lambda v: v == 1)
    # the row is still there: the DELETE never reached the server
    c = connect(lp)
    with c.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM orders")
        assert cur.fetchone() == (2,)
    c.close()
