"""Fixtures for herald's integration tests: free ports, the real herald
binary started from a config written into the test's tmp dir, and upstream
peers. A herald that crashed, asserted, printed sanitizer output or a
[critical] line, or did not exit 0 on SIGTERM fails the test that ran it.

Environment: HERALD_BUILDDIR (herald, plugins/), HERALD_SRCDIR (the source
tree); both default to this checkout and its build/ directory."""

import http.client
import json
import os
import re
import signal
import string
import subprocess
import time

import pytest

import helpers

try:
    import yaml
except ImportError:  # JSON is YAML too; herald parses both
    yaml = None

SRCDIR = os.path.abspath(os.environ.get("HERALD_SRCDIR")
                         or os.path.join(os.path.dirname(__file__), "..", ".."))
BUILDDIR = os.path.abspath(os.environ.get("HERALD_BUILDDIR") or os.path.join(SRCDIR, "build"))
HERALD_BIN = os.path.join(BUILDDIR, "herald")
PLUGIN_DIR = os.path.join(BUILDDIR, "plugins")

BAD_LOG_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer", "Assertion",
                   "SIGSEGV", "[critical]")

_report_lines = []


# ------------------------------------------------------------------ report lines


def pytest_runtest_logreport(report):
    # The notes travel as the test's user_properties: under pytest-xdist the
    # test ran in a worker and only its reports reach this (controller) process.
    if report.when == "teardown":
        _report_lines.extend(v for k, v in report.user_properties if k == "herald_note")


def pytest_terminal_summary(terminalreporter):
    if _report_lines:
        terminalreporter.section("herald test notes")
        for line in _report_lines:
            terminalreporter.write_line(line)


@pytest.fixture
def report(request):
    """report(line): printed in the summary at the end of the run."""
    return lambda line: request.node.user_properties.append(("herald_note", line))


# ------------------------------------------------------------------ order

