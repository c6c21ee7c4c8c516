#!/usr/bin/python3
"""Captures the fuzz_mysql seed corpus from real client traffic.

Starts a throwaway MariaDB (t/integ/mysql_server.py: Debian's mariadb-server,
as t/integ/test_mysql.py does), puts a recording TCP relay on 127.0.0.1 in
front of it, drives real clients through the relay (pymysql, and the mariadb
CLI when present) and writes each session as one seed in t/fuzz/fuzz_mysql.c's
format:

    byte 0        split size selector (here 0x0f: the codec is fed 16-byte pieces)
    records       [dir (0 client->server, 1 server->client) | len (u16 LE) | bytes]

one record per recv() on the relay, in the order the relay saw them (a recv
longer than 65535 bytes becomes several records). Sessions: login + queries,
failed login (1045), prepared statement (COM_STMT_PREPARE/EXECUTE/CLOSE),
multi-statements, SSL request (cut right after the SSL request packet: the TLS
bytes are not kept), COM_INIT_DB / USE, a large-ish result, the mariadb CLI.

Regenerate (offline; needs only what .ci/install-deps installs: mariadb-server,
mariadb-client, python3-pymysql, openssl):

    /usr/bin/python3 t/fuzz/capture_mysql.py [outdir]     # default t/fuzz/corpus_mysql

Seeds differ on each run (salts, thread ids, timestamps), which is fine.
"""

import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integ"))

import pymysql  # noqa: E402
from pymysql.constants import CLIENT, COMMAND  # noqa: E402

import mysql_server  # noqa: E402

SPLIT = 0x0f


class Relay:
    """Accepts one connection at a time on 127.0.0.1 and forwards it to the
    server, recording (dir, bytes) per recv. take() returns the last session."""

    def __init__(self, upstream_port):
        self.up = upstream_port
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.sessions = []
        self.done = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            c, _ = self.ls.accept()
            threading.Thread(target=self._pump, args=(c,), daemon=True).start()

    def _pump(self, c):
        s = socket.create_connection(("127.0.0.1", self.up))
        rec = []
        peer = {c: (s, 0), s: (c, 1)}
        open_ = {c, s}
        while open_:
            r, _, _ = select.select(list(open_), [], [], 30)
            if not r:
                break
            for x in r:
                b = x.recv(65536)
                other, d = peer[x]
                if not b:
                    open_.discard(x)
                    try:
                        other.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                rec.append((d, b))
                other.sendall(b)
        c.close()
        s.close()
        with self.done:
            self.sessions.append(rec)
            self.done.notify_all()

    def take(self, n_before):
        with self.done:
            self.done.wait_for(lambda: len(self.sessions) > n_before, timeout=30)
            return self.sessions[n_before]


def to_seed(rec, cut_after_ssl_request=False):
    out = bytearray([SPLIT])
    for i, (d, b) in enumerate(rec):
        if cut_after_ssl_request and d == 0:
            # the client's first packet is the 32-byte SSL request; what follows is TLS
            out += bytes([0]) + struct.pack("<H", 36) + b[:36]
            break
        for off in range(0, len(b), 0xffff):
            chunk = b[off:off + 0xffff]
            out += bytes([d]) + struct.pack("<H", len(chunk)) + chunk
    return bytes(out)


def connect(port, **kw):
    args = dict(host="127.0.0.1", port=port, user="app", password="secret", database="shop",
                connect_timeout=10, read_timeout=30, autocommit=True)
    args.update(kw)
    return pymysql.connect(**args)


def s_login_query(port, db):
    c = connect(port)
    with c.cursor() as cur:
        cur.execute("SELECT item FROM orders WHERE id = 1")
        cur.execute("INSERT INTO items (v) VALUES (1), (2)")
        cur.execute("UPDATE items SET v = v + 1 WHERE v > %s", (0,))
        cur.execute("SELECT COUNT(*) FROM items")
        cur.execute("DELETE FROM items WHERE v = 12345")
    c.close()


def s_login_fail(port, db):
    try:
        connect(port, password="wrong")
    except pymysql.err.OperationalError as e:
        assert e.args[0] == 1045, e


def _read_until_eof(c):
    while True:
        p = c._read_packet()
        if p.is_eof_packet():
            return


