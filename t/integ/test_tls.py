"""TLS: DownstreamTlsContext on filter chains, UpstreamTlsContext on clusters,
the tls_inspector listener filter, certificate reload. Real peers: openssl
s_client/s_server and Python's ssl. A throwaway CA and certificates are made
with the openssl command in the test's tmp dir."""

import datetime
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

import helpers
import http_backends as hb

DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UP = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
INSPECTOR = {"name": "envoy.filters.listener.tls_inspector",
             "typed_config": {"@type": "type.googleapis.com/"
                              "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


# ------------------------------------------------------------------ certificates


def run(*cmd, cwd=None):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Pki:
    """A CA and certificates signed by it, in dir."""

    def __init__(self, d, name="ca"):
        self.dir = d
        os.makedirs(d, exist_ok=True)
        self.ca = self.p(name + ".crt")
        self.ca_key = self.p(name + ".key")
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.ca_key, "-out", self.ca,
            "-subj", "/CN=herald test " + name, "-days", "2")
        self.serial = 100

    def p(self, f):
        return os.path.join(self.dir, f)

    def issue(self, name, cn, kind="rsa", san=None, client=False, subj=None):
        """Returns (cert path, key path, serial). san: "TYPE:value,..." (default
        DNS:cn), a list of "TYPE.n = value" lines (values may hold ','), or ""
        for no SAN at all; subj: the whole -subj instead of /CN=cn."""
        key, csr, crt, ext = (self.p(name + x) for x in (".key", ".csr", ".crt", ".ext"))
        if kind == "rsa":
            run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key)
        else:
            run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
        run("openssl", "req", "-new", "-key", key, "-out", csr, "-subj", subj or "/CN=" + cn)
        with open(ext, "w") as f:
            f.write("extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
            if isinstance(san, list):
                f.write("subjectAltName=@alt\n[alt]\n" + "".join(ln + "\n" for ln in san))
            elif san != "":
                f.write("subjectAltName=%s\n" % (san or "DNS:" + cn))
        self.serial += 1
        run("openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-set_serial",
            str(self.serial), "-days", "2", "-out", crt, "-extfile", ext)
        return crt, key, self.serial


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    p = Pki(d)
    p.a_rsa = p.issue("a_rsa", "a.example")
    p.a_ec = p.issue("a_ec", "a.example", kind="ec")
    p.b_rsa = p.issue("b_rsa", "b.example")
    p.client = p.issue("client", "client", san="URI:spiffe://test/client", client=True)
    p.client_bad = p.issue("client_bad", "client", san="URI:spiffe://test/other", client=True)
    p.upstream = p.issue("upstream", "backend.internal")
    other = Pki(os.path.join(d, "other"), "other")
    p.other_ca = other.ca
    p.other_client = other.issue("client2", "client", san="URI:spiffe://test/client", client=True)
    return p


def certs(*pairs):
    return [{"certificate_chain": {"filename": c}, "private_key": {"filename": k}} for c, k, *_ in pairs]


def tls_socket(certificates, tls_params=None, **extra):
    ctx = {"common_tls_context": {"tls_certificates": certificates}}
    if tls_params:
        ctx["common_tls_context"]["tls_params"] = tls_params
    for k, v in extra.items():
        if k in ("validation_context", "alpn_protocols"):
            ctx["common_tls_context"][k] = v
        else:
            ctx[k] = v
    ctx["@type"] = DOWN
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def tls_listener(port, cluster, chains, stat_prefix="tls", listener_filters=None):
    """chains: list of (filter_chain_match or None, transport_socket or None)."""
    fcs = []
    for match, ts in chains:
        fc = {"filters": [helpers.tcp_proxy_filter(cluster, stat_prefix)]}
        if match:
            fc["filter_chain_match"] = match
        if ts:
            fc["transport_socket"] = ts
        fcs.append(fc)
    lst = {"name": "tls_%d" % port, "stat_prefix": stat_prefix, "address": helpers.sock_addr(port),
           "filter_chains": fcs}
    if listener_filters:
        lst["listener_filters"] = listener_filters
    return lst


def client_ctx(pki, cert=None, alpn=None):
    ctx = ssl.create_default_context(cafile=pki.ca)
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_connect(port, ctx, sni, timeout=5):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=sni)


def echo_roundtrip(s, data=b"hello over tls\n"):
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        d = s.recv(65536)
        if not d:
            break
        got += d
    return got


def s_client(port, *args, stdin=b"", timeout=10):
    """openssl s_client; returns (rc, stdout+stderr text)."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args)
    p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def handshake_ok(out):
    return "Cipher is (NONE)" not in out and ("Protocol  :" in out or "Protocol version:" in out or
                                              "New, TLS" in out or "Reused, TLS" in out)


# ------------------------------------------------------------------ termination


def test_tcp_proxy_over_tls_bytes_intact(herald, upstreams, port, pki):
    echo = upstreams(helpers.EchoServer)
    p = port()
    h = herald(helpers.bootstrap([tls_listener(p, "echo", [(None, tls_socket(certs(pki.a_rsa)))])],
                                 [helpers.cluster("echo", [echo.addr])]))
    s = tls_connect(p, client_ctx(pki), "a.example")
    assert s.version() == "TLSv1.3"
    payload = os.urandom(3 << 20)
    got = bytearray()
    # one thread: an SSL object must not be read and written at once
    for off in range(0, len(payload), 65536):
        s.sendall(payload[off:off + 65536])
        while len(got) < off - (256 << 10):
            d = s.recv(1 << 20)
            assert d, "EOF after %d bytes" % len(got)
            got += d
    while len(got) < len(payload):
        d = s.recv(1 << 20)
        assert d, "EOF after %d bytes" % len(got)
        got += d
    assert bytes(got) == payload
    s.close()
    assert h.wait_stat("listener.tls.ssl.handshake", lambda v: v >= 1) >= 1
    st = h.stats()
    assert st.get("listener.tls.ssl.versions.TLSv1.3", 0) >= 1
    assert sum(v for k, v in st.items() if k.startswith("listener.tls.ssl.cipher.")) >= 1
    assert sum(v for k, v in st.items() if k.startswith("listener.tls.ssl.curves.")) >= 1


def test_tls_backpressure_both_ways_bytes_intact(herald, upstreams, port, pki):
    """herald's TLS transport under backpressure: the client uploads 16 MiB
    without reading while the upstream sends 48 MiB (herald's TLS writes to the
    client block, the upstream is paused), then reads it all. Small buffers
    (64 KiB) so the watermarks work all the time. Both hashes must match and
    the upstream's half-close must reach the client as the end of the stream."""
    server = upstreams(helpers.HashServer, send_bytes=48 << 20)
    p = port()
    lst = tls_listener(p, "src", [(None, tls_socket(certs(pki.a_ec)))])
    lst["per_connection_buffer_limit_bytes"] = 65536
    h = herald(helpers.bootstrap([lst], [helpers.cluster("src", [server.addr],
                                                         per_connection_buffer_limit_bytes=65536)]))
    s = tls_connect(p, client_ctx(pki), "a.example", timeout=60)
    sent, sent_sha = helpers.send_pattern(s, 16 << 20)
    time.sleep(0.5)   # herald's output to us is full now: its writes wait for the socket
    got, got_sha = helpers.recv_all(s)
    s.close()
    assert helpers.wait_for(lambda: server.results, 10), "the upstream never saw the end of the upload"
    res = server.results[0]
    assert res["recv"] == sent and res["recv_sha"] == sent_sha, "upload damaged: %d of %d bytes" % (res["recv"], sent)
    assert got == res["sent"] == 48 << 20, "download: %d of %d bytes" % (got, res["sent"])
    assert got_sha == res["sent_sha"], "download damaged"
    assert h.stats().get("listener.tls.ssl.handshake") == 1