# Files with one long test (testssl's full scan, the .deb build): run first,
# so that under pytest-xdist (--dist loadfile) they overlap the many short
# files instead of one of them being the run's tail.
LONG_FILES = ("test_tls_grade.py", "test_package.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda it: os.path.basename(str(it.fspath)) not in LONG_FILES)


# ------------------------------------------------------------------ time limit

TEST_TIMEOUT = int(os.environ.get("HERALD_TEST_TIMEOUT", "120"))


class HeraldTestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def time_limit():
    """Fails a test that runs longer than HERALD_TEST_TIMEOUT seconds (python3-pytest
    has no timeout plugin): SIGALRM interrupts whatever the test waits on."""
    def expired(signum, frame):
        raise HeraldTestTimeout("test took longer than %d s (HERALD_TEST_TIMEOUT)" % TEST_TIMEOUT)

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ ports


free_port = helpers.free_port


@pytest.fixture
def port():
    """A factory: port() returns a new free port."""
    return free_port


# ------------------------------------------------------------------ herald


def herald_available():
    return os.access(HERALD_BIN, os.X_OK)


def scan_log(text):
    """The lines of a herald log that show a crash, an assertion or sanitizer output."""
    return [line for line in text.splitlines() if any(m in line for m in BAD_LOG_MARKERS)]


def run_herald(args, timeout=15, **kw):
    """Runs herald to completion (validate, errors, CLI); returns CompletedProcess
    with text stdout/stderr. Fails the test if it hangs."""
    try:
        return subprocess.run([HERALD_BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, errors="replace", timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        pytest.fail("herald %s did not exit within %ss; stderr:\n%s" % (" ".join(args), timeout, e.stderr))


def config_refused(tmp_path, cfg, want, name="bad.json", indent=None):
    """herald --mode validate on cfg (a dict, written as JSON): it must be
    refused with an error at a file:line:column of that file whose text
    matches the regex want. Returns stderr."""
    path = tmp_path / name
    path.write_text(json.dumps(cfg, indent=indent))
    r = run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", PLUGIN_DIR])
    assert r.returncode == 1, (want, r.stderr)
    assert re.search(r"error: .*%s:\d+:\d+: .*" % re.escape(name) + want, r.stderr), (want, r.stderr)
    return r.stderr


class Herald:
    """One herald process. Use the `herald` fixture to make them."""

    def __init__(self, tmpdir, name):
        self.dir = tmpdir
        self.name = name
        self.admin_port = free_port()
        self.config_path = None
        self.log_path = os.path.join(tmpdir, name + ".log")
        self.proc = None
        self.rc = None
        self.expected_rc = 0   # checked at teardown; None: anything goes
        self.checked = False

    # ---- start / stop

    def write_config(self, config, subs=None, fmt="yaml"):
        """config: a dict (the admin block is added when missing), written as
        YAML or (fmt="json") JSON; or YAML/JSON text where $admin_port and the
        keys of subs are substituted."""
        if isinstance(config, dict):
            config = dict(config)
            config.setdefault("admin", {"address": helpers.sock_addr(self.admin_port)})
            if fmt == "yaml" and yaml:
                text = yaml.safe_dump(config, sort_keys=False)
            else:
                text = json.dumps(config, indent=2)
        else:
            values = {"admin_port": self.admin_port}
            values.update(subs or {})
            text = string.Template(config).substitute(values)
        self.config_path = os.path.join(self.dir, self.name + "." + fmt)
        with open(self.config_path, "w") as f:
            f.write(text)
        return self.config_path

    def start(self, config, subs=None, concurrency=1, wait="ready", args=(), log_level="debug",
              drain_time=1, plugin_dirs=None, timeout=10.0, fmt="yaml", env=None):
        """wait: "ready" (GET /ready is 200), "admin" (the admin listener
        answers anything: /ready may legitimately stay 503) or None.
        env: extra environment variables for herald."""
        self.write_config(config, subs, fmt)
        cmd = [HERALD_BIN, "-c", self.config_path, "--concurrency", str(concurrency),
               "--plugin-dir", plugin_dirs or PLUGIN_DIR, "--drain-time-s", str(drain_time)]
        if log_level:
            cmd += ["-l", log_level]
        cmd += list(args)
        self.cmd = cmd
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, **(env or {})))
        self.pid = self.proc.pid
        if wait:
            self.wait_up(wait, timeout)
        return self

    def wait_up(self, wait="ready", timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.rc = self.proc.returncode
                pytest.fail("herald exited with %s during start-up\ncmd: %s\n%s"
                            % (self.rc, " ".join(self.cmd), self.log_tail()))
            try:
                status, body = self.admin_get("/ready", timeout=1)
                last = (status, body)
                if wait == "admin" or status == 200:
                    return
            except OSError as e:
                last = e
            time.sleep(0.05)
        pytest.fail("herald not %s within %ss (last /ready: %r)\n%s"
                    % ("ready" if wait == "ready" else "answering on admin", timeout, last, self.log_tail()))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.rc

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL after timeout. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.rc = "killed after %ss without exiting on SIGTERM" % timeout
                return self.rc
        if self.rc is None:
            self.rc = self.proc.returncode
        return self.rc

    def close_log(self):
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=60):
        return "---- %s (last %d lines)\n%s" % (self.log_path, n, "\n".join(self.log().splitlines()[-n:]))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self):
        return helpers.rss_kb(self.pid)

    def cpu_seconds(self):
        return helpers.cpu_seconds(self.pid)

    # ---- admin

    def admin(self, method, path, timeout=5.0, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            data = r.read().decode("utf-8", "replace")
            self.last_headers = dict((k.lower(), v) for k, v in r.getheaders())
            return r.status, data
        finally:
            c.close()

    def admin_get(self, path, timeout=5.0):
        return self.admin("GET", path, timeout)

    def admin_post(self, path, timeout=5.0):
        return self.admin("POST", path, timeout)

    def stats(self):
        """/stats as {name: int}; non-integer values (histograms) are left out."""
        status, body = self.admin_get("/stats")
        assert status == 200, "/stats answered %s: %s" % (status, body[:200])
        out = {}
        for line in body.splitlines():
            name, sep, value = line.rpartition(": ")
            if not sep:
                continue
            try:
                out[name.strip()] = int(value.strip())
            except ValueError:
                pass
        return out

    def stat(self, name, default=0):
        return self.stats().get(name, default)

    def wait_stat(self, name, pred, timeout=5.0):
        """Polls /stats until pred(value) holds; returns the last value
        (workers' counters reach the admin thread with a small delay)."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.stat(name, None)
            if v is not None and pred(v):
                return v
            if time.monotonic() >= deadline:
                return v
            time.sleep(0.05)

    # ---- teardown checks

    def check(self):
        """Fails when the log shows a crash, or the exit code is not the expected one."""
        if self.checked:
            return
        self.checked = True
        problems = []
        rc = self.stop()
        self.close_log()
        if self.expected_rc is not None and rc != self.expected_rc:
            problems.append("herald exit status %r after SIGTERM (expected %r)" % (rc, self.expected_rc))
        bad = scan_log(self.log())
        if bad:
            problems.append("herald log shows trouble:\n  " + "\n  ".join(bad[:20]))
        if problems:
            pytest.fail("\n".join(problems) + "\n" + self.log_tail(), pytrace=False)


@pytest.fixture
def herald(tmp_path):
    """A factory: herald(config, **start_options) -> a started Herald. Each
    one is stopped with SIGTERM at teardown and checked (exit 0, clean log)."""
    if not herald_available():
        pytest.fail("no herald binary at %s (set HERALD_BUILDDIR)" % HERALD_BIN)
    made = []

    def make(config, **kw):
        h = Herald(str(tmp_path), "herald%d" % len(made))
        made.append(h)
        return h.start(config, **kw)

    yield make
    errors = []
    for h in made:
        try:
            h.check()
        except BaseException as e:  # pytest.fail raises a BaseException subclass
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def upstreams():
    """A factory for upstream servers: upstreams(helpers.EchoServer, tag="a").
    All are stopped at teardown."""
    made = []

    def make(cls, *a, **kw):
        s = cls(*a, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture(scope="session")
def abi_version():
    """(major, minor) of the SDK in this source tree."""
    text = open(os.path.join(SRCDIR, "sdk/include/herald/version.h")).read()
    major = int(re.search(r"#define HERALD_ABI_MAJOR (\d+)", text).group(1))
    minor = int(re.search(r"#define HERALD_ABI_MINOR (\d+)", text).group(1))
    return major, minor
