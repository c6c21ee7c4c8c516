"""mysql_proxy in front of a real MariaDB (Debian's mariadb-server), with the
mariadb CLI and pymysql: logins, queries, big payloads, TLS, concurrency,
exact stats, and rbac denying DELETE on one table by mysql_proxy's metadata.
Skipped when mariadbd or pymysql is missing."""

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

import helpers

pymysql = pytest.importorskip("pymysql")
MARIADBD = shutil.which("mariadbd") or ("/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
INSTALL_DB = shutil.which("mariadb-install-db")
if not MARIADBD or not INSTALL_DB:
    pytest.skip("mariadb-server is not installed", allow_module_level=True)
CLI = shutil.which("mariadb")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _certs(d):
    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=d)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=herald test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("mariadb"))
    data, sock, port = os.path.join(d, "data"), os.path.join(d, "mysqld.sock"), _free_port()
    _certs(d)
    subprocess.run([INSTALL_DB, "--no-defaults", "--datadir=" + data, "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True, timeout=120)
    log = open(os.path.join(d, "mariadbd.log"), "wb")
    proc = subprocess.Popen([MARIADBD, "--no-defaults", "--datadir=" + data, "--socket=" + sock,
                             "--port=%d" % port, "--bind-address=127.0.0.1", "--user=root",
                             "--max-allowed-packet=64M", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
                             "--ssl-ca=" + os.path.join(d, "ca.pem"),
                             "--ssl-cert=" + os.path.join(d, "server.pem"),
                             "--ssl-key=" + os.path.join(d, "server.key"),
                             "--pid-file=" + os.path.join(d, "m.pid"), "--max-connections=200"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            c = pymysql.connect(unix_socket=sock, user="root", password="")
            break
        except pymysql.err.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("mariadbd did not start:\n" + open(os.path.join(d, "mariadbd.log")).read()[-3000:])
            time.sleep(0.2)
    with c.cursor() as cur:
        for q in ("CREATE DATABASE shop",
                  "CREATE USER 'app'@'%' IDENTIFIED BY 'secret'",
                  "GRANT ALL ON shop.* TO 'app'@'%'",
                  "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(64))",
                  "CREATE TABLE shop.items (id INT PRIMARY KEY AUTO_INCREMENT, v INT)",
                  "CREATE TABLE shop.blobs (id INT PRIMARY KEY AUTO_INCREMENT, b LONGBLOB)",
                  "INSERT INTO shop.orders VALUES (1, 'book'), (2, 'pen')",
                  "FLUSH PRIVILEGES"):
            cur.execute(q)
    c.close()
    yield {"port": port, "sock": sock, "dir": d}
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def config(db_port, listen, rbac=False):
    filters = [{"name": "envoy.filters.network.mysql_proxy",
                "typed_config": {"@type": "type.googleapis.com/"
                                 "envoy.extensions.filters.network.mysql_proxy.v3.MySQLProxy",
                                 "stat_prefix": "db"}}]
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


def test_mysql_sessions_stats_and_payloads(mariadb, herald, port):
    lp = port()
    h = herald(config(mariadb["port"], lp))
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
