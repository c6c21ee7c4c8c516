"""--mode validate over real-world Envoy configs (accepted, or refused with a
clear error; never a crash) and over herald's own etc/ configs (accepted)."""

import collections
import glob
import os
import re
import shutil
import subprocess

import pytest

from conftest import PLUGIN_DIR, SRCDIR, run_herald, scan_log

CONFORMANCE = os.path.normpath(os.path.join(SRCDIR, "..", "shared", "conformance", "envoy-configs"))


def _needs_certs(path):
    """Examples naming /etc/herald/certs/ are validated with temporary
    certificates in test_tls_grade.py."""
    with open(path) as f:
        return "/etc/herald/certs/" in f.read()


ETC_CONFIGS = sorted(p for p in glob.glob(os.path.join(SRCDIR, "etc", "*.yaml"))
                     + glob.glob(os.path.join(SRCDIR, "etc", "examples", "*.yaml")) if not _needs_certs(p))


def reason_of(line):
    """A short class for an error line, for the summary."""
    if "not supported" in line:
        return "not supported"
    m = re.search(r"unknown filter '([^']+)'", line)
    if m:
        return "unknown filter " + m.group(1)
    return re.sub(r"^error: \S+:\d+:\d+: ", "", line)[:80]


# The configs herald runs as they are (those naming certs/... get throwaway
# certificates there): one that stops validating is a regression.
EXPECTED_VALID = {
    "configs-admin-interface.yaml", "configs-envoy-demo.yaml", "configs-google-vrp-envoy-edge.yaml",
    "docs-configuration-best_practices-edge.yaml", "docs-configs-load-balancing-load-balancing-policies.yaml",
    "examples-cors-backend-envoy.yaml", "examples-ext_authz-config-http-service.yaml",
    "docs-configs-retry-retry-previous-hosts.yaml", "docs-configs-upstream-health-checking.yaml",
    "docs-configuration-http_filters-local-rate-limit-global-configuration.yaml",
    "examples-double-proxy-envoy-backend.yaml", "examples-double-proxy-envoy-frontend.yaml",
    "examples-fault-injection-envoy.yaml", "examples-front-proxy-envoy.yaml", "examples-gzip-envoy.yaml",
    "examples-grpc-bridge-server-envoy-proxy.yaml", "examples-local_ratelimit-envoy.yaml",
    "examples-mysql-envoy.yaml", "examples-route-mirror-envoy.yaml", "examples-tls-envoy-http-https.yaml",
    "examples-tls-envoy-https-http.yaml", "examples-tls-envoy-https-https.yaml",
    "examples-tls-envoy-https-passthrough.yaml", "examples-tls-inspector-envoy.yaml",
    "examples-tls-sni-envoy-client.yaml", "examples-tls-sni-envoy.yaml", "examples-websocket-envoy-ws-route.yaml",
    "examples-websocket-envoy-ws.yaml",
    "configs-proxy_protocol.yaml", "docs-intro-arch_overview-other_features-proxy-protocol.yaml",
    "examples-locality-load-balancing-envoy.yaml", "docs-intro-arch_overview-security-ssl.yaml",
    "examples-rbac-envoy.yaml", "docs-intro-arch_overview-security-rbac-http.yaml",
    "docs-configuration-http_filters-header-to-metadata-filter.yaml",
    "examples-redis-envoy.yaml",
}


def make_certs(d):
    """The certs/ files the conformance configs name (relative to the working
    directory, as Envoy reads them): a throwaway CA and leaves it signed."""
    certs = d / "certs"
    certs.mkdir()

    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=str(certs))

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "cakey.pem", "-out", "cacert.pem", "-days", "2", "-subj", "/CN=test-ca")
    for name, crt, key in (("server", "servercert.pem", "serverkey.pem"), ("client", "clientcert.pem", "clientkey.pem"),
                           ("domain1", "domain1.crt.pem", "domain1.key.pem"),
                           ("domain2", "domain2.crt.pem", "domain2.key.pem")):
        run("req", *ec, "-keyout", key, "-out", name + ".csr", "-subj", "/CN=%s.example.com" % name)
        (certs / (name + ".ext")).write_text("subjectAltName=DNS:%s.example.com\n" % name)
        run("x509", "-req", "-in", name + ".csr", "-CA", "cacert.pem", "-CAkey", "cakey.pem", "-CAcreateserial",
            "-out", crt, "-days", "2", "-extfile", name + ".ext")
    shutil.copy(str(certs / "cacert.pem"), str(certs / "ca-certificates.crt"))