def test_old_versions_refused_by_default(herald, upstreams, port, pki):
    echo = upstreams(helpers.EchoServer)
    p = port()
    h = herald(helpers.bootstrap([tls_listener(p, "echo", [(None, tls_socket(certs(pki.a_rsa)))])],
                                 [helpers.cluster("echo", [echo.addr])]))
    for flag in ("-tls1", "-tls1_1"):
        rc, out = s_client(p, flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "a.example")
        assert rc != 0 and not handshake_ok(out), "%s accepted:\n%s" % (flag, out)
    for flag in ("-tls1_2", "-tls1_3"):
        rc, out = s_client(p, flag, "-servername", "a.example")
        assert rc == 0 and handshake_ok(out), "%s refused:\n%s" % (flag, out)
    # a TLS 1.2 client offering only non-forward-secret or non-AEAD ciphers is refused
    for cipher in ("AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA", "AES256-SHA256"):
        rc, out = s_client(p, "-tls1_2", "-cipher", cipher, "-servername", "a.example")
        assert rc != 0 and not handshake_ok(out), "%s accepted:\n%s" % (cipher, out)
    assert h.wait_stat("listener.tls.ssl.connection_error", lambda v: v >= 5) >= 5


def test_old_versions_accepted_when_configured(herald, upstreams, port, pki):
    """Proves the refusal test can fail: the same s_client commands succeed
    against a listener that allows TLS 1.0 and weak ciphers."""
    echo = upstreams(helpers.EchoServer)
    p = port()
    ts = tls_socket(certs(pki.a_rsa), tls_params={"tls_minimum_protocol_version": "TLSv1_0",
                                                  "cipher_suites": ["DEFAULT:@SECLEVEL=0"]})
    h = herald(helpers.bootstrap([tls_listener(p, "echo", [(None, ts)])], [helpers.cluster("echo", [echo.addr])]))
    for flag in ("-tls1", "-tls1_1"):
        rc, out = s_client(p, flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "a.example")
        assert rc == 0 and handshake_ok(out), "%s refused:\n%s" % (flag, out)
    rc, out = s_client(p, "-tls1_2", "-cipher", "AES128-GCM-SHA256", "-servername", "a.example")
    assert rc == 0 and handshake_ok(out), out
    st = h.stats()
    assert st.get("listener.tls.ssl.versions.TLSv1", 0) >= 1 and st.get("listener.tls.ssl.versions.TLSv1.1", 0) >= 1


def test_tls13_suite_order(herald, upstreams, port, pki):
    """s_client offers OpenSSL's order, AES-256-GCM first; herald's default
    picks AES-128-GCM as Envoy (BoringSSL) does, and a configured TLS 1.3
    list is honoured."""
    echo = upstreams(helpers.EchoServer)
    p1, p2 = port(), port()
    chain = certs(pki.a_rsa)
    h = herald(helpers.bootstrap(
        [tls_listener(p1, "echo", [(None, tls_socket(chain))], stat_prefix="dflt"),
         tls_listener(p2, "echo", [(None, tls_socket(chain, tls_params={"cipher_suites": ["TLS_AES_256_GCM_SHA384"]}))],
                      stat_prefix="only256")],
        [helpers.cluster("echo", [echo.addr])]))
    rc, out = s_client(p1, "-tls1_3", "-servername", "a.example")
    assert rc == 0 and "Cipher is TLS_AES_128_GCM_SHA256" in out, out
    rc, out = s_client(p2, "-tls1_3", "-servername", "a.example")
    assert rc == 0 and "Cipher is TLS_AES_256_GCM_SHA384" in out, out
    assert h.wait_stat("listener.dflt.ssl.cipher.TLS_AES_128_GCM_SHA256", lambda v: v >= 1) == 1


def test_validate_warns_about_old_versions(tmp_path, pki):
    import conftest
    cfg = helpers.bootstrap([tls_listener(1, "echo", [(None, tls_socket(
        certs(pki.a_rsa), tls_params={"tls_minimum_protocol_version": "TLSv1_0"}))])],
        [helpers.cluster("echo", [("127.0.0.1", 1)])])
    path = tmp_path / "c.json"
    import json
    path.write_text(json.dumps(cfg))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
    assert r.returncode == 0, r.stderr
    assert "older than 1.2" in r.stderr


def test_bad_tls_config_errors(tmp_path, pki):
    import conftest
    import json
    cases = [
        ({"certificate_chain": {"filename": pki.a_rsa[0]}, "private_key": {"filename": pki.b_rsa[1]}},
         "does not match"),
        ({"certificate_chain": {"filename": "/nonexistent.crt"}, "private_key": {"filename": pki.a_rsa[1]}},
         "cannot read"),
    ]
    for cert, msg in cases:
        cfg = helpers.bootstrap([tls_listener(1, "echo", [(None, tls_socket([cert]))])],
                                [helpers.cluster("echo", [("127.0.0.1", 1)])])
        path = tmp_path / "c.json"
        path.write_text(json.dumps(cfg))
        r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
        assert r.returncode == 1 and msg in r.stderr, r.stderr
    # v2 field and an unknown field
    lst = tls_listener(1, "echo", [(None, None)])
    lst["filter_chains"][0]["tls_context"] = {}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(helpers.bootstrap([lst], [helpers.cluster("echo", [("127.0.0.1", 1)])])))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
    assert r.returncode == 1 and "transport_socket" in r.stderr, r.stderr
    ts = tls_socket(certs(pki.a_rsa))
    ts["typed_config"]["common_tls_context"]["tls_parms"] = {}
    path.write_text(json.dumps(helpers.bootstrap([tls_listener(1, "echo", [(None, ts)])],
                                                 [helpers.cluster("echo", [("127.0.0.1", 1)])])))
    r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
    assert r.returncode == 1 and "tls_params" in r.stderr, r.stderr


def test_rsa_or_ecdsa_by_client_sigalgs(herald, upstreams, port, pki):
    echo = upstreams(helpers.EchoServer)
    p = port()
    h = herald(helpers.bootstrap([tls_listener(p, "echo", [(None, tls_socket(certs(pki.a_rsa, pki.a_ec)))])],
                                 [helpers.cluster("echo", [echo.addr])]))
    for ver in ("-tls1_2", "-tls1_3"):
        rc, out = s_client(p, ver, "-sigalgs", "ECDSA+SHA256", "-servername", "a.example")
        assert rc == 0 and "Peer signature type: ECDSA" in out and "Server public key is 256 bit" in out, out
        rc, out = s_client(p, ver, "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256", "-servername", "a.example")
        assert rc == 0 and "Peer signature type: RSA" in out and "Server public key is 2048 bit" in out, out
    assert h.stat("listener.tls.ssl.handshake") >= 4


def test_sni_picks_chain_and_certificate(herald, upstreams, port, pki):
    ea = upstreams(helpers.EchoServer, tag="A")
    eb = upstreams(helpers.EchoServer, tag="B")
    p = port()
    lst = {"name": "sni", "stat_prefix": "sni", "address": helpers.sock_addr(p),
           "listener_filters": [INSPECTOR],
           "filter_chains": [
               {"filter_chain_match": {"server_names": ["a.example"]}, "transport_socket": tls_socket(certs(pki.a_rsa)),
                "filters": [helpers.tcp_proxy_filter("ca", "a")]},
               {"filter_chain_match": {"server_names": ["b.example"]}, "transport_socket": tls_socket(certs(pki.b_rsa)),
                "filters": [helpers.tcp_proxy_filter("cb", "b")]},
           ]}
    h = herald(helpers.bootstrap([lst], [helpers.cluster("ca", [ea.addr]), helpers.cluster("cb", [eb.addr])]))
    for name, tag in (("a.example", b"A"), ("b.example", b"B")):
        s = tls_connect(p, client_ctx(pki), name)  # verifies the certificate's name too
        cert = s.getpeercert()
        cn = dict(x[0] for x in cert["subject"])["commonName"]
        assert cn == name
        assert helpers.recv_line(s) == tag
        s.close()
        rc, out = s_client(p, "-servername", name)
        assert "CN = %s" % name in out or "CN=%s" % name in out, out
    # an unknown name matches no chain
    raw = socket.create_connection(("127.0.0.1", p), timeout=5)
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.check_hostname = False
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        ctx.wrap_socket(raw, server_hostname="c.example")
    assert h.wait_stat("listener.sni.no_filter_chain_match", lambda v: v >= 1) >= 1
    assert h.stat("tls_inspector.sni_found") >= 5


