"""A throwaway MariaDB (Debian's mariadb-server) on 127.0.0.1 for the mysql_proxy
tests and for t/fuzz/capture_mysql.py: own datadir, TLS certificates from a test CA,
database `shop` with user app/secret. No pytest dependency."""

import os
import shutil
import subprocess
import time

from helpers import free_port

MARIADBD = shutil.which("mariadbd") or ("/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
INSTALL_DB = shutil.which("mariadb-install-db")
CLI = shutil.which("mariadb")

SETUP = ("CREATE DATABASE shop",
         "CREATE USER 'app'@'%' IDENTIFIED BY 'secret'",
         "GRANT ALL ON shop.* TO 'app'@'%'",
         "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(64))",
         "CREATE TABLE shop.items (id INT PRIMARY KEY AUTO_INCREMENT, v INT)",
         "CREATE TABLE shop.blobs (id INT PRIMARY KEY AUTO_INCREMENT, b LONGBLOB)",
         "INSERT INTO shop.orders VALUES (1, 'book'), (2, 'pen')",
         "FLUSH PRIVILEGES")


def available():
    return bool(MARIADBD and INSTALL_DB)


def make_certs(d):
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


class MariaDB:
    """start() in directory d; .port, .sock, .dir; stop()."""

    def __init__(self, d):
        self.dir = d
        self.data = os.path.join(d, "data")
        self.sock = os.path.join(d, "mysqld.sock")
        self.port = free_port()
        self.proc = None

    def start(self, timeout=60):
        import pymysql
        d = self.dir
        make_certs(d)
        subprocess.run([INSTALL_DB, "--no-defaults", "--datadir=" + self.data, "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        log = open(os.path.join(d, "mariadbd.log"), "wb")
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", "--datadir=" + self.data, "--socket=" + self.sock,
             "--port=%d" % self.port, "--bind-address=127.0.0.1", "--user=root",
             "--max-allowed-packet=64M", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
             "--ssl-ca=" + os.path.join(d, "ca.pem"),
             "--ssl-cert=" + os.path.join(d, "server.pem"),
             "--ssl-key=" + os.path.join(d, "server.key"),
             "--pid-file=" + os.path.join(d, "m.pid"), "--max-connections=200"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                c = pymysql.connect(unix_socket=self.sock, user="root", password="")
                break
            except pymysql.err.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("mariadbd did not start:\n" +
                                       open(os.path.join(d, "mariadbd.log")).read()[-3000:])
                time.sleep(0.2)
        with c.cursor() as cur:
            for q in SETUP:
                cur.execute(q)
        c.close()
        return self

    def stop(self):
        if not self.proc:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
