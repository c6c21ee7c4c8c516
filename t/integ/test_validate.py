"""--mode validate over real-world Envoy configs (accepted, or refused with a
clear error; never a crash) and over herald's own etc/ configs (accepted)."""

import collections
import glob
import os
import re

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


def test_validate_envoy_conformance_configs(report):
    if not os.path.isdir(CONFORMANCE):
        pytest.skip("no %s" % CONFORMANCE)
    files = sorted(f for f in os.listdir(CONFORMANCE) if f.endswith((".yaml", ".yml", ".json")))
    assert files
    validated = []
    rejected = collections.Counter()
    problems = []
    loc = re.compile(r"^error: .+:\d+:\d+: ")
    for name in files:
        path = os.path.join(CONFORMANCE, name)
        r = run_herald(["--mode", "validate", "-c", path, "--plugin-dir", PLUGIN_DIR], timeout=20)
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


@pytest.mark.parametrize("path", ETC_CONFIGS, ids=[os.path.relpath(p, SRCDIR) for p in ETC_CONFIGS])
def test_validate_etc_config(path):
    r = run_herald(["--mode", "validate", "-c", path, "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 0, "%s does not validate:\n%s" % (path, r.stderr)
    assert not scan_log(r.stderr)


def test_etc_has_configs():
    assert os.path.exists(os.path.join(SRCDIR, "etc", "herald.yaml")), "etc/herald.yaml is missing"