def test_mtls(herald, upstreams, port, pki):
    echo = upstreams(helpers.EchoServer)
    p = port()
    ts = tls_socket(certs(pki.a_rsa), require_client_certificate=True,
                    validation_context={"trusted_ca": {"filename": pki.ca},
                                        "match_typed_subject_alt_names": [
                                            {"san_type": "URI", "matcher": {"exact": "spiffe://test/client"}}]})
    h = herald(helpers.bootstrap([tls_listener(p, "echo", [(None, ts)])], [helpers.cluster("echo", [echo.addr])]))
    s = tls_connect(p, client_ctx(pki, cert=pki.client), "a.example")
    assert echo_roundtrip(s) == b"hello over tls\n"
    s.close()
    # without a certificate: refused
    rc, out = s_client(p, "-tls1_2", "-servername", "a.example", stdin=b"x\n")
    assert rc != 0 and "alert" in out, out
    # TLS 1.3: the client finishes its handshake first and learns it at its first read
    s = tls_connect(p, client_ctx(pki), "a.example")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        s.sendall(b"x\n")  # the server's alert may already be there
        assert s.recv(100) == b""
        raise ConnectionError("closed")
    assert h.wait_stat("listener.tls.ssl.fail_verify_no_cert", lambda v: v >= 2) >= 2
    # a certificate from another CA: refused, fail_verify_error
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        s = tls_connect(p, client_ctx(pki, cert=pki.other_client), "a.example")
        echo_roundtrip(s)
    assert h.wait_stat("listener.tls.ssl.fail_verify_error", lambda v: v >= 1) >= 1
    # a good certificate whose SAN does not match: fail_verify_san
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        s = tls_connect(p, client_ctx(pki, cert=pki.client_bad), "a.example")
        echo_roundtrip(s)
    assert h.wait_stat("listener.tls.ssl.fail_verify_san", lambda v: v >= 1) >= 1


TLS_FMT = ("%DOWNSTREAM_TLS_VERSION%|%DOWNSTREAM_TLS_CIPHER%|%DOWNSTREAM_PEER_SUBJECT%|%DOWNSTREAM_PEER_ISSUER%|"
           "%DOWNSTREAM_PEER_URI_SAN%|%DOWNSTREAM_PEER_SERIAL%|%DOWNSTREAM_PEER_FINGERPRINT_256%|"
           "%DOWNSTREAM_PEER_CERT_V_END(%Y)%|%DOWNSTREAM_LOCAL_SUBJECT%|%DOWNSTREAM_LOCAL_DNS_SAN%|"
           "%DOWNSTREAM_TLS_SESSION_ID%")


def check_tls_log_fields(f, pki, client_cert):
    """f: the TLS_FMT fields of one line for a connection with client_cert."""
    with open(client_cert[0]) as c:
        der = ssl.PEM_cert_to_DER_cert(c.read())
    assert f[0] == "TLSv1.3", f
    assert f[1] == "TLS_AES_128_GCM_SHA256", f          # herald's TLS 1.3 preference
    assert f[2:5] == ["CN=client", "CN=herald test ca", "spiffe://test/client"], f
    assert f[5] == "%x" % client_cert[2], f             # the serial the CA set
    assert f[6] == hashlib.sha256(der).hexdigest(), f
    assert f[7] == time.strftime("%Y", time.gmtime(time.time() + 2 * 86400)), f   # valid for 2 days
    assert f[8:10] == ["CN=a.example", "a.example"], f
    assert f[10] == "-" or all(ch in "0123456789abcdef" for ch in f[10]), f


def test_tls_access_log_tcp(herald, upstreams, port, pki, tmp_path):
    """tcp_proxy's access log names the client certificate (mTLS) and the TLS
    the connection used; a plain connection logs '-' for each of them."""
    echo = upstreams(helpers.EchoServer)
    p, plain = port(), port()
    log = str(tmp_path / "tcp.log")
    al = [hb.file_access_log(log, "%DOWNSTREAM_LOCAL_PORT%|" + TLS_FMT + "\n")]
    ts = tls_socket(certs(pki.a_rsa), require_client_certificate=True,
                    validation_context={"trusted_ca": {"filename": pki.ca}})
    lst = tls_listener(p, "echo", [(None, ts)])
    lst["filter_chains"][0]["filters"][0]["typed_config"]["access_log"] = al
    cfg = helpers.bootstrap([lst, helpers.tcp_listener(plain, "echo", access_log=al)],
                            [helpers.cluster("echo", [echo.addr])])
    herald(cfg)
    s = tls_connect(p, client_ctx(pki, cert=pki.client), "a.example")
    assert echo_roundtrip(s) == b"hello over tls\n"
    s.close()
    s = helpers.connect(plain)
    assert echo_roundtrip(s) == b"hello over tls\n"
    s.close()
    lines = {ln.split("|")[0]: ln.split("|")[1:] for ln in helpers.wait_lines(log, 2)}
    assert set(lines) == {str(p), str(plain)}, lines
    check_tls_log_fields(lines[str(p)], pki, pki.client)
    assert lines[str(plain)] == ["-"] * 11, lines


def test_tls_access_log_http2(herald, upstreams, port, pki, tmp_path):
    """The HTTP access log over TLS with a client certificate, from curl over h2."""
    backends = [upstreams(hb.HttpBackend, n) for n in ("app1", "app2", "app3", "app4")]
    fp = port()
    log = str(tmp_path / "http.log")
    cfg = hb.front_proxy(fp, [b.port for b in backends],
                         access_log=[hb.file_access_log(log, "%PROTOCOL%|" + TLS_FMT + "\n")])
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = tls_socket(
        certs(pki.a_rsa), require_client_certificate=True, alpn_protocols=["h2", "http/1.1"],
        validation_context={"trusted_ca": {"filename": pki.ca}})
    herald(cfg)
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--http2", "--cacert", pki.ca, "--cert", pki.client[0],
                        "--key", pki.client[1], "--resolve", "a.example:%d:127.0.0.1" % fp,
                        "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                        "https://a.example:%d/app1/x" % fp], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=20)
    assert r.stdout.decode() == "200 2", (r.stdout, r.stderr)
    f = helpers.wait_lines(log, 1)[0].split("|")
    assert f[0] == "HTTP/2", f
    check_tls_log_fields(f[1:], pki, pki.client)


def test_session_resumption(herald, upstreams, port, pki, tmp_path):
    echo = upstreams(helpers.EchoServer)
    p = port()
    h = herald(helpers.bootstrap([tls_listener(p, "echo", [(None, tls_socket(certs(pki.a_rsa)))])],
                                 [helpers.cluster("echo", [echo.addr])]), concurrency=2)
    sess = str(tmp_path / "sess")
    rc, out = s_client(p, "-tls1_2", "-servername", "a.example", "-sess_out", sess, stdin=b"x\n")
    assert rc == 0 and "New," in out, out
    reused = 0
    for _ in range(4):  # lands on both workers: the ticket keys are shared
        rc, out = s_client(p, "-tls1_2", "-servername", "a.example", "-sess_in", sess, stdin=b"x\n")
        reused += "Reused," in out
    assert reused == 4, out
    # TLS 1.3 (tickets arrive after the handshake: read something first)
    for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(pki)
        ctx.maximum_version = ver
        s = tls_connect(p, ctx, "a.example")
        assert echo_roundtrip(s) == b"hello over tls\n"
        session = s.session
        s.close()
        for _ in range(4):
            raw = socket.create_connection(("127.0.0.1", p), timeout=5)
            s = ctx.wrap_socket(raw, server_hostname="a.example", session=session)
            assert echo_roundtrip(s) == b"hello over tls\n"
            assert s.session_reused, ver
            session = s.session
            s.close()
    assert h.wait_stat("listener.tls.ssl.session_reused", lambda v: v >= 12) >= 12


