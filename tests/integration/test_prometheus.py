"""The operator's dashboard and rules against a real Prometheus scraping real chatd.

Debian's prometheus binary (not its service) runs on a free loopback port with
a temp config and TSDB, scraping three chatd nodes every second: one with
SQLite storage and two sharing a real redis-server (the cluster panels). Under
a little chat traffic, every query of conf/grafana/chatd-dashboard.json (read
from the JSON, with its Grafana variables substituted) must return data, the
per-node ones a series per node, and the rules of
conf/prometheus/chatd-rules.yml must evaluate without error, the recording
rules with data, and raise no alert for these healthy nodes.

CHATD_DASHBOARD_PNG=FILE also renders the dashboard's panels from this
Prometheus into FILE (tools/dashboard_png.py), after CHATD_DASHBOARD_SECONDS
(default 12) of traffic: that is how docs/dashboard.png is made.
"""

import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from chatd_helpers import free_port, run, scaled, wait_until
from test_cluster import Redis, node_cfg

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
RULES = os.path.join(REPO, "conf", "prometheus", "chatd-rules.yml")
sys.path.insert(0, os.path.join(REPO, "tools"))
import dashboard_png  # noqa: E402  (the same query extraction the PNG uses)

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
RATE_INTERVAL = "10s"     # what Grafana's $__rate_interval becomes at a 1 s scrape, with margin


class Prometheus:
    """A private prometheus server: temp config and TSDB, a free loopback port."""

    def __init__(self, tmp_path, targets):
        self.dir = tmp_path / "prometheus"
        self.dir.mkdir()
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [RULES],
            "scrape_configs": [{"job_name": "chatd",
                                "static_configs": [{"targets": targets}]}],
        }
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(json.dumps(config))      # JSON is YAML
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = None

    def start(self):
        assert os.path.exists(PROMETHEUS), "prometheus is not installed (scripts/setup.sh --test)"
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=%s" % self.config,
             "--storage.tsdb.path=%s" % (self.dir / "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port,
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(self.dir))
        wait_until(self.ready, scaled(30), interval=0.2, what="prometheus ready")
        return self

    def ready(self):
        assert self.proc.poll() is None, "prometheus exited:\n" + self.log_text()
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path, **params):
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr):
        return self.api("/api/v1/query", query=expr)["result"]

    def log_text(self):
        self.log.flush()
        return (self.dir / "prometheus.log").read_text(errors="replace")[-4000:]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


async def chat(nodes, seconds):
    """Two clients per node, in one room on the storage node and one across the
    cluster; each sends 10 to 30 times a second and everyone reads."""
    clients = []
    for i, srv in enumerate(nodes):
        for k in range(2):
            c = await srv.client("u%d%d" % (i, k))
            await c.join("storage" if i == 0 else "cluster")
            clients.append(c)

    async def reader(c):
        try:
            while True:
                await c.recv(timeout=scaled(10))
        except asyncio.CancelledError:
            pass

    readers = [asyncio.ensure_future(reader(c)) for c in clients]
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        for c in clients:
            await c.send({"type": "send", "room": "storage" if c.name.startswith("u0") else "cluster",
                          "id": "m%d" % n, "body": "hello %d" % n})
        n += 1
        # ramp from 10 to about 30 rounds a second, so that the panels move
        await asyncio.sleep(0.1 - 0.065 * (1 - (deadline - time.monotonic()) / seconds))
    await asyncio.sleep(0.5)
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for c in clients:
        await c.close()
    return n


def test_dashboard_queries_and_rules_against_real_prometheus(chatd, redis, tmp_path):
    standalone = chatd({"server": {"node_id": "solo"},
                        "storage": {"path": str(tmp_path / "solo.db")}})
    cluster = [chatd(node_cfg(redis, i + 1)) for i in range(2)]
    nodes = [standalone] + cluster
    instances = ["127.0.0.1:%d" % n.port for n in nodes]
    prom = Prometheus(tmp_path, instances).start()
    try:
        wait_until(lambda: len([s for s in prom.query('up{job="chatd"} == 1')]) == 3, scaled(20),
                   interval=0.2, what="prometheus scraping all three nodes")
        seconds = float(os.environ.get("CHATD_DASHBOARD_SECONDS", "12"))
        sent = run(chat(nodes, seconds), timeout=seconds + scaled(60))
        assert sent > 20, sent
        time.sleep(3)                     # the last scrapes and rule evaluations

        queries = dashboard_png.dashboard_queries(
            dashboard_png.DASHBOARD, rate_interval=RATE_INTERVAL, instance=".*")
        assert len(queries) >= 20, queries
        empty, nan, missing_nodes = [], [], []
        for panel, expr, legend in queries:
            result = prom.query(expr)
            if not result:
                empty.append((panel, expr))
                continue
            values = [float(s["value"][1]) for s in result]
            if not any(math.isfinite(v) for v in values):
                nan.append((panel, expr, values))
            if "{{instance}}" in legend:
                got = {s["metric"].get("instance") for s in result}
                cluster_only = "chatd_redis_" in expr or "chatd_cluster_" in expr
                want = set(instances[1:]) if cluster_only else set(instances)
                if not want <= got:
                    missing_nodes.append((panel, expr, sorted(got)))
        assert not empty, "dashboard queries without data:\n" + "\n".join(map(repr, empty))
        assert not nan, "dashboard queries with only NaN:\n" + "\n".join(map(repr, nan))
        assert not missing_nodes, "per-node queries missing nodes:\n" + "\n".join(map(repr, missing_nodes))

        # The rules: loaded, evaluated without error, recording rules with data.
        groups = prom.api("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) >= 30, [r["name"] for r in rules]
        bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        assert not bad, bad
        for r in rules:
            if r["type"] == "recording":
                assert prom.query(r["name"]), "recording rule %s has no data" % r["name"]
        active = [(a["labels"]["alertname"], a["state"]) for a in prom.api("/api/v1/alerts")["alerts"]]
        assert not active, "healthy nodes raised alerts: %r" % active

        png = os.environ.get("CHATD_DASHBOARD_PNG")
        if png:
            dashboard_png.render(prom.url, png, seconds=seconds + 15, rate_interval=RATE_INTERVAL)
    except BaseException:
        print("---- prometheus log ----\n" + prom.log_text())
        raise
    finally:
        prom.stop()
