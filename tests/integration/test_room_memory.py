"""Room memory bounded by limits.max_rooms, whatever clients do: idle rooms
are evicted least recently used first, and with an engine (SQLite storage,
a Redis cluster) an evicted room is loaded again with its history."""

import asyncio

import pytest

from chatd_helpers import SANITIZE, run, scaled
from test_cluster import REDIS, Redis, node_cfg
import os

CAP = 100
# Rooms used once each by one client, far past the cap.
ROOMS = 1500 if SANITIZE else 8000
WARMUP = 1000 if not SANITIZE else 500
BATCH = 50
FAST = {"limits": {"rate": 1000000, "burst": 1000000, "max_rooms": CAP}}


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


async def use_rooms(c, first, n):
    """Join, send one message in, and leave rooms first..first+n-1, a batch
    at a time (joins are answered first: in a cluster a join waits for Redis)."""
    for base in range(first, first + n, BATCH):
        names = ["room%d" % i for i in range(base, min(base + BATCH, first + n))]
        for r in names:
            await c.send({"type": "join", "room": r})
        joined = 0
        while joined < len(names):
            m = await c.recv(scaled(10))
            assert m["type"] in ("joined", "message"), m
            joined += m["type"] == "joined"
        for r in names:
            await c.send({"type": "send", "room": r, "id": "only", "body": "x" * 100})
            await c.send({"type": "leave", "room": r})
        acks = lefts = 0
        while acks < len(names) or lefts < len(names):
            m = await c.recv(scaled(10))
            assert m["type"] in ("ack", "left", "message"), m
            acks += m["type"] == "ack"
            lefts += m["type"] == "left"


def engine_cfg(engine, tmp_path, redis):
    if engine == "storage":
        return {"storage": {"path": str(tmp_path / "chat.db")}}
    if engine == "cluster":
        return node_cfg(redis, 1)
    return {}


@pytest.fixture
def maybe_redis(request, tmp_path):
    if "cluster" not in request.node.name:
        yield None
        return
    if not os.path.exists(REDIS):
        pytest.skip("redis-server is not installed")
    r = Redis(tmp_path).start()
    yield r
    r.stop()


@pytest.mark.parametrize("engine", ["memory", "storage", "cluster"])
def test_rooms_far_past_the_cap_keep_memory_flat_and_history(chatd, tmp_path, maybe_redis, engine):
    cfg = engine_cfg(engine, tmp_path, maybe_redis)
    for k, v in FAST.items():
        cfg.setdefault(k, {}).update(v)
    srv = chatd(cfg)

    async def go():
        a = await srv.client("alice")
        # A room with history, then left: the least recently used room.
        j = await a.join("keep")
        for i in range(1, 31):
            await a.send({"type": "send", "room": "keep", "id": "k%d" % i, "body": "keep %d" % i})
        seen = {"ack": 0, "message": 0}
        while seen["ack"] < 30 or seen["message"] < 30:
            m = await a.recv()
            seen[m["type"]] += 1
        await a.request({"type": "leave", "room": "keep"}, "left")

        await use_rooms(a, 0, WARMUP)
        before = rss_kb(srv.pid)
        await use_rooms(a, WARMUP, ROOMS - WARMUP)
        after = rss_kb(srv.pid)
        print("%s: VmRSS %d kB after %d rooms, %d kB after %d" % (engine, before, WARMUP, after, ROOMS))
        if not SANITIZE:
            # Without the cap this grew by about 1.5 KB per room (12 MB
            # here); allocator and SQLite cache noise stay well below 3 MB.
            assert after - before < 3 * 1024, (before, after)
        m = srv.metrics()
        assert m.value("chatd_rooms") <= CAP
        # (a room whose message is still on its way when it is left is
        # freed when the answer comes, if the room has no seq yet then)
        assert m.value("chatd_rooms_evicted_total") >= (ROOMS - CAP if engine != "cluster" else 1)

        # "keep" was evicted long ago: it comes back from the engine.
        b = await srv.client("bob")
        await b.send({"type": "join", "room": "keep", "since": 10, "epoch": j["epoch"]})
        got = []
        while True:
            m = await b.recv()
            got.append(m)
            if m["type"] == "joined":
                break
        if engine == "memory":
            # Memory only: the history is gone, and a new epoch says so.
            assert got[-1]["epoch"] != j["epoch"] and got[-1]["recovered"] is False, got
            assert got[-1]["seq"] == 0 and len(got) == 1
            return
        assert [x["seq"] for x in got[:-1]] == list(range(11, 31)), got
        assert got[-1]["recovered"] is True and got[-1]["seq"] == 30 and got[-1]["epoch"] == j["epoch"]
        h = await b.request({"type": "history", "room": "keep", "before": 11, "limit": 5}, "history")
        assert [(x["seq"], x["body"]) for x in h["messages"]] == [(i, "keep %d" % i) for i in range(6, 11)]
        h = await b.request({"type": "history", "room": "keep", "after": 25}, "history")
        assert [x["seq"] for x in h["messages"]] == list(range(26, 31))
        # dedup survived the eviction: a retry gets the original ack
        await b.send({"type": "send", "room": "keep", "id": "k5", "body": "keep 5"})
        # (k5 was alice's: for bob it is a new message, seq 31)
        while True:
            m = await b.recv()         # ack and message: any order in a cluster
            if m["type"] == "ack":
                assert m["seq"] == 31, m
                break
        await a.join("keep")
        await a.send({"type": "send", "room": "keep", "id": "k7", "body": "keep 7"})
        while True:
            m = await a.recv()
            if m["type"] == "ack" and m["id"] == "k7":
                assert m["seq"] == 7, m
                break

    run(go(), timeout=300)