def test_configured_ticket_keys_are_shared_and_rolled(herald, upstreams, port, pki, tmp_path):
    """session_ticket_keys as Envoy reads them (80 bytes: name, HMAC key, AES
    key; the first encrypts, all decrypt): a ticket from one herald resumes
    on another with the same key; a herald given [new, old] still resumes it
    and makes new tickets under the new key; one given [new] alone refuses
    the old ticket (a full handshake) and takes the new one. (Before the
    session id context came from the config, a ticket never resumed on
    another herald.)"""
    echo = upstreams(helpers.EchoServer)
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    old_key.write_bytes(os.urandom(80))
    new_key.write_bytes(os.urandom(80))

    def keyed_herald(*keys):
        p = port()
        ts = tls_socket(certs(pki.a_rsa), session_ticket_keys={"keys": [{"filename": str(k)} for k in keys]})
        herald(helpers.bootstrap([tls_listener(p, "echo", [(None, ts)])], [helpers.cluster("echo", [echo.addr])]))
        return p

    def resume(p, sess_in):
        rc, out = s_client(p, "-tls1_2", "-servername", "a.example", "-sess_in", str(sess_in), stdin=b"x\n")
        assert rc == 0 and handshake_ok(out), out
        return "Reused," in out

    first, second = keyed_herald(old_key), keyed_herald(old_key)
    rolling, rolled = keyed_herald(new_key, old_key), keyed_herald(new_key)
    old_ticket, new_ticket = tmp_path / "old.sess", tmp_path / "new.sess"
    rc, out = s_client(first, "-tls1_2", "-servername", "a.example", "-sess_out", str(old_ticket), stdin=b"x\n")
    assert rc == 0 and "New," in out, out
    assert resume(first, old_ticket)
    assert resume(second, old_ticket), "a ticket under a shared key did not resume on the second herald"
    assert resume(rolling, old_ticket), "the old key no longer decrypts while still configured"
    rc, out = s_client(rolling, "-tls1_2", "-servername", "a.example", "-sess_out", str(new_ticket), stdin=b"x\n")
    assert rc == 0 and "New," in out, out
    assert not resume(rolled, old_ticket), "a ticket under a key no longer configured resumed"
    assert resume(rolled, new_ticket), "a new ticket from [new, old] is not under the first key"


def test_reads_paused_after_the_handshake_do_not_spin(herald, port, pki):
    """tcp_proxy keeps a connection's reads off until its upstream connects.
    The TLS stream keeps its read interest across the end of the handshake
    (saving an epoll_ctl DEL and ADD per connection) and must drop it at the
    first read event nobody wants: a client that sends at once, while the
    upstream connect hangs, must not make herald spin."""
    # an upstream whose accept queue is full: Linux drops the SYN, herald's connect hangs
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(0)
    queued = socket.create_connection(lsn.getsockname(), timeout=5)
    p = port()
    h = herald(helpers.bootstrap(
        [tls_listener(p, "stuck", [(None, tls_socket(certs(pki.a_rsa)))])],
        [helpers.cluster("stuck", [lsn.getsockname()], connect_timeout="10s")]))
    s = tls_connect(p, client_ctx(pki), "a.example")
    s.sendall(b"bytes that wait for the upstream\n")
    time.sleep(0.3)
    before = h.cpu_seconds()
    time.sleep(1.5)
    used = h.cpu_seconds() - before
    assert used < 0.5, "herald used %.2f s of CPU in 1.5 s with one paused connection" % used
    assert h.stats().get("cluster.stuck.upstream_cx_total", 0) == 1
    s.close()
    queued.close()
    lsn.close()