def test_validate_envoy_conformance_configs(report, tmp_path):
    if not os.path.isdir(CONFORMANCE):
        pytest.skip("no %s" % CONFORMANCE)
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    make_certs(tmp_path)
    files = sorted(f for f in os.listdir(CONFORMANCE) if f.endswith((".yaml", ".yml", ".json")))
    assert files
    validated = []
    rejected = collections.Counter()
    problems = []
    loc = re.compile(r"^error: .+:\d+:\d+: ")
    for name in files:
        path = os.path.join(CONFORMANCE, name)
        r = run_herald(["--mode", "validate", "-c", path, "--plugin-dir", PLUGIN_DIR], timeout=20, cwd=str(tmp_path))
        bad = scan_log(r.stderr)
        if bad:
            problems.append("%s: crash/sanitizer output: %s" % (name, bad[:3]))
        if r.returncode == 0:
            validated.append(name)
            continue
        if r.returncode != 1:
            problems.append("%s: exit status %d (a signal is negative)\n%s" % (name, r.returncode, r.stderr[-2000:]))
            continue
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        vague = [line for line in errors if not loc.match(line)]
        if vague:
            problems.append("%s: an error without FILE:LINE:COL (one problem reported twice?): %s" % (name, vague))
        clear = [line for line in errors
                 if "not supported" in line or "unknown filter" in line or loc.match(line)]
        if not clear:
            problems.append("%s: exit 1 without a clear 'error: FILE:LINE:COL: ...' line:\n%s"
                            % (name, r.stderr[-2000:]))
            continue
        rejected[reason_of(clear[0])] += 1
    report("conformance: %d configs, %d validated, %d rejected"
           % (len(files), len(validated), sum(rejected.values())))
    for reason, n in rejected.most_common():
        report("  rejected %2d x %s" % (n, reason))
    assert not problems, "\n".join(problems)
    missing = sorted(EXPECTED_VALID - set(validated) & set(files))
    assert not missing, "these configs no longer validate: %s" % missing


@pytest.mark.parametrize("path", ETC_CONFIGS, ids=[os.path.relpath(p, SRCDIR) for p in ETC_CONFIGS])
def test_validate_etc_config(path):
    r = run_herald(["--mode", "validate", "-c", path, "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 0, "%s does not validate:\n%s" % (path, r.stderr)
    assert not scan_log(r.stderr)


def test_etc_has_configs():
    assert os.path.exists(os.path.join(SRCDIR, "etc", "herald.yaml")), "etc/herald.yaml is missing"


def test_cluster_named_only_by_cluster_header_is_not_unreferenced(tmp_path):
    """A cluster that only a route's cluster_header can reach is in use; an
    unused one is still warned about."""
    import json
    import http_backends as hb
    routes = [hb.route("/h", None, cluster_header="x-cluster"), hb.route("/", "backend")]
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(1, hb.hcm("x", routes))],
        "clusters": [hb.http_cluster("backend", [1]), hb.http_cluster("by_header", [2])]}}
    path = tmp_path / "ch.json"
    path.write_text(json.dumps(cfg))
    r = run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 0 and "never referenced" not in r.stderr, r.stderr
    routes = [hb.route("/", "backend")]
    cfg["static_resources"]["listeners"] = [hb.http_listener(1, hb.hcm("x", routes))]
    path.write_text(json.dumps(cfg))
    r = run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 0 and "cluster 'by_header' is never referenced" in r.stderr, r.stderr


def test_a_cluster_error_is_reported_once(tmp_path):
    """A bad cluster stops start-up with its own error only: the listener's
    http_connection_manager, which is fine, must not add a vague "invalid
    HttpConnectionManager configuration" (its route table took any earlier
    error in the file for one of its own), and the error names what a cluster
    does take."""
    import json
    import http_backends as hb
    cluster = hb.http_cluster("backend", [1])
    cluster["transport_socket"] = {"name": "envoy.transport_sockets.alts", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts"}}
    cfg = {"static_resources": {"listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "backend")]))],
                                "clusters": [cluster]}}
    path = tmp_path / "bad-cluster.json"
    path.write_text(json.dumps(cfg))
    r = run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", PLUGIN_DIR])
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1, r.stderr
    assert re.match(r"error: .*bad-cluster\.json:\d+:\d+: static_resources\.clusters\[0\]\.transport_socket\."
                    r"typed_config\.@type: not supported: transport socket type "
                    r"envoy\.extensions\.transport_sockets\.alts\.v3\.Alts \(a cluster takes "
                    r"envoy\.transport_sockets\.raw_buffer or .*UpstreamTlsContext\)", errors[0]), errors[0]
