"""systemd integration: the real notify protocol over a datagram socket we own."""

import os
import re
import shutil
import tempfile
import signal
import socket
import time

from chatd_helpers import scaled


class NotifySocket:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.seen = []

    def wait_for(self, word, timeout):
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            if any(word in m.split("\n") for m in self.seen):
                return
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        raise AssertionError("no %s from chatd within %.1fs; got %r" % (word, timeout, self.seen))

    def drain(self, duration):
        """Collect whatever arrives for duration seconds."""
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def count(self, word):
        return sum(word in m.split("\n") for m in self.seen)


def test_notify_ready_watchdog_reload_stopping(chatd, tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    ns = NotifySocket(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")        # 0.2 s: a ping every 0.1 s
    srv = chatd()
    ns.wait_for("READY=1", 5)
    # WATCHDOG=1 keeps coming from the loop's own timer.
    ns.wait_for("WATCHDOG=1", 2)
    n = ns.count("WATCHDOG=1")
    ns.drain(1.0)
    assert ns.count("WATCHDOG=1") >= n + 3      # about 10 in a second
    ready_before = ns.count("READY=1")
    srv.signal(signal.SIGHUP)
    ns.wait_for("RELOADING=1", 5)
    ns.drain(scaled(1.0))
    assert ns.count("READY=1") == ready_before + 1, ns.seen
    srv.signal(signal.SIGTERM)
    ns.wait_for("STOPPING=1", 5)
    assert srv.wait_exit(scaled(10)) == 0


def test_without_watchdog_usec_no_watchdog_pings(chatd, tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    ns = NotifySocket(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    chatd()
    ns.wait_for("READY=1", 5)
    ns.drain(0.5)
    assert ns.count("WATCHDOG=1") == 0


def test_journald_logs_have_priorities_and_no_timestamps(chatd, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    srv = chatd()
    assert srv.stop() == 0
    lines = [l for l in srv.log_text().splitlines() if l]
    assert lines and all(l.startswith("<") and l[2] == ">" for l in lines), lines[:5]
    assert any(l.startswith("<6>") and "listening" in l for l in lines)
    assert not any(l[3:7].isdigit() and l[7] == "-" for l in lines)   # no ISO timestamps


# ---------------------------------------------------------------------------
# the unit's sandbox (conf/chatd.service.in), rebuilt by unit_sandbox.py

REPO_DIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
UNIT = os.path.join(REPO_DIR, "conf", "chatd.service.in")


def unit_value(key):
    with open(UNIT) as f:
        for line in f:
            if line.startswith(key + "="):
                return line.split("=", 1)[1].strip()
    raise AssertionError("%s= not in the unit" % key)


def test_sandbox_harness_really_confines(tmp_path):
    """The rebuilt sandbox bites: a call outside the unit's filter kills, and
    /proc has no kernel files. Otherwise the next test would prove nothing."""
    import subprocess
    import unit_sandbox
    prefix = unit_sandbox.command(UNIT)
    r = subprocess.run(prefix + ["/usr/sbin/chroot", "/", "/bin/true"], capture_output=True)
    assert r.returncode == -signal.SIGSYS, r
    r = subprocess.run(prefix + ["/bin/cat", "/proc/meminfo"], capture_output=True)
    assert r.returncode != 0 and b"No such file" in r.stderr, r
    r = subprocess.run(prefix + ["/bin/cat", "/proc/self/status"], capture_output=True)
    assert r.returncode == 0, r


def test_chatd_runs_under_the_unit_sandbox(chatd, tmp_path, monkeypatch, request):
    """chatd with storage, TLS off, under the unit's SystemCallFilter (any
    other call kills it), NoNewPrivileges and ProcSubset=pid: starts, chats,
    stores, reloads, serves /metrics, stays within TasksMax, and exits 0."""
    import unit_sandbox
    from chatd_helpers import SANITIZE, run
    if SANITIZE:
        # LeakSanitizer stops the process with ptrace at exit, which the
        # unit forbids (@debug); ASan's other needs are the sanitizer's.
        monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=0:exitcode=23")
    # The state directory and config belong to the unprivileged user, as
    # StateDirectory= and a world-readable /etc/chatd give them.
    state = tempfile.mkdtemp(prefix="chatd-unit-")
    request.addfinalizer(lambda: shutil.rmtree(state, ignore_errors=True))
    os.chown(state, unit_sandbox.NOBODY, unit_sandbox.NOBODY)
    # The binary too: the checkout may sit where nobody cannot enter (/root).
    binary = os.path.join(state, "chatd")
    shutil.copy2(os.environ.get("CHATD_BIN") or os.path.join(REPO_DIR, "build", "chatd"), binary)
    os.chmod(binary, 0o755)
    monkeypatch.setenv("CHATD_BIN", binary)
    path = os.path.join(state, "notify.sock")
    ns = NotifySocket(path)
    os.chmod(path, 0o666)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    db = os.path.join(state, "chat.db")
    srv = chatd({"storage": {"path": db}}, start=False)
    srv.config_path = os.path.join(state, "chatd.toml")
    srv.write_config(srv.config)
    os.chmod(srv.config_path, 0o644)
    srv.wrapper = unit_sandbox.command(UNIT)
    srv.start(timeout=20)
    ns.wait_for("READY=1", 5)

    async def chat():
        a = await srv.client("sandboxed")
        await a.join("lobby")
        await a.send({"type": "send", "room": "lobby", "id": "m1", "body": "inside"})
        await a.expect_unordered(["ack", "message"])
        h = await a.request({"type": "history", "room": "lobby", "limit": 10}, "history")
        await a.close()
        return h
    h = run(chat())
    assert [m.get("body") for m in h.get("messages", [])] == ["inside"], h
    srv.signal(signal.SIGHUP)
    ns.wait_for("RELOADING=1", 5)
    ns.drain(scaled(0.5))
    assert "configuration reloaded" in srv.log_text()
    assert srv.metrics().value("chatd_messages_in_total") == 1
    with open("/proc/%d/status" % srv.pid) as f:
        threads = int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M).group(1))
    assert threads <= int(unit_value("TasksMax")), threads
    assert srv.alive(), srv.log_tail()
    assert srv.stop() == 0, srv.log_tail()
    assert os.stat(db).st_uid == unit_sandbox.NOBODY and os.path.getsize(db) > 0