def test_handshake_finished_after_the_drain_began_is_drained_too(herald, upstreams, port, pki):
    """A TLS client whose handshake straddles the start of a drain (SIGTERM):
    its connection had no HTTP session yet when herald told every connection
    to drain, so it must be told when the session starts: the first response
    carries connection: close and herald closes, long before the drain time
    (10 s here) would cut it."""
    backends = [upstreams(hb.HttpBackend, n) for n in ("app1", "app2", "app3", "app4")]
    fp = port()
    cfg = hb.front_proxy(fp, [b.port for b in backends])
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = tls_socket(certs(pki.a_rsa))
    h = herald(cfg, drain_time=10)
    raw = socket.create_connection(("127.0.0.1", fp), timeout=5)
    assert h.wait_stat("listener.127.0.0.1_%d.downstream_cx_active" % fp, lambda v: v == 1) == 1
    h.signal(signal.SIGTERM)
    time.sleep(0.3)     # the drain has begun; this connection is still before its ClientHello
    s = client_ctx(pki).wrap_socket(raw, server_hostname="a.example")
    t0 = time.monotonic()
    s.sendall(b"GET /app1/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    r = hb.Reader(s)
    assert r.readline().startswith(b"HTTP/1.1 200")
    headers = hb.read_headers(r)
    assert hb.hget(headers, "connection") == "close", headers
    r.read(int(hb.hget(headers, "content-length")))
    assert s.recv(1) == b"", "herald kept the connection open"
    assert time.monotonic() - t0 < 5
    s.close()
    assert h.wait_exit(5) == 0


def faketime_lib():
    """libfaketime (Debian's faketime package, which .ci/install-deps installs)."""
    import glob
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    assert found, "libfaketime is missing: apt-get install -y faketime"
    return found[0]


def test_own_ticket_keys_rotate_hourly(herald, upstreams, port, pki, tmp_path):
    """Without session_ticket_keys herald makes its own ticket keys and
    rotates them every hour; the two before the current one still decrypt.
    herald runs under libfaketime, whose offset file moves its clocks (the
    monotonic one too) forward by hours at once: a ticket resumes 2.5 h
    later and no longer 3.5 h later, while one made at 2.5 h still does;
    after a quiet 3.5 h with no handshake at all, that one is refused too
    (rotation counts the hours it slept, not the calls)."""
    echo = upstreams(helpers.EchoServer)
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = {"LD_PRELOAD": faketime_lib(), "FAKETIME_TIMESTAMP_FILE": str(offset), "FAKETIME_NO_CACHE": "1",
           # a sanitizer build's runtime wants to come first; libfaketime only wraps clock calls
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    p = port()
    ts = tls_socket(certs(pki.a_rsa), session_timeout="86400s")   # no session expires in this test
    herald(helpers.bootstrap([tls_listener(p, "echo", [(None, ts)])], [helpers.cluster("echo", [echo.addr])]),
           env=env)

    def at(minutes):
        offset.write_text("+%dm\n" % minutes)

    def connect(sess_in=None, sess_out=None):
        args = ["-tls1_2", "-servername", "a.example"]
        if sess_in:
            args += ["-sess_in", str(sess_in)]
        if sess_out:
            args += ["-sess_out", str(sess_out)]
        rc, out = s_client(p, *args, stdin=b"x\n")
        assert rc == 0 and handshake_ok(out), out
        return "Reused," in out

    first, later = tmp_path / "first.sess", tmp_path / "later.sess"
    assert not connect(sess_out=first)
    at(150)
    assert connect(first), "a ticket two rotations old did not resume"
    assert not connect(sess_out=later)
    at(210)
    assert not connect(first), "a ticket three rotations old resumed"
    assert connect(later), "a ticket one rotation old did not resume"
    at(420)
    assert not connect(later), "after 3.5 quiet hours, a ticket from 4.5 hours ago resumed"


def test_shared_ticket_keys_do_not_carry_a_session_past_client_verification(herald, upstreams, port, pki, tmp_path):
    """Two listeners share session_ticket_keys, only the second requires a
    client certificate: a ticket from the first (no client certificate) must
    not resume there. Without a certificate the handshake fails; with one it
    is a full handshake, not a resumption."""
    echo = upstreams(helpers.EchoServer)
    key = tmp_path / "shared.key"
    key.write_bytes(os.urandom(80))
    keys = {"keys": [{"filename": str(key)}]}
    open_port, mtls_port = port(), port()
    open_ts = tls_socket(certs(pki.a_rsa), session_ticket_keys=keys)
    mtls_ts = tls_socket(certs(pki.a_rsa), session_ticket_keys=keys, require_client_certificate=True,
                         validation_context={"trusted_ca": {"filename": pki.ca}})
    herald(helpers.bootstrap([tls_listener(open_port, "echo", [(None, open_ts)], stat_prefix="open"),
                              tls_listener(mtls_port, "echo", [(None, mtls_ts)], stat_prefix="mtls")],
                             [helpers.cluster("echo", [echo.addr])]))
    ticket = tmp_path / "open.sess"
    rc, out = s_client(open_port, "-tls1_2", "-servername", "a.example", "-sess_out", str(ticket), stdin=b"x\n")
    assert rc == 0 and "New," in out, out
    rc, out = s_client(mtls_port, "-tls1_2", "-servername", "a.example", "-sess_in", str(ticket), stdin=b"x\n")
    assert rc != 0 and "Reused," not in out, out
    rc, out = s_client(mtls_port, "-tls1_2", "-servername", "a.example", "-sess_in", str(ticket),
                       "-cert", pki.client[0], "-key", pki.client[1], stdin=b"x\n")
    assert rc == 0 and "New," in out and "Reused," not in out, out


def s_client_lingering(port, *args):
    """s_client that sends a line and reads for half a second before its
    input ends (TLS 1.3 tickets come after the handshake)."""
    cmd = "(printf 'x\\n'; sleep 0.5) | openssl s_client -connect 127.0.0.1:%d %s" % (port, " ".join(args))
    p = subprocess.run(["sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    return p.stdout.decode("utf-8", "replace")


def test_tls13_resumption_brings_a_fresh_ticket(herald, upstreams, port, pki, tmp_path):
    """TLS 1.3 clients use a ticket once (RFC 8446 C.4; OpenSSL's client, as
    wrk drives it, does not offer a used one again): every resumed connection
    must leave the client a new ticket, or every other connection is a full
    handshake. A chain of resumptions, each with the ticket the last one got."""
    echo = upstreams(helpers.EchoServer)
    p = port()
    h = herald(helpers.bootstrap([tls_listener(p, "echo", [(None, tls_socket(certs(pki.a_rsa)))])],
                                 [helpers.cluster("echo", [echo.addr])]))
    sess = str(tmp_path / "s0")
    out = s_client_lingering(p, "-tls1_3", "-servername", "a.example", "-sess_out", sess)
    assert "New, TLSv1.3" in out, out
    for i in range(1, 5):
        nxt = str(tmp_path / ("s%d" % i))
        out = s_client_lingering(p, "-tls1_3", "-msg", "-servername", "a.example", "-sess_in", sess,
                                 "-sess_out", nxt)
        assert "Reused, TLSv1.3" in out, (i, out)
        assert "NewSessionTicket" in out, "resumption %d left the client no new ticket:\n%s" % (i, out)
        sess = nxt
    assert h.wait_stat("listener.tls.ssl.session_reused", lambda v: v >= 4) == 4


def test_certificate_reload(herald, upstreams, port, pki, tmp_path):
    echo = upstreams(helpers.EchoServer)
    p = port()
    crt, key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    shutil.copy(pki.a_rsa[0], crt)
    shutil.copy(pki.a_rsa[1], key)
    h = herald(helpers.bootstrap([tls_listener(p, "echo", [(None, tls_socket(certs((crt, key))))])],
                                 [helpers.cluster("echo", [echo.addr])]))
    old = tls_connect(p, client_ctx(pki), "a.example")
    assert int(old.getpeercert()["serialNumber"], 16) == pki.a_rsa[2]
    assert echo_roundtrip(old) == b"hello over tls\n"
    assert [c["serial_number"] for c in admin_certs(h)[0]["cert_chain"]] == ["%x" % pki.a_rsa[2]]
    new_crt, new_key, new_serial = pki.issue("a_rsa2", "a.example")
    # replace by rename, key first (as cert managers do); a half-done pair is kept out
    shutil.copy(new_key, key + ".tmp")
    os.rename(key + ".tmp", key)
    shutil.copy(new_crt, crt + ".tmp")
    os.rename(crt + ".tmp", crt)

    def serial():
        s = tls_connect(p, client_ctx(pki), "a.example")
        n = int(s.getpeercert()["serialNumber"], 16)
        s.close()
        return n == new_serial
    assert helpers.wait_for(serial, timeout=8), "the new certificate was not picked up"
    assert echo_roundtrip(old, b"still here\n") == b"still here\n"  # the old connection stays up
    old.close()
    assert h.stat("listener.tls.server_ssl_socket_factory.ssl_context_update_by_file") >= 1
    assert "certificate files changed" in h.log()
    # GET /certs shows what new connections get
    assert [(c["path"], c["serial_number"]) for c in admin_certs(h)[0]["cert_chain"]] == [(crt, "%x" % new_serial)]


def admin_certs(h):
    status, body = h.admin_get("/certs")
    assert status == 200, body
    return json.loads(body)["certificates"]


def openssl_facts(crt):
    """(serial in lower-case hex, notBefore, notAfter as RFC 3339) from openssl x509."""
    out = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-serial", "-startdate", "-enddate"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    f = dict(line.split("=", 1) for line in out.splitlines())

    def iso(v):
        return datetime.datetime.strptime(v, "%b %d %H:%M:%S %Y GMT").strftime("%Y-%m-%dT%H:%M:%SZ")
    return f["serial"].lower(), iso(f["notBefore"]), iso(f["notAfter"])   # both print whole bytes: 07db...


def test_certs_endpoint(herald, upstreams, port, pki):
    """GET /certs as Envoy's: one entry per TLS context (the listener's, with
    an RSA and an ECDSA certificate and a trusted CA; the cluster's, with a
    client certificate and a CA), each certificate with its path, serial,
    SANs, validity as openssl reads it, and whole days left."""
    echo = upstreams(helpers.EchoServer)
    p = port()
    ts = tls_socket(certs(pki.a_rsa, pki.a_ec), validation_context={"trusted_ca": {"filename": pki.ca}})
    cl = helpers.cluster("up", [echo.addr], transport_socket=upstream_tls(ca=pki.ca, client_cert=pki.client))
    h = herald(helpers.bootstrap([tls_listener(p, "up", [(None, ts)])], [cl]))
    got = admin_certs(h)
    assert len(got) == 2, got
    by_leaf = {c["cert_chain"][0]["path"]: c for c in got}
    listener, cluster = by_leaf[pki.a_rsa[0]], by_leaf[pki.client[0]]
    assert [c["path"] for c in listener["cert_chain"]] == [pki.a_rsa[0], pki.a_ec[0]]
    for ctx in (listener, cluster):
        assert [c["path"] for c in ctx["ca_cert"]] == [pki.ca], ctx
    for c in listener["cert_chain"] + cluster["cert_chain"] + listener["ca_cert"]:
        serial, valid_from, expires = openssl_facts(c["path"])
        assert (c["serial_number"], c["valid_from"], c["expiration_time"]) == (serial, valid_from, expires), c
        assert c["days_until_expiration"] == "1", c   # -days 2, minus the seconds since
    assert listener["cert_chain"][0]["subject_alt_names"] == [{"dns": "a.example"}]
    assert cluster["cert_chain"][0]["subject_alt_names"] == [{"uri": "spiffe://test/client"}]
    assert listener["ca_cert"][0]["subject_alt_names"] == []


# ------------------------------------------------------------------ tls_inspector


def test_inspector_tls_and_plaintext_on_one_port(herald, upstreams, port, pki):
    etls = upstreams(helpers.EchoServer, tag="TLS")
    eraw = upstreams(helpers.EchoServer, tag="RAW")
    p = port()
    lst = {"name": "mixed", "stat_prefix": "mixed", "address": helpers.sock_addr(p),
           "listener_filters": [INSPECTOR],
           "filter_chains": [
               {"filter_chain_match": {"transport_protocol": "tls"}, "transport_socket": tls_socket(certs(pki.a_rsa)),
                "filters": [helpers.tcp_proxy_filter("ctls", "t")]},
               {"filter_chain_match": {"transport_protocol": "raw_buffer"},
                "filters": [helpers.tcp_proxy_filter("craw", "r")]},
           ]}
    h = herald(helpers.bootstrap([lst], [helpers.cluster("ctls", [etls.addr]), helpers.cluster("craw", [eraw.addr])]))
    s = tls_connect(p, client_ctx(pki, alpn=["h2", "http/1.1"]), "a.example")
    assert helpers.recv_line(s) == b"TLS"
    assert echo_roundtrip(s) == b"hello over tls\n"
    s.close()
    c = helpers.connect(p)
    c.sendall(b"plain\n")
    assert helpers.recv_line(c) == b"RAW"
    assert helpers.recv_line(c) == b"plain"
    c.close()
    # a client that sends nothing first (server-speaks-first protocols) is not TLS... it waits:
    # the inspector needs the first byte, as in Envoy. One byte is enough for plaintext:
    c = helpers.connect(p)
    c.sendall(b"G")
    assert helpers.recv_line(c) == b"RAW"
    c.close()
    st = h.stats()
    assert st.get("tls_inspector.tls_found", 0) >= 1 and st.get("tls_inspector.tls_not_found", 0) >= 2
    assert st.get("tls_inspector.alpn_found", 0) >= 1 and st.get("tls_inspector.sni_found", 0) >= 1


def test_inspector_oversized_hello(herald, upstreams, port):
    echo = upstreams(helpers.EchoServer)
    p = port()
    insp = {"name": "envoy.listener.tls_inspector",
            "typed_config": {"@type": INSPECTOR["typed_config"]["@type"], "initial_read_buffer_size": 1024}}
    lst = helpers.tcp_listener(p, "echo", stat_prefix="x")
    lst["listener_filters"] = [insp]
    h = herald(helpers.bootstrap([lst], [helpers.cluster("echo", [echo.addr])]))
    c = helpers.connect(p)
    # a handshake record announcing a 4000-byte ClientHello
    body = b"\x01" + (4000).to_bytes(3, "big") + b"\x03\x03" + os.urandom(1100)
    c.sendall(b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body)
    assert helpers.closed_by_peer(c)
    assert h.wait_stat("tls_inspector.client_hello_too_large", lambda v: v >= 1) >= 1


def test_sni_passthrough(herald, upstreams, port, pki, tmp_path):
    """tls_inspector + tcp_proxy without termination: routed by SNI to two TLS backends."""
    servers = []
    for name, cert in (("a.example", pki.a_rsa), ("b.example", pki.b_rsa)):
        srv = TlsEchoServer(cert)
        upstreams(lambda s=srv: s)
        servers.append(srv)
    p = port()
    lst = {"name": "pt", "stat_prefix": "pt", "address": helpers.sock_addr(p), "listener_filters": [INSPECTOR],
           "filter_chains": [
               {"filter_chain_match": {"server_names": ["a.example"]}, "filters": [helpers.tcp_proxy_filter("pa")]},
               {"filter_chain_match": {"server_names": ["*.example"]}, "filters": [helpers.tcp_proxy_filter("pb")]},
           ]}
    herald(helpers.bootstrap([lst], [helpers.cluster("pa", [servers[0].addr]),
                                     helpers.cluster("pb", [servers[1].addr])]))
    for name in ("a.example", "b.example"):
        s = tls_connect(p, client_ctx(pki), name)  # the backend's certificate must match the name
        assert echo_roundtrip(s) == b"hello over tls\n"
        s.close()


# ------------------------------------------------------------------ upstream TLS


class TlsEchoServer(helpers.TcpServer):
    """Echo over TLS with a given (cert, key); records the SNI it saw; optionally wants a client cert."""

    def __init__(self, cert, client_ca=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert[0], cert[1])
        if client_ca:
            self.ctx.load_verify_locations(client_ca)
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.snis = []
        self.ctx.sni_callback = lambda sock, name, ctx: self.snis.append(name)
        super().__init__()

    def handle(self, c):
        try:
            s = self.ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError):
            return
        self.track(s)
        self.serve(s)

    def serve(self, s):
        while True:
            try:
                d = s.recv(65536)
            except (ssl.SSLError, OSError):
                break
            if not d:
                break
            s.sendall(d)


class TlsHttpServer(TlsEchoServer):
    """HTTP/1.1 over TLS: answers every request 200 "ok" on a kept connection;
    records the request lines it read."""

    def __init__(self, cert):
        self.requests = []
        super().__init__(cert)

    def serve(self, s):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                try:
                    d = s.recv(65536)
                except (ssl.SSLError, OSError):
                    return
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            with self.lock:
                self.requests.append(head.split(b"\r\n")[0].decode())
            s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


def upstream_tls(ca=None, sni=None, client_cert=None, **extra):
    ctx = {"@type": UP, "common_tls_context": {}}
    if ca:
        ctx["common_tls_context"]["validation_context"] = {"trusted_ca": {"filename": ca}}
    if client_cert:
        ctx["common_tls_context"]["tls_certificates"] = certs(client_cert)
    if sni:
        ctx["sni"] = sni
    ctx.update(extra)
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def test_upstream_tls(herald, upstreams, port, pki):
    srv = upstreams(lambda: TlsEchoServer(pki.upstream, client_ca=pki.ca))
    p = port()
    cl = helpers.cluster("up", [srv.addr],
                         transport_socket=upstream_tls(ca=pki.ca, sni="backend.internal", client_cert=pki.client,
                                                       auto_sni_san_validation=True))
    h = herald(helpers.bootstrap([helpers.tcp_listener(p, "up")], [cl]))
    c = helpers.connect(p)
    data = os.urandom(1 << 20)
    threading.Thread(target=c.sendall, args=(data,)).start()
    got = bytearray()
    while len(got) < len(data):
        d = c.recv(1 << 20)
        assert d
        got += d
    assert bytes(got) == data
    c.close()
    assert srv.snis and srv.snis[0] == "backend.internal"
    assert h.wait_stat("cluster.up.ssl.handshake", lambda v: v >= 1) >= 1


def test_upstream_tls_wrong_ca_fails(herald, upstreams, port, pki):
    srv = upstreams(lambda: TlsEchoServer(pki.upstream))
    p = port()
    cl = helpers.cluster("up", [srv.addr], transport_socket=upstream_tls(ca=pki.other_ca, sni="backend.internal"))
    h = herald(helpers.bootstrap([helpers.tcp_listener(p, "up")], [cl]))
    c = helpers.connect(p)
    c.sendall(b"x")
    assert helpers.closed_by_peer(c)
    assert h.wait_stat("cluster.up.ssl.connection_error", lambda v: v >= 1) >= 1
    assert h.stat("cluster.up.upstream_cx_connect_fail") >= 1
    assert h.stat("cluster.up.ssl.handshake") == 0


def test_upstream_tls_san_mismatch_fails(herald, upstreams, port, pki):
    srv = upstreams(lambda: TlsEchoServer(pki.upstream))
    p = port()
    ts = upstream_tls(ca=pki.ca, sni="backend.internal")
    ts["typed_config"]["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] = [
        {"san_type": "DNS", "matcher": {"exact": "other.internal"}}]
    h = herald(helpers.bootstrap([helpers.tcp_listener(p, "up")], [helpers.cluster("up", [srv.addr],
                                                                                   transport_socket=ts)]))
    c = helpers.connect(p)
    c.sendall(b"x")
    assert helpers.closed_by_peer(c)
    assert h.wait_stat("cluster.up.ssl.fail_verify_san", lambda v: v >= 1) >= 1


def test_health_check_over_tls(herald, upstreams, port, pki):
    """A cluster with an UpstreamTlsContext is health-checked over TLS with it
    (Envoy's checker uses the cluster's transport socket): the check request
    reaches a TLS-only backend; a backend the context does not trust fails
    the check on the handshake and never sees a request."""
    good = upstreams(lambda: TlsHttpServer(pki.upstream))
    bad = upstreams(lambda: TlsHttpServer(pki.upstream))
    hc = {"timeout": "1s", "interval": "0.1s", "no_traffic_interval": "0.1s", "unhealthy_threshold": 1,
          "healthy_threshold": 1, "http_health_check": {"path": "/healthz"}}
    up = helpers.cluster("up", [good.addr], transport_socket=upstream_tls(ca=pki.ca, sni="backend.internal"),
                         health_checks=[hc])
    untrusted = helpers.cluster("untrusted", [bad.addr],
                                transport_socket=upstream_tls(ca=pki.other_ca, sni="backend.internal"),
                                health_checks=[hc])
    h = herald(helpers.bootstrap([helpers.tcp_listener(port(), "up")], [up, untrusted]))
    assert h.wait_stat("cluster.up.health_check.success", lambda v: v >= 2) >= 2
    assert good.requests and good.requests[0] == "GET /healthz HTTP/1.1", good.requests
    assert h.stat("cluster.up.ssl.handshake") >= 1
    assert h.stat("cluster.up.health_check.healthy") == 1
    assert h.wait_stat("cluster.untrusted.health_check.network_failure", lambda v: v >= 2) >= 2
    assert h.stat("cluster.untrusted.ssl.connection_error") >= 2
    assert h.stat("cluster.untrusted.health_check.success") == 0
    assert h.stat("cluster.untrusted.health_check.healthy") == 0
    assert bad.requests == []


class CipherRecordingHttpServer(TlsHttpServer):
    """TlsHttpServer that also records (version, cipher) of each TLS connection."""

    def __init__(self, cert):
        self.negotiated = []
        super().__init__(cert)

    def serve(self, s):
        with self.lock:
            self.negotiated.append((s.version(), s.cipher()[0]))
        super().serve(s)


def test_upstream_tls_in_http_access_log(herald, upstreams, port, pki, tmp_path):
    """The HTTP access log names the TLS and the certificate of the upstream
    connection a request went out on, as the backend negotiated them."""
    srv = upstreams(lambda: CipherRecordingHttpServer(pki.upstream))
    log = str(tmp_path / "up.log")
    fmt = ("%UPSTREAM_TLS_VERSION%|%UPSTREAM_TLS_CIPHER%|%UPSTREAM_PEER_SUBJECT%|%UPSTREAM_PEER_ISSUER%|"
           "%UPSTREAM_PEER_DNS_SAN%|%UPSTREAM_PEER_CERT_V_END(%Y)%|%UPSTREAM_TLS_SESSION_ID%|%UPSTREAM_LOCAL_SUBJECT%|"
           "%DOWNSTREAM_TLS_VERSION%\n")
    h, lp = hb.start_proxy(herald, port, [srv.port],
                           cluster_extra={"transport_socket": upstream_tls(ca=pki.ca, sni="backend.internal")},
                           access_log=[hb.file_access_log(log, fmt)])
    for _ in range(2):
        status, headers, body = hb.request(lp, "/x")
        assert (status, body) == (200, b"ok"), (status, body)
    lines = helpers.wait_lines(log, 2)
    assert len(lines) == 2, lines
    f, g = (ln.split("|") for ln in lines)
    # one kept connection: the same handshake (the session id may come with TLS 1.3's ticket)
    assert f[:6] == g[:6] and f[7:] == g[7:], lines
    version, cipher = srv.negotiated[0]
    assert f[0:2] == [version, cipher], (f, srv.negotiated)
    assert f[2:5] == ["CN=backend.internal", "CN=herald test ca", "backend.internal"], f
    assert f[5] == time.strftime("%Y", time.gmtime(time.time() + 2 * 86400)), f
    assert f[6] == "-" or all(ch in "0123456789abcdef" for ch in f[6]), f
    assert f[7:] == ["-", "-"], f   # our certificate upstream: not kept; the client side is plain


# ------------------------------------------------------------------ rbac: Principal.authenticated

NET_RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
ADMIN_ID = "spiffe://example.org/admin"


@pytest.fixture(scope="module")
def rbac_certs(pki):
    """Client certificates for the authenticated principal, from pki's CA."""
    class C:
        pass
    c = C()
    c.admin = pki.issue("rb_admin", "admin", kind="ec", san="URI:" + ADMIN_ID, client=True)
    c.other = pki.issue("rb_other", "other", kind="ec", san="URI:spiffe://example.org/other", client=True)
    # a URI SAN that does not match, then the DNS SAN that does
    c.dns = pki.issue("rb_dns", "dns", kind="ec", san="URI:spiffe://example.org/other,DNS:admin.example.org",
                      client=True)
    c.legacy = pki.issue("rb_legacy", "legacy-admin", kind="ec", san="", subj="/O=herald/CN=legacy-admin",
                         client=True)
    # two URI SANs, which the access log joins as "spiffe://example.org/a,b", and one that is that string
    c.split = pki.issue("rb_split", "split", kind="ec", san=["URI.1 = spiffe://example.org/a", "URI.2 = b"],
                        client=True)
    c.comma = pki.issue("rb_comma", "comma", kind="ec", san=["URI.1 = spiffe://example.org/a,b"], client=True)
    return c


def authenticated(**principal_name):
    return {"authenticated": {"principal_name": principal_name} if principal_name else {}}


def rbac_auth_http_filter():
    """ALLOW: each path prefix admits one kind of authenticated principal."""
    def pol(prefix, principal):
        return {"permissions": [{"url_path": {"path": {"prefix": prefix}}}], "principals": [principal]}
    return {"name": "envoy.filters.http.rbac", "typed_config": {"@type": hb.RBAC_TYPE, "rules": {
        "action": "ALLOW", "policies": {
            "uri": pol("/uri", authenticated(exact=ADMIN_ID)),
            "dns": pol("/dns", authenticated(exact="admin.example.org")),
            "subject": pol("/subject", authenticated(exact="CN=legacy-admin,O=herald")),
            "any": pol("/any", authenticated()),
            "regex": pol("/regex", authenticated(safe_regex={"regex": r"SPIFFE://example\.org/(ops|admin)"},
                                                 ignore_case=True)),
            "comma": pol("/comma", authenticated(exact="spiffe://example.org/a,b")),
        }}}}


def curl_code(port, path, pki, cert=None):
    """curl https://a.example:port/path with cert (or none): the status code."""
    args = ["curl", "-sS", "--max-time", "10", "--cacert", pki.ca, "-o", "/dev/null", "-w", "%{http_code}",
            "--resolve", "a.example:%d:127.0.0.1" % port]
    if cert:
        args += ["--cert", cert[0], "--key", cert[1]]
    r = subprocess.run(args + ["https://a.example:%d%s" % (port, path)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    return r.stdout.decode()


def test_rbac_http_authenticated(herald, upstreams, port, pki, rbac_certs):
    """envoy.filters.http.rbac's authenticated principal against curl with
    real client certificates: any URI SAN, then any DNS SAN, then the subject;
    {} admits every TLS connection (Envoy does not ask for a certificate) but
    no plaintext one; each SAN is matched alone, never the ','-joined list."""
    backend = upstreams(hb.HttpBackend, "app")
    tp, pp = port(), port()
    filt = [rbac_auth_http_filter()]
    routes = [hb.route("/", "backend")]
    tls_l = hb.http_listener(tp, hb.hcm("auth_tls", routes, filt), "auth_tls")
    tls_l["filter_chains"][0]["transport_socket"] = tls_socket(
        certs(pki.a_rsa), require_client_certificate=False, validation_context={"trusted_ca": {"filename": pki.ca}})
    plain_l = hb.http_listener(pp, hb.hcm("auth_plain", routes, filt), "auth_plain")
    h = herald({"static_resources": {"listeners": [tls_l, plain_l],
                                     "clusters": [hb.http_cluster("backend", [backend.port])]}})
    c = rbac_certs
    cases = [
        (c.admin, "/uri", "200"), (c.other, "/uri", "403"), (None, "/uri", "403"), (c.dns, "/uri", "403"),
        (c.dns, "/dns", "200"), (c.admin, "/dns", "403"),
        (c.legacy, "/subject", "200"), (c.admin, "/subject", "403"),
        (c.admin, "/any", "200"), (c.other, "/any", "200"), (c.legacy, "/any", "200"), (None, "/any", "200"),
        (c.admin, "/regex", "200"), (c.other, "/regex", "403"),
        (c.comma, "/comma", "200"), (c.split, "/comma", "403"),
    ]
    got = [(cert[0] if cert else None, path, curl_code(tp, path, pki, cert)) for cert, path, _ in cases]
    want = [(cert[0] if cert else None, path, code) for cert, path, code in cases]
    assert got == want
    allowed = sum(1 for *_, code in cases if code == "200")
    assert backend.served() == allowed
    assert h.wait_stat("http.auth_tls.rbac.denied", lambda v: v >= len(cases) - allowed) == len(cases) - allowed
    assert h.stat("http.auth_tls.rbac.allowed") == allowed
    # plaintext: not authenticated, whoever it is
    status, _, _ = hb.request(pp, "/any")
    assert status == 403
    assert h.wait_stat("http.auth_plain.rbac.denied", lambda v: v >= 1) == 1
    assert backend.served() == allowed



def test_rbac_network_authenticated(herald, upstreams, port, pki, rbac_certs):
    """envoy.filters.network.rbac in front of tcp_proxy closes a connection
    whose peer certificate does not carry the principal, or that has none."""
    echo = upstreams(helpers.EchoServer)
    p = port()
    ts = tls_socket(certs(pki.a_rsa), require_client_certificate=False,
                    validation_context={"trusted_ca": {"filename": pki.ca}})
    lst = tls_listener(p, "echo", [(None, ts)])
    lst["filter_chains"][0]["filters"].insert(0, {"name": "envoy.filters.network.rbac", "typed_config": {
        "@type": NET_RBAC_TYPE, "stat_prefix": "authz", "rules": {"action": "ALLOW", "policies": {
            "admins": {"permissions": [{"any": True}],
                       "principals": [authenticated(exact=ADMIN_ID),
                                      authenticated(suffix="legacy-admin,O=herald")]}}}}})
    h = herald(helpers.bootstrap([lst], [helpers.cluster("echo", [echo.addr])]))
    for cert in (rbac_certs.admin, rbac_certs.legacy):
        s = tls_connect(p, client_ctx(pki, cert=cert), "a.example")
        assert echo_roundtrip(s) == b"hello over tls\n", cert
        s.close()
    for cert in (rbac_certs.other, rbac_certs.split, None):
        s = tls_connect(p, client_ctx(pki, cert=cert), "a.example")
        try:
            got = echo_roundtrip(s)
        except (ssl.SSLError, ConnectionError):
            got = b""
        assert got == b"", (cert, got)
        s.close()
    assert h.wait_stat("authz.rbac.denied", lambda v: v >= 3) == 3
    assert h.stat("authz.rbac.allowed") == 2
    # only the two allowed connections' bytes went through tcp_proxy
    assert h.wait_stat("tcp.tls.downstream_cx_rx_bytes_total", lambda v: v >= 30) == 30


def test_rbac_authenticated_config_errors(tmp_path):
    """A principal_name that is not a usable StringMatcher stops the config at
    its file:line:col, for both filters."""
    import conftest
    import json
    import re
    bad = [({"safe_regex": {"regex": "spiffe://(unclosed"}}, "invalid regex"),
           ({"ignore_case": True}, "needs one of exact, prefix")]
    for principal_name, msg in bad:
        ids = [{"authenticated": {"principal_name": principal_name}}]
        rules = {"action": "ALLOW", "policies": {"p": {"permissions": [{"any": True}], "principals": ids}}}
        http = hb.http_listener(1, hb.hcm("h", [hb.route("/", "c")], [
            {"name": "envoy.filters.http.rbac", "typed_config": {"@type": hb.RBAC_TYPE, "rules": rules}}]))
        net = helpers.tcp_listener(2, "c", before=[{"name": "envoy.filters.network.rbac", "typed_config": {
            "@type": NET_RBAC_TYPE, "stat_prefix": "n", "rules": rules}}])
        for lst in (http, net):
            path = tmp_path / "bad.json"
            text = json.dumps(helpers.bootstrap([lst], [helpers.cluster("c", [("127.0.0.1", 1)])]), indent=1)
            path.write_text(text)
            key = "regex" if "safe_regex" in principal_name else "principal_name"
            line = next(i for i, ln in enumerate(text.splitlines(), 1) if '"%s"' % key in ln)
            r = conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])
            assert r.returncode == 1, r.stderr
            assert re.search(r"bad\.json:%d:\d+: \S*authenticated\.principal_name\S*: .*%s" % (line, msg),
                             r.stderr), r.stderr


def test_http1_over_tls_scheme(herald, upstreams, port, pki):
    """:scheme of an HTTP/1.1 request over TLS is https (Envoy: from the
    sanitized x-forwarded-proto, else the connection), so a redirect that
    keeps the scheme says https, over HTTP/1.1 as over h2; and
    scheme_header_transformation.scheme_to_overwrite replaces it."""
    b = upstreams(hb.HttpBackend, "b")
    fp = port()
    routes = [hb.route("/old", redirect={"path_redirect": "/new"}), hb.route("/", "backend")]
    listener = hb.http_listener(fp, hb.hcm("tls_http", routes))
    listener["filter_chains"][0]["transport_socket"] = tls_socket(certs(pki.a_rsa),
                                                                  alpn_protocols=["h2", "http/1.1"])
    plain = port()
    over = hb.http_listener(plain, hb.hcm("plain_http", routes,
                                          scheme_header_transformation={"scheme_to_overwrite": "https"}))
    herald({"static_resources": {"listeners": [listener, over],
                                 "clusters": [hb.http_cluster("backend", [b.port])]}})
    for flag in ("--http1.1", "--http2"):
        r = subprocess.run(["curl", "-sS", "--max-time", "10", flag, "--cacert", pki.ca,
                            "--resolve", "a.example:%d:127.0.0.1" % fp, "-o", "/dev/null",
                            "-w", "%{http_code} %{redirect_url}", "https://a.example:%d/old" % fp],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        assert r.stdout.decode() == "301 https://a.example:%d/new" % fp, (flag, r.stdout, r.stderr)
    status, headers, _ = hb.request(plain, "/old")
    assert status == 301 and headers.get("location") == "https://127.0.0.1:%d/new" % plain, headers


INJECTED = "envoy.resource_monitors.injected_resource"


def test_handshake_timeout_and_reduce_timeouts(herald, upstreams, port, pki, tmp_path):
    """transport_socket_connect_timeout closes a connection whose handshake
    does not finish (counted); under the overload manager's reduce_timeouts
    (TRANSPORT_SOCKET_CONNECT, min_timeout 0.2 s) a handshake that starts
    while the pressure is saturated gets the short one."""
    echo = upstreams(helpers.EchoServer)
    p = port()
    lst = tls_listener(p, "echo", [(None, tls_socket(certs(pki.a_rsa)))])
    lst["filter_chains"][0]["transport_socket_connect_timeout"] = "3s"
    pressure = tmp_path / "pressure"
    pressure.write_text("0\n")
    om = {"refresh_interval": "0.05s", "resource_monitors": [{"name": INJECTED, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig",
        "filename": str(pressure)}}],
        "actions": [{"name": "envoy.overload_actions.reduce_timeouts",
                     "triggers": [{"name": INJECTED, "threshold": {"value": 0.9}}],
                     "typed_config": {"@type": "type.googleapis.com/envoy.config.overload.v3."
                                               "ScaleTimersOverloadActionConfig",
                                      "timer_scale_factors": [{"timer": "TRANSPORT_SOCKET_CONNECT",
                                                               "min_timeout": "0.2s"}]}}]}
    cfg = helpers.bootstrap([lst], [helpers.cluster("echo", [echo.addr])])
    cfg["overload_manager"] = om
    h = herald(cfg)
    mute = socket.create_connection(("127.0.0.1", p), timeout=10)   # never sends a ClientHello
    t0 = time.monotonic()
    assert helpers.closed_by_peer(mute, timeout=10)
    took = time.monotonic() - t0
    mute.close()
    assert 2.5 <= took < 8, took
    assert h.stat("listener.tls.downstream_cx_transport_socket_connect_timeout") == 1
    pressure.write_text("0.95\n")
    assert h.wait_stat("overload.envoy.overload_actions.reduce_timeouts.scale_percent", lambda v: v == 100) == 100
    mute = socket.create_connection(("127.0.0.1", p), timeout=10)
    t0 = time.monotonic()
    assert helpers.closed_by_peer(mute, timeout=10)
    took = time.monotonic() - t0
    mute.close()
    assert took < 2, took
    assert h.stat("listener.tls.downstream_cx_transport_socket_connect_timeout") == 2
    s = tls_connect(p, client_ctx(pki), "a.example")                 # a real client still gets through
    s.sendall(b"ping\n")
    assert s.recv(100)
    s.close()
