"""Helpers for tests that reload herald with SIGHUP: the new process's PID
(from the log line "new process N is ready"), bounded waits for processes
that are not our children, and cleanup by PID.

A reloaded herald is a child of the old one; when the old one exits it is
re-parented. The tests make pytest a child subreaper (prctl) so that it is
re-parented to us: then we can reap it and see its exit status."""

import ctypes
import os
import re
import signal
import time

PR_SET_CHILD_SUBREAPER = 36

READY_RE = re.compile(r"new process (\d+) is ready")
FAILED_RE = re.compile(r"reload failed: (.*)")


def set_subreaper(on):
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) == 0


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_gone(pid, timeout):
    """Waits until pid exits. Returns its exit code when we could reap it
    (it is our child), "gone" when it vanished otherwise, None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r, st = os.waitpid(pid, os.WNOHANG)
            if r == pid:
                return os.waitstatus_to_exitcode(st)
        except ChildProcessError:
            if not alive(pid):
                return "gone"
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


class Reloads:
    """One herald (a conftest Herald) across reloads: .pid is the process
    serving now, .pids every process it has had."""

    def __init__(self, h):
        self.h = h
        self.pid = h.pid
        self.pids = [h.pid]

    def counts(self):
        log = self.h.log()
        return len(READY_RE.findall(log)), len(FAILED_RE.findall(log))

    def sighup(self, timeout=15.0):
        """SIGHUP to the serving process; waits for the outcome. Returns the
        new PID, or None when the reload failed (the log says why)."""
        ready0, failed0 = self.counts()
        os.kill(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.h.log()
            ready = READY_RE.findall(log)
            if len(ready) > ready0:
                self.pid = int(ready[-1])
                self.pids.append(self.pid)
                return self.pid
            if len(FAILED_RE.findall(log)) > failed0:
                return None
            time.sleep(0.02)
        raise AssertionError("no reload outcome within %ss\n%s" % (timeout, self.h.log_tail()))

    def wait_outcome(self, before, timeout=15.0):
        """After a reload that something other than sighup() set off (a
        watched file changed): waits for its outcome, before being counts()
        taken earlier. Returns the new PID, or None when it failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.h.log()
            ready = READY_RE.findall(log)
            if len(ready) > before[0]:
                self.pid = int(ready[-1])
                self.pids.append(self.pid)
                return self.pid
            if len(FAILED_RE.findall(log)) > before[1]:
                return None
            time.sleep(0.05)
        raise AssertionError("no reload outcome within %ss\n%s" % (timeout, self.h.log_tail()))

    def started(self):
        return self.h.log().count(": validating the configuration again")

    def settle(self, started_before, timeout=15.0):
        """Waits until a reload started after `started_before` ones and every
        reload started has its outcome in the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = self.started()
            if n > started_before and n == sum(self.counts()):
                return
            time.sleep(0.02)
        raise AssertionError("reloads did not settle within %ss\n%s" % (timeout, self.h.log_tail()))

    def wait_old_exit(self, timeout):
        """Waits for the original process (a Popen) to exit; returns its code or None."""
        return self.h.wait_exit(timeout)

    def stop_new(self, timeout=10.0):
        """SIGTERM to the serving process (not the original); returns its exit
        code as wait_gone does."""
        pid = self.pid
        os.kill(pid, signal.SIGTERM)
        return wait_gone(pid, timeout)

    def cleanup(self):
        """Kills (SIGTERM, then SIGKILL) every reloaded process still running."""
        for pid in self.pids[1:]:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                if wait_gone(pid, 5.0) is None:
                    os.kill(pid, signal.SIGKILL)
                    wait_gone(pid, 5.0)
            else:
                wait_gone(pid, 0)  # reap a zombie of ours
