"""The Debian packages: dpkg-buildpackage builds herald and herald-dev from a
scratch copy of the source tree, lintian finds no errors, and the packaged
files work once extracted (dpkg -x) into a scratch root: the packaged herald
validates the packaged default config with the packaged plugins, and the SDK
example builds against the packaged herald-dev and loads into that herald.

Slow (a full package build, about a minute): skipped when HERALD_SKIP_SLOW=1
(.ci/run sets it for the sanitizer pass, whose build the package does not
use). Needs dpkg-dev, debhelper, fakeroot and lintian (.ci/install-deps)."""

import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import SRCDIR

BUILD_TIMEOUT = 900

pytestmark = pytest.mark.skipif(os.environ.get("HERALD_SKIP_SLOW") == "1",
                                reason="slow (builds the .deb): HERALD_SKIP_SLOW=1")

TOOLS = ("dpkg-buildpackage", "dh", "fakeroot", "lintian", "dpkg-architecture", "pkg-config", "cc", "make")


@pytest.fixture(autouse=True)
def time_limit():
    """Overrides conftest's 120 s limit: a package build takes minutes."""
    def expired(signum, frame):
        raise TimeoutError("package test took longer than %d s" % BUILD_TIMEOUT)

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(BUILD_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# Build products and autotools output of an in-tree build: the package build
# regenerates and rebuilds all of it (dh_autoreconf, dh_auto_configure).
SKIP_TOP = {".git", ".notes", "autom4te.cache", ".pytest_cache", "configure", "configure~", "aclocal.m4",
            "config.h", "config.h.in", "config.h.in~", "config.status", "config.log", "libtool",
            "stamp-h1", "herald", "debian-build"}
SKIP_ANY = {"__pycache__", ".deps", ".dirstamp", "Makefile.in"}


def _ignore(top):
    def ignore(d, names):
        rel = os.path.relpath(d, top)
        out = set()
        for n in names:
            p = os.path.join(d, n)
            if n in SKIP_ANY or n.endswith((".o", ".so", ".a", ".log", ".trs", ".tar.gz")):
                out.add(n)
            elif rel == "." and (n in SKIP_TOP or n.startswith("build")):
                out.add(n)
            elif n == "Makefile" and os.path.exists(p + ".am"):
                out.add(n)  # generated; sdk/example/Makefile (no .am) is source
            elif rel == os.path.join("t", "unit") and n.startswith("test_") and "." not in n:
                out.add(n)  # unit test binaries
            elif rel == os.path.join("t", "fuzz") and n.startswith("fuzz_") and "." not in n:
                out.add(n)
            elif os.path.exists(p + ".in"):
                out.add(n)  # made by configure or make from n.in (herald-sdk.pc, herald.service)
        return out
    return ignore


def run(cmd, **kw):
    kw.setdefault("timeout", BUILD_TIMEOUT)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Builds the packages once; returns (work dir, {package: .deb path}, build log)."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip("needs %s (.ci/install-deps installs them)" % ", ".join(missing))
    if not os.path.isfile(os.path.join(SRCDIR, "debian", "control")):
        pytest.fail("no debian/control in %s" % SRCDIR)
    work = tmp_path_factory.mktemp("package")
    src = work / "herald"
    shutil.copytree(SRCDIR, str(src), symlinks=True, ignore=_ignore(SRCDIR))
    env = dict(os.environ)
    env["DEB_BUILD_OPTIONS"] = "nocheck parallel=2"
    # The CI's own flags must not leak into the package build.
    for v in ("CFLAGS", "CPPFLAGS", "LDFLAGS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ASAN_OPTIONS",
              "UBSAN_OPTIONS"):
        env.pop(v, None)
    r = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=str(src), env=env)
    log = r.stdout
    (work / "build.log").write_text(log)
    assert r.returncode == 0, "dpkg-buildpackage failed (exit %d):\n%s" % (r.returncode, log[-6000:])
    debs = {}
    for f in os.listdir(str(work)):
        m = re.match(r"^([a-z0-9.+-]+?)_[^_]+_[a-z0-9-]+\.deb$", f)
        if m:
            debs[m.group(1)] = str(work / f)
    return work, debs, log


@pytest.fixture(scope="module")
def root(built, tmp_path_factory):
    """herald and herald-dev extracted into one scratch root."""
    work, debs, _ = built
    r = tmp_path_factory.mktemp("root")
    for pkg in ("herald", "herald-dev"):
        assert pkg in debs, "no %s .deb built (got %s)" % (pkg, sorted(debs))
        x = run(["dpkg", "-x", debs[pkg], str(r)])
        assert x.returncode == 0, x.stdout
    return str(r)


def multiarch():
    return subprocess.check_output(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"],
                                   universal_newlines=True).strip()


def test_package_builds_both(built):
    _, debs, _ = built
    assert {"herald", "herald-dev"} <= set(debs), sorted(debs)


def test_package_lintian_no_errors(built):
    work, _, _ = built
    changes = [f for f in os.listdir(str(work)) if f.endswith(".changes")]
    assert len(changes) == 1, changes
    r = run(["lintian", "--tag-display-limit", "0", changes[0]], cwd=str(work))
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert not errors, "lintian errors:\n" + r.stdout
    # lintian exits 2 when it could not run at all
    assert r.returncode in (0, 1), r.stdout


