"""OCSP stapling on a DownstreamTlsContext (tls_certificates[].ocsp_staple,
ocsp_staple_policy): openssl s_client -status and curl --cert-status see the
stapled response; an expired one is left out (LENIENT_STAPLING) or fails the
handshake (STRICT_STAPLING); a staple that is not its certificate's, or a
MUST_STAPLE certificate without one, stops start-up with file:line:col.
Responses are signed by a throwaway CA with Python's cryptography."""

import datetime
import json
import re
import shutil
import subprocess

import pytest
from cryptography import x509  # python3-cryptography (.ci/install-deps)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from conftest import PLUGIN_DIR, run_herald
from test_tls import DOWN, Pki

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def load(path, key=False):
    data = open(path, "rb").read()
    return serialization.load_pem_private_key(data, None) if key else x509.load_pem_x509_certificate(data)


def ocsp_response(pki, cert_path, out, next_update_hours=24, this_update_hours=-1):
    """A DER OCSP response saying cert is good, signed by the CA; next_update
    relative to now (None: no nextUpdate)."""
    ca, ca_key, cert = load(pki.ca), load(pki.ca_key, key=True), load(cert_path)
    now = datetime.datetime.utcnow()
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=ca, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
        this_update=now + datetime.timedelta(hours=this_update_hours),
        next_update=None if next_update_hours is None else now + datetime.timedelta(hours=next_update_hours),
        revocation_time=None, revocation_reason=None).responder_id(ocsp.OCSPResponderEncoding.HASH, ca)
    with open(out, "wb") as f:
        f.write(b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(str(tmp_path_factory.mktemp("ocsp-pki")))
    p.leaf = p.issue("leaf", "localhost", kind="ec")
    p.other = p.issue("other", "other.test", kind="ec")
    # the chain a server sends: curl --cert-status finds the responder's issuer in it
    p.chain = p.p("leaf-chain.crt")
    with open(p.chain, "w") as f:
        f.write(open(p.leaf[0]).read() + open(p.ca).read())
    return p


def ocsp_config(lp, pki, staple, policy=None):
    ctx = {"@type": DOWN, "common_tls_context": {"tls_certificates": [{
        "certificate_chain": {"filename": pki.chain}, "private_key": {"filename": pki.leaf[1]}}]}}
    if staple:
        ctx["common_tls_context"]["tls_certificates"][0]["ocsp_staple"] = {"filename": staple}
    if policy:
        ctx["ocsp_staple_policy"] = policy
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "ocsp", "route_config": {"virtual_hosts": [{"name": "d", "domains": ["*"],
                                                                   "routes": [route]}]}}}
    return {"static_resources": {"listeners": [{
        "name": "tls", "address": {"socket_address": {"address": "127.0.0.1", "port_value": lp}},
        "filter_chains": [{"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": ctx},
                           "filters": [hcm]}]}]}}


def s_client(lp, status=True):
    args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % lp, "-servername", "localhost"]
    if status:
        args.append("-status")
    r = subprocess.run(args, input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    return r.stdout.decode(errors="replace")


def stat(h, name):
    return h.stat("listener.127.0.0.1_%s.ssl.%s" % (h.lp, name))


def test_stapled_response_reaches_openssl_and_curl(herald, port, pki, tmp_path):
    lp = port()
    staple = ocsp_response(pki, pki.leaf[0], str(tmp_path / "good.der"))
    h = herald(ocsp_config(lp, pki, staple))
    h.lp = lp
    out = s_client(lp)
    assert "OCSP Response Status: successful" in out and "Cert Status: good" in out, out
    assert re.search(r"Serial Number: %X\b" % pki.leaf[2], out), out
    assert h.wait_stat("listener.127.0.0.1_%d.ssl.ocsp_staple_responses" % lp, lambda v: v >= 1) == 1
    # a client that does not ask gets none, and is not counted as asking
    out = s_client(lp, status=False)
    assert "OCSP response" not in out, out
    assert stat(h, "ocsp_staple_requests") == 1
    # curl --cert-status insists on a good stapled response
    r = subprocess.run(["curl", "-s", "--cert-status", "--cacert", pki.ca, "--resolve", "localhost:%d:127.0.0.1" % lp,
                        "https://localhost:%d/" % lp], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    assert (r.returncode, r.stdout) == (0, b"ok\n"), r.stderr
    assert h.wait_stat("listener.127.0.0.1_%d.ssl.ocsp_staple_responses" % lp, lambda v: v >= 2) == 2


def test_expired_staple_left_out_or_fatal_by_policy(herald, port, pki, tmp_path):
    expired = ocsp_response(pki, pki.leaf[0], str(tmp_path / "expired.der"), next_update_hours=-1,
                            this_update_hours=-3)
    lp = port()
    h = herald(ocsp_config(lp, pki, expired))   # LENIENT_STAPLING, the default
    h.lp = lp
    out = s_client(lp)
    assert "OCSP response: no response sent" in out and "Verify return code" in out, out
    assert h.wait_stat("listener.127.0.0.1_%d.ssl.ocsp_staple_omitted" % lp, lambda v: v >= 1) == 1
    lp2 = port()
    h2 = herald(ocsp_config(lp2, pki, expired, "STRICT_STAPLING"))
    h2.lp = lp2
    out = s_client(lp2)
    assert "OCSP Response Status" not in out and ("alert" in out or "errno" in out or "error" in out), out
    assert h2.wait_stat("listener.127.0.0.1_%d.ssl.ocsp_staple_failed" % lp2, lambda v: v >= 1) == 1
    # a client that does not ask is served: there is nothing to staple to it
    out = s_client(lp2, status=False)
    assert "Verify return code" in out and "Cipher is" in out, out


def validate(cfg, tmp_path):
    path = tmp_path / "ocsp.json"
    path.write_text(json.dumps(cfg, indent=1))
    return run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", PLUGIN_DIR])


def test_staple_errors(pki, tmp_path):
    # another certificate's response
    other = ocsp_response(pki, pki.other[0], str(tmp_path / "other.der"))
    r = validate(ocsp_config(1, pki, other), tmp_path)
    assert r.returncode == 1 and re.search(r"ocsp\.json:\d+:\d+: .*ocsp_staple .*other\.der does not match its "
                                           r"certificate", r.stderr), r.stderr
    # not an OCSP response at all
    r = validate(ocsp_config(1, pki, pki.leaf[0]), tmp_path)
    assert r.returncode == 1 and "not a DER OCSP response" in r.stderr, r.stderr
    # MUST_STAPLE without a staple
    r = validate(ocsp_config(1, pki, None, "MUST_STAPLE"), tmp_path)
    assert r.returncode == 1 and re.search(r"ocsp\.json:\d+:\d+: .*ocsp_staple_policy: MUST_STAPLE: "
                                           r"tls_certificates\[0\] has no ocsp_staple", r.stderr), r.stderr
    # a good one, MUST_STAPLE: fine; on a cluster it is ignored with a warning
    good = ocsp_response(pki, pki.leaf[0], str(tmp_path / "good.der"), next_update_hours=None)
    assert validate(ocsp_config(1, pki, good, "MUST_STAPLE"), tmp_path).returncode == 0
