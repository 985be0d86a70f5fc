"""Fixtures: start the real chatd binary with a temp config on a free port.

    def test_something(chatd):
        srv = chatd({"limits": {"rate": 1}})      # started, /healthz answers 200
        ...

On teardown every server still running gets SIGTERM, must exit 0 within 10 s,
and its log must hold no sanitizer report. A failing test prints the tail of
each server log.
"""

import os
import resource
import signal as _signal
import ssl
import subprocess
import time

import pytest

from chatd_helpers import (Client, RawWS, SANITIZE, free_port, http_get, merge_config,
                           parse_metrics, scaled, toml_dumps)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SAMPLE_CONFIG = os.path.join(REPO, "conf", "chatd.toml")

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: AddressSanitizer", "ERROR: UndefinedBehaviorSanitizer")

# Fast defaults for tests; each test overrides what it exercises.
DEFAULT_CONFIG = {
    "server": {
        "listen": "127.0.0.1",
        "node_id": "test-node",
        "handshake_timeout": 2,
        "shutdown_timeout": 2,
        "max_connections": 1000,
        "max_connections_per_ip": 0,
    },
    "heartbeat": {"interval": 1, "timeout": 3},
    "limits": {
        # generous rate so only the rate-limit tests ever see rate_limited
        "rate": 10000,
        "burst": 10000,
    },
    "log": {"level": "info", "format": "text"},
}


def chatd_bin():
    path = os.environ.get("CHATD_BIN") or os.path.join(REPO, "build", "chatd")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail("chatd binary not found at %r (set CHATD_BIN)" % path)
    return os.path.abspath(path)


def chatd_env():
    env = dict(os.environ)
    # Leak checking is ASan's default on Linux; make reports land in the log
    # and make the process exit non-zero on any finding.
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env.setdefault("LSAN_OPTIONS", "exitcode=23")
    return env


def run_cli(args, timeout=10.0):
    """Run chatd with arguments to completion -> CompletedProcess (text)."""
    return subprocess.run([chatd_bin()] + list(args), capture_output=True, text=True,
                          timeout=scaled(timeout), env=chatd_env(), cwd=REPO)


def sanitizer_report(text):
    return [m for m in SANITIZER_MARKERS if m in text]