def test_package_contents(built, root):
    _, debs, _ = built
    ma = multiarch()
    plugindir = os.path.join(root, "usr", "lib", ma, "herald", "plugins")
    for rel in ("usr/bin/herald", "etc/herald/herald.yaml", "lib/systemd/system/herald.service",
                "usr/lib/sysusers.d/herald.conf", "usr/share/man/man8/herald.8.gz",
                "usr/share/man/man5/herald.yaml.5.gz", "usr/share/doc/herald/copyright",
                "usr/include/herald/herald.h", "usr/lib/%s/pkgconfig/herald-sdk.pc" % ma,
                "usr/share/man/man3/herald-sdk.3.gz", "usr/share/doc/herald-dev/examples/cidr_guard.c",
                "usr/share/doc/herald-dev/examples/Makefile"):
        assert os.path.exists(os.path.join(root, rel)), rel + " is not packaged"
    assert os.listdir(os.path.join(root, "usr", "share", "doc", "herald", "examples"))
    for name in ("tcp_proxy", "http_connection_manager", "router", "rbac_http", "rbac_network",
                 "tls_inspector"):
        assert os.path.exists(os.path.join(plugindir, name + ".so")), name + ".so is not packaged"
    # every man page of the source tree is in one of the packages
    for page in os.listdir(os.path.join(SRCDIR, "man")):
        m = re.match(r"^.+\.([1-8])$", page)
        if m:
            assert os.path.exists(os.path.join(root, "usr", "share", "man", "man" + m.group(1), page + ".gz")), \
                "man/%s is not packaged (is it in dist_man_MANS?)" % page
    info = run(["dpkg-deb", "-I", debs["herald"], "conffiles"]).stdout
    assert "/etc/herald/herald.yaml" in info.split()
    postinst = run(["dpkg-deb", "-I", debs["herald"], "postinst"]).stdout
    assert "systemd-sysusers" in postinst, "the herald user is not created at install"
    assert "deb-systemd-helper" in postinst and "herald.service" in postinst, "the unit is not enabled"


def test_package_herald_validates_default_config(root):
    plugindir = os.path.join(root, "usr", "lib", multiarch(), "herald", "plugins")
    herald = os.path.join(root, "usr", "bin", "herald")
    r = run([herald, "--mode", "validate", "-c", os.path.join(root, "etc", "herald", "herald.yaml"),
             "--plugin-dir", plugindir], timeout=60)
    assert r.returncode == 0, r.stdout
    # every packaged plugin loads into the packaged binary
    r = run([herald, "--list-plugins", "--plugin-dir", plugindir], timeout=60)
    assert r.returncode == 0, r.stdout
    assert "not loaded" not in r.stdout, r.stdout
    for so in os.listdir(plugindir):
        assert os.path.join(plugindir, so) in r.stdout, r.stdout


def test_package_unit_verifies(root, tmp_path):
    """The packaged unit passes systemd-analyze verify (its ExecStart pointed at the extracted binary)."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("no systemd-analyze")
    unit = open(os.path.join(root, "lib", "systemd", "system", "herald.service")).read()
    assert re.search(r"^ExecStart=/usr/bin/herald -c /etc/herald/herald.yaml", unit, re.M), unit
    assert re.search(r"^User=herald$", unit, re.M), unit
    (tmp_path / "herald.service").write_text(unit.replace("ExecStart=/usr/bin/herald",
                                                          "ExecStart=" + os.path.join(root, "usr/bin/herald")))
    r = run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "herald.service")], timeout=60)
    assert r.returncode == 0 and "herald.service" not in r.stdout, r.stdout


def test_package_sdk_example_builds(root, tmp_path):
    ma = multiarch()
    ex = tmp_path / "example"
    shutil.copytree(os.path.join(root, "usr", "share", "doc", "herald-dev", "examples"), str(ex))
    env = dict(os.environ, PKG_CONFIG_SYSROOT_DIR=root,
               PKG_CONFIG_PATH=os.path.join(root, "usr", "lib", ma, "pkgconfig"))
    env.pop("PKG_CONFIG_LIBDIR", None)
    cflags = run(["pkg-config", "--cflags", "herald-sdk"], env=env)
    assert cflags.returncode == 0 and root in cflags.stdout, cflags.stdout
    r = run(["make", "PKG_CONFIG_SYSROOT_DIR=" + root, "PKG_CONFIG_PATH=" + env["PKG_CONFIG_PATH"]],
            cwd=str(ex), env=env)
    assert r.returncode == 0, r.stdout
    assert (ex / "cidr_guard.so").exists()
    # headers from the scratch root, not from a herald-dev installed on this machine
    assert "-I" + os.path.join(root, "usr", "include") in r.stdout, r.stdout
    # the filter built against the packaged SDK loads into the packaged herald
    plugindir = os.path.join(root, "usr", "lib", ma, "herald", "plugins")
    herald = os.path.join(root, "usr", "bin", "herald")
    r = run([herald, "--mode", "validate", "-c", str(ex / "example.yaml"),
             "--plugin-dir", plugindir + ":" + str(ex)], timeout=60)
    assert r.returncode == 0, r.stdout
