"""systemd integration: the real notify protocol over a datagram socket we own."""

import os
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