class ChatdServer:
    def __init__(self, tmp_path, index, overrides):
        self.dir = tmp_path
        self.index = index
        self.port = free_port()
        self.config = merge_config(DEFAULT_CONFIG, overrides)
        self.config.setdefault("server", {})["port"] = self.port
        self.config_path = str(tmp_path / ("chatd-%d.toml" % index))
        self.log_path = str(tmp_path / ("chatd-%d.log" % index))
        self.write_config(self.config)
        self.proc = None
        self.logf = None
        self.raw_clients = []
        self.returncode = None
        self.stopped = False
        self.preexec = None          # extra child setup (e.g. resource limits)
        self.expected_rc = 0         # exit status teardown expects (-9 for a node a test kills)
        self.probe_source = None     # address the readiness probe comes from (api.allow tests)
        self.wrapper = []            # command that execs chatd (a sandbox), same pid

    @property
    def api_port(self):
        """The [api] listener's port (plain HTTP, /metrics and /healthz), or None."""
        api = self.config.get("api", {})
        return api.get("port") if api.get("listen") else None

    @property
    def tls(self):
        """wss/https on the port ([tls] cert set)."""
        return bool(self.config.get("tls", {}).get("cert"))

    # -- config

    def write_config(self, cfg=None, text=None):
        if text is None:
            text = toml_dumps(cfg)
        with open(self.config_path, "w") as f:
            f.write(text)

    def rewrite(self, overrides):
        """Rewrite the config file with overrides on top of the current config (port kept)."""
        self.config = merge_config(self.config, overrides)
        self.config["server"]["port"] = self.port
        self.write_config(self.config)

    # -- process

    def start(self, timeout=10.0, rlimit_nofile=None, healthy=True):
        """Start chatd and wait for /healthz 200 (any answer when healthy=False, e.g. a
        cluster node whose Redis is down). rlimit_nofile=(soft, hard) is set in the child."""
        self.logf = open(self.log_path, "ab")
        extra = self.preexec

        def preexec():
            if rlimit_nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, rlimit_nofile)
            if extra is not None:
                extra()
        self.proc = subprocess.Popen(self.wrapper + [chatd_bin(), "-c", self.config_path], stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=chatd_env(), cwd=str(self.dir), preexec_fn=preexec)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("chatd exited with %d during startup\n%s" % (rc, self.log_tail()))
            try:
                if self.api_port:
                    status, _, _ = http_get(self.api_port, "/healthz", timeout=1.0,
                                            source=self.probe_source)
                else:
                    status, _, _ = http_get(self.port, "/healthz", timeout=1.0, tls=self.tls,
                                            source=self.probe_source)
                if status == 200 or (not healthy and status == 503):
                    return self
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise AssertionError("chatd: /healthz did not answer 200 within %.0fs\n%s"
                                     % (scaled(timeout), self.log_tail()))
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout):
        """Wait for the process to exit -> returncode; kills it and fails if it does not."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.returncode = self.proc.returncode
            self.stopped = True
            raise AssertionError("chatd did not exit within %.1fs; killed\n%s" % (timeout, self.log_tail()))
        self.returncode = rc
        self.stopped = True
        return rc

    def stop(self, sig=_signal.SIGTERM, timeout=10.0):
        """Signal and wait; returns the exit code (does not assert it)."""
        if self.stopped:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(scaled(timeout))

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        lines = self.log_text().splitlines()
        return "---- chatd log %s (last %d of %d lines) ----\n%s\n---- end of log ----" % (
            self.log_path, min(n, len(lines)), len(lines), "\n".join(lines[-n:]))

    # -- talking to it

    def http(self, path, **kw):
        kw.setdefault("tls", self.tls)
        return http_get(self.port, path, **kw)

    def metrics(self):
        if self.api_port:
            status, hdrs, body = http_get(self.api_port, "/metrics")
        else:
            status, hdrs, body = http_get(self.port, "/metrics", tls=self.tls)
        assert status == 200, "/metrics -> %d %r" % (status, body[:200])
        return parse_metrics(body.decode())

    async def client(self, name=None, **kw):
        """A connected Client (hello'd when name is given)."""
        c = await Client.connect(self.port, **kw)
        if name is not None:
            await c.hello(name)
        return c

    def raw(self, **kw):
        if self.tls:
            kw.setdefault("ssl_context", ssl._create_unverified_context())
        r = RawWS.connect(self.port, **kw)
        self.raw_clients.append(r)
        return r

    def finish(self):
        """Teardown: SIGTERM, exit 0, no sanitizer report."""
        for r in self.raw_clients:
            r.close()
        problems = []
        if self.proc is not None:
            try:
                rc = self.stop(timeout=10.0)
            except AssertionError as e:
                problems.append(str(e))
                rc = self.returncode
            if rc != self.expected_rc:
                problems.append("chatd exited with %r, expected %r" % (rc, self.expected_rc))
        if self.logf:
            self.logf.close()
            self.logf = None
        found = sanitizer_report(self.log_text())
        if found:
            problems.append("sanitizer report in the chatd log: %s" % ", ".join(found))
        if "engine contract broken" in self.log_text():
            # hub.c logs it when an engine completes a message inside submit
            problems.append("an engine broke the hub's contract (see the chatd log)")
        return problems


@pytest.fixture
def chatd(tmp_path, request):
    """Factory: chatd(overrides=None, start=True) -> ChatdServer."""
    servers = []

    def factory(overrides=None, start=True, **start_kw):
        srv = ChatdServer(tmp_path, len(servers), overrides)
        servers.append(srv)
        if start:
            srv.start(**start_kw)
        return srv

    factory.servers = servers
    yield factory

    problems = []
    for srv in servers:
        p = srv.finish()
        if p:
            problems.append("server %d (port %d):\n  %s\n%s" % (srv.index, srv.port, "\n  ".join(p),
                                                               srv.log_tail()))
    if problems:
        pytest.fail("chatd teardown failed:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def server(chatd):
    """One chatd with the fast test defaults."""
    return chatd()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when == "call":
        # Print the tail of every server log this test started.
        factory = getattr(item, "funcargs", {}).get("chatd")
        for srv in getattr(factory, "servers", []):
            rep.sections.append(("chatd log (server %d)" % srv.index, srv.log_tail(80)))


def pytest_report_header(config):
    return "chatd: CHATD_BIN=%s sanitize=%s" % (os.environ.get("CHATD_BIN", "<unset>"), SANITIZE)