def s_prepared(port, db):
    # pymysql has no binary protocol: drive COM_STMT_* by hand over its connection
    c = connect(port)
    c._execute_command(COMMAND.COM_STMT_PREPARE, "SELECT id, item FROM orders WHERE id = ?")
    p = c._read_packet()
    assert p.is_ok_packet(), p
    data = p.get_all_data()
    stmt_id, ncols, nparams = struct.unpack("<IHH", data[1:9])
    if nparams:
        _read_until_eof(c)
    if ncols:
        _read_until_eof(c)
    # COM_STMT_EXECUTE: id, flags, iterations, null bitmap, new-params-bound, type LONG, value 2
    arg = struct.pack("<IBI", stmt_id, 0, 1) + b"\x00\x01" + b"\x03\x00" + struct.pack("<i", 2)
    c._execute_command(COMMAND.COM_STMT_EXECUTE, arg)
    p = c._read_packet()              # column count
    for _ in range(p.read_length_encoded_integer()):
        c._read_packet()
    _read_until_eof(c)                # the columns' EOF
    _read_until_eof(c)                # binary rows, then EOF
    c._execute_command(COMMAND.COM_STMT_CLOSE, struct.pack("<I", stmt_id))  # no reply
    with c.cursor() as cur:
        cur.execute("SELECT 1")
    c.close()


def s_multi(port, db):
    c = connect(port, client_flag=CLIENT.MULTI_STATEMENTS)
    with c.cursor() as cur:
        cur.execute("SELECT 1; SELECT item FROM orders WHERE id = 2; INSERT INTO items (v) VALUES (7)")
        while cur.nextset():
            pass
        try:
            cur.execute("SELECT * FROM nosuch; SELECT 2")  # ERR ends the batch
        except pymysql.err.ProgrammingError:
            pass
    c.close()


def s_ssl(port, db):
    c = connect(port, ssl={"ca": os.path.join(db.dir, "ca.pem")})
    with c.cursor() as cur:
        cur.execute("SELECT item FROM orders WHERE id = 1")
    c.close()


def s_init_db(port, db):
    c = connect(port, database=None)
    c.select_db("shop")               # COM_INIT_DB
    with c.cursor() as cur:
        cur.execute("SELECT item FROM orders")
        cur.execute("USE shop")
        cur.execute("SELECT COUNT(*) FROM shop.orders")
        try:
            c.select_db("nosuchdb")   # COM_INIT_DB refused (1044)
        except pymysql.err.OperationalError:
            pass
    c.close()


def s_large_result(port, db):
    c = connect(port)
    with c.cursor() as cur:
        cur.execute("SELECT seq, MD5(seq) FROM seq_1_to_1500")
        assert len(cur.fetchall()) == 1500
    c.close()


def s_cli(port, db):
    if not mysql_server.CLI:
        return False
    out = subprocess.run([mysql_server.CLI, "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", "app",
                          "-psecret", "--skip-ssl", "shop", "-N", "-e",
                          "PREPARE s FROM 'SELECT item FROM orders WHERE id = ?'; SET @i = 2; "
                          "EXECUTE s USING @i; DEALLOCATE PREPARE s; SHOW TABLES"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return True


SESSIONS = [
    ("real-login-query.bin", s_login_query),
    ("real-login-fail-1045.bin", s_login_fail),
    ("real-prepared-stmt.bin", s_prepared),
    ("real-multi-statements.bin", s_multi),
    ("real-ssl-request.bin", s_ssl),
    ("real-init-db-use.bin", s_init_db),
    ("real-large-result.bin", s_large_result),
    ("real-cli-session.bin", s_cli),
]


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus_mysql")
    if not mysql_server.available():
        sys.exit("capture_mysql: mariadb-server is not installed (.ci/install-deps)")
    os.makedirs(outdir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="capture_mysql.") as d:
        db = mysql_server.MariaDB(d).start()
        try:
            relay = Relay(db.port)
            for name, fn in SESSIONS:
                n = len(relay.sessions)
                if fn(relay.port, db) is False:
                    print("skipped", name)
                    continue
                seed = to_seed(relay.take(n), cut_after_ssl_request=(fn is s_ssl))
                with open(os.path.join(outdir, name), "wb") as f:
                    f.write(seed)
                print("%-28s %7d bytes" % (name, len(seed)))
        finally:
            db.stop()


if __name__ == "__main__":
    main()
