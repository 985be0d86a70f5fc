"""Scale-out: several real chatd nodes sharing a real redis-server on loopback."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from chatd_helpers import Client, free_port, run, scaled, wait_until

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
NODE_TTL = 1.5

pytestmark = pytest.mark.skipif(not os.path.exists(REDIS), reason="redis-server is not installed")


class Redis:
    """A private redis-server in a temp dir (no RDB snapshots)."""

    def __init__(self, tmp_path, aof=False):
        self.dir = tmp_path / "redis"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.aof = aof
        self.proc = None

    def start(self):
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


def node_cfg(redis, i, **extra):
    cfg = {"server": {"node_id": "n%d" % i},
           "storage": {"path": ""},
           "cluster": {"redis": redis.url, "node_ttl": NODE_TTL}}
    for k, v in extra.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


def start_nodes(chatd, redis, n, **extra):
    return [chatd(node_cfg(redis, i + 1, **extra)) for i in range(n)]


async def recv_until(c, pred, timeout=None):
    """Frames up to and including the first one pred accepts."""
    got = []
    while True:
        m = await c.recv(timeout)
        got.append(m)
        if pred(m):
            return got


async def alive(c):
    """The connection answers a ping (frames still in flight are skipped)."""
    await c.send({"type": "ping", "ref": "alive?"})
    await recv_until(c, lambda m: m["type"] == "pong")


def test_room_spans_nodes_one_order_for_all(chatd, redis):
    nodes = start_nodes(chatd, redis, 3)
    per_sender = 40

    async def go():
        clients = []
        for i, srv in enumerate(nodes):
            for k in range(2):
                c = await srv.client("u%d%d" % (i, k))
                await c.join("r")
                clients.append(c)
        # Let presence settle, then drop it from the streams.
        await asyncio.sleep(scaled(0.3))
        for c in clients:
            while True:
                try:
                    await c.expect_silence(0.05)
                    break
                except AssertionError:
                    pass
        senders = [clients[0], clients[2], clients[4]]       # one per node

        async def blast(c):
            for j in range(per_sender):
                await c.send({"type": "send", "room": "r", "id": "%s-%d" % (c.name, j),
                              "body": "m%d" % j})

        await asyncio.gather(*(blast(s) for s in senders))
        total = per_sender * len(senders)
        orders, acks = [], {}
        for c in clients:
            seen = []
            mine = per_sender if c in senders else 0
            while len(seen) < total or sum(1 for k in acks if k.startswith(c.name + "-")) < mine:
                m = await c.recv(scaled(10))
                if m["type"] == "message":
                    seen.append((m["seq"], m["from"], m["id"]))
                elif m["type"] == "ack":
                    acks[m["id"]] = m["seq"]
                else:
                    assert m["type"] == "presence", m
            orders.append(seen)
        for o in orders:
            assert o == orders[0]
        assert [s for s, _, _ in orders[0]] == list(range(1, total + 1))
        assert {i: s for s, _, i in orders[0]} == acks
        # Per sender, its own messages keep their order.
        for s in senders:
            mine = [i for _, f, i in orders[0] if f == s.name]
            assert mine == ["%s-%d" % (s.name, j) for j in range(per_sender)]
        for c in clients:
            await c.close()

    run(go())


def test_dedup_works_whichever_node_the_retry_reaches(chatd, redis):
    n1, n2 = start_nodes(chatd, redis, 2)

    async def go():
        watcher = await n2.client("watcher")
        await watcher.join("r")
        a1 = await n1.client("alice")
        await a1.join("r")
        await watcher.expect("presence", name="alice")
        await a1.send({"type": "send", "room": "r", "id": "once", "body": "hello"})
        acks = await recv_until(a1, lambda m: m["type"] == "ack")
        seq = acks[-1]["seq"]
        await watcher.expect("message", seq=seq)
        await a1.close()
        await watcher.expect("presence", name="alice", state="leave")
        # The retry arrives through the other node.
        a2 = await n2.client("alice")
        await a2.join("r")
        await watcher.expect("presence", name="alice", state="join")
        await a2.send({"type": "send", "room": "r", "id": "once", "body": "hello"})
        ack = await a2.expect("ack")
        assert ack["seq"] == seq
        await watcher.expect_silence(0.4)
        await a2.send({"type": "send", "room": "r", "id": "twice", "body": "new"})
        assert (await a2.expect_unordered(["ack", "message"]))["ack"]["seq"] == seq + 1
        await a2.close()
        await watcher.close()

    run(go())


def test_dm_reaches_every_session_on_any_node(chatd, redis):
    n1, n2, n3 = start_nodes(chatd, redis, 3, limits={"sessions_per_name": 2})

    async def go():
        b2 = await n2.client("bob")
        b3 = await n3.client("bob")
        a = await n1.client("alice")
        await a.send({"type": "dm", "to": "bob", "id": "d1", "body": "psst", "ref": "x"})
        assert (await a.expect("ack", ref="x"))["id"] == "d1"
        for b in (b2, b3):
            d = await b.expect("direct")
            assert (d["from"], d["id"], d["body"]) == ("alice", "d1", "psst")
        # Offline: kept in the conversation (Redis) for when they come (issue 14).
        await a.send({"type": "dm", "to": "nobody", "id": "d2", "body": "?", "ref": "y"})
        ack = await a.expect("ack", ref="y")
        assert ack["room"] == "@alice:nobody" and ack["seq"] == 1
        for c in (a, b2, b3):
            await c.close()

    run(go())


def test_presence_members_across_nodes_and_a_killed_node(chatd, redis):
    n1, n2 = start_nodes(chatd, redis, 2)

    async def go():
        a = await n1.client("alice")
        await a.join("lobby")
        b = await n2.client("bob")
        j = await b.join("lobby")
        assert sorted(j["members"]) == ["alice", "bob"]
        await a.expect("presence", name="bob", state="join")
        m = await a.request({"type": "members", "room": "lobby"}, "members")
        assert sorted(m["names"]) == ["alice", "bob"]
        # n2 dies without a goodbye: its heartbeat key expires.
        t0 = time.monotonic()
        n2.expected_rc = -signal.SIGKILL
        n2.signal(signal.SIGKILL)
        await a.expect("presence", timeout=scaled(NODE_TTL * 3 + 3), name="bob", state="leave")
        assert time.monotonic() - t0 <= scaled(NODE_TTL * 3 + 3)
        m = await a.request({"type": "members", "room": "lobby"}, "members")
        assert m["names"] == ["alice"]
        # bob is gone: the dm waits in the conversation for his return.
        await a.send({"type": "dm", "to": "bob", "id": "d", "body": "?", "ref": "q"})
        assert (await a.expect("ack", ref="q"))["room"] == "@alice:bob"
        await a.close()

    run(go())
    n2.wait_exit(scaled(5))
    assert n1.metrics().value("chatd_cluster_node_losses_total") == 1


def test_history_and_resume_on_another_node(chatd, redis):
    n1, n2 = start_nodes(chatd, redis, 2)

    async def go():
        a = await n1.client("alice")
        j = await a.join("r")
        for i in range(10):
            await a.send({"type": "send", "room": "r", "id": "h%d" % i, "body": "b%d" % i})
        await recv_until(a, lambda m: m["type"] == "ack" and m["id"] == "h9")
        b = await n2.client("bob")
        await b.send({"type": "join", "room": "r", "since": 6, "epoch": j["epoch"]})
        frames = await recv_until(b, lambda m: m["type"] == "joined")
        assert [m["seq"] for m in frames[:-1]] == [7, 8, 9, 10]
        assert frames[-1]["recovered"] is True and frames[-1]["seq"] == 10
        h = await b.request({"type": "history", "room": "r", "before": 4}, "history")
        assert [m["id"] for m in h["messages"]] == ["h0", "h1", "h2"]
        await a.close()
        await b.close()

    run(go())


def test_redis_restart_mid_traffic(chatd, tmp_path):
    redis = Redis(tmp_path, aof=True).start()
    try:
        n1, n2 = start_nodes(chatd, redis, 2)

        async def go():
            a = await n1.client("alice")
            await a.join("r")
            b = await n2.client("bob")
            await b.join("r")
            acked, failed, i = {}, [], 0

            async def send_some(k):
                nonlocal i
                for _ in range(k):
                    await a.send({"type": "send", "room": "r", "id": "s%d" % i, "body": "x", "ref": "s%d" % i})
                    i += 1

            async def settle():
                # every outstanding send answered with ack or unavailable
                while len(acked) + len(failed) < i:
                    m = await a.recv(scaled(10))
                    if m["type"] == "ack":
                        acked[m["id"]] = m["seq"]
                    elif m["type"] == "error":
                        assert m["code"] == "unavailable", m
                        failed.append(m["ref"])

            await send_some(20)
            await settle()
            await asyncio.to_thread(redis.stop)
            await asyncio.to_thread(wait_until, lambda: n1.http("/healthz")[0] == 503, scaled(5),
                                    what="healthz degraded")
            assert b'"degraded"' in n1.http("/healthz")[2]
            await send_some(5)
            await settle()
            assert len(failed) == 5           # no ack for what Redis never stored
            await alive(b)                    # sessions stay connected
            await asyncio.to_thread(redis.start)
            await asyncio.to_thread(wait_until, lambda: n1.http("/healthz")[0] == 200, scaled(10),
                                    what="healthz back to ok")
            await asyncio.to_thread(wait_until, lambda: n2.http("/healthz")[0] == 200, scaled(10),
                                    what="n2 back")
            await send_some(10)
            await settle()
            assert len(acked) == 30
            # Every acked message is in history, gap-free, on both nodes.
            # Delivery to bob's node is asynchronous: wait for the last one.
            await recv_until(b, lambda m: m["type"] == "message" and m["seq"] == 30)
            await b.send({"type": "history", "room": "r", "limit": 500, "ref": "h"})
            hist = (await recv_until(b, lambda m: m["type"] == "history"))[-1]["messages"]
            assert [m["seq"] for m in hist] == list(range(1, 31))
            assert {m["id"]: m["seq"] for m in hist} == acked
            for c in (a, b):
                await c.close()

        run(go())
        m = n1.metrics()
        assert m.value("chatd_redis_up") == 1
        assert m.value("chatd_redis_reconnects_total") >= 1
    finally:
        redis.stop()


def test_redis_down_at_start_then_up(chatd, tmp_path):
    redis = Redis(tmp_path)          # not started yet
    try:
        srv = chatd(node_cfg(redis, 1), start=False)
        srv.start(healthy=False)
        status, _, body = srv.http("/healthz")
        assert status == 503 and b'"degraded"' in body

        async def down():
            c = await srv.client("alice")
            await c.send({"type": "join", "room": "r", "ref": "j"})
            await c.expect_error("unavailable", ref="j")
            await c.close()

        run(down())
        assert "cannot connect to Redis" in srv.log_text()
        redis.start()
        wait_until(lambda: srv.http("/healthz")[0] == 200, scaled(10), what="healthz ok")

        async def up():
            c = await srv.client("alice")
            await c.join("r")
            await c.send({"type": "send", "room": "r", "id": "1", "body": "now"})
            assert (await c.expect_unordered(["ack", "message"]))["ack"]["seq"] == 1
            await c.close()

        run(up())
    finally:
        redis.stop()


def redis_cmd(redis, *args):
    """One command to the test's redis-server over RESP; the reply, decoded
    enough for these tests (status, error, integer, bulk, array)."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as s:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        f = s.makefile("rb")

        def read():
            line = f.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:]
            if kind in (b"+", b"-"):
                return rest.decode()
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2].decode()
            if kind == b"*":
                return [read() for _ in range(int(rest))]
            raise AssertionError("bad RESP reply %r" % line)
        return read()


def drop_subscription_and_wait_up(srv, redis):
    """Kill the node's pub/sub connection: it reconnects and re-reads every
    loaded room (a resync)."""
    before = srv.metrics().value("chatd_redis_resyncs_total")
    assert redis_cmd(redis, "CLIENT", "KILL", "TYPE", "pubsub") >= 1
    wait_until(lambda: srv.metrics().value("chatd_redis_resyncs_total") > before,
               scaled(10), what="the resync after the reconnect")


def test_room_freed_during_its_resync_loads_when_used_again(chatd, redis):
    """Defect 1: a resync in flight, the room freed (its last member left),
    then joined again: the join must be answered once Redis answers, not
    parked until a restart."""
    srv = chatd(node_cfg(redis, 1))

    async def go():
        a = await srv.client("alice")
        await a.join("quiet")              # no message: freed when empty
        # Redis holds back every script (the resync's LOAD among them).
        assert redis_cmd(redis, "CLIENT", "PAUSE", int(scaled(3) * 1000), "WRITE") == "OK"
        await asyncio.to_thread(drop_subscription_and_wait_up, srv, redis)
        await a.request({"type": "leave", "room": "quiet"}, "left")
        await a.send({"type": "join", "room": "quiet", "ref": "again"})
        j = await a.expect("joined", scaled(10))
        assert j["ref"] == "again" and j["seq"] == 0
        await a.send({"type": "send", "room": "quiet", "id": "m1", "body": "hi"})
        seen = set()
        got = await recv_until(a, lambda m: seen.add(m["type"]) or {"ack", "message"} <= seen)
        assert [m["seq"] for m in got if m["type"] == "message"] == [1], got
        await a.close()

    run(go())


def test_out_of_range_seqs_from_redis_do_not_wedge_a_room(chatd, redis):
    """Defect 7: a stream entry with seq 0, past the room's seq, or out of
    range is refused, and the room keeps delivering."""
    srv = chatd(node_cfg(redis, 1))

    async def go():
        a = await srv.client("alice")
        j = await a.join("r")
        await a.send({"type": "send", "room": "r", "id": "m1", "body": "one"})
        seen = set()
        await recv_until(a, lambda m: seen.add(m["type"]) or {"ack", "message"} <= seen)
        ep = j["epoch"]
        for seq in ("0", "-3", "1000", "1e18", "1e300", "2.5"):
            redis_cmd(redis, "RPUSH", "chatd:room:r:hist",
                      '{"t":"m","room":"r","seq":%s,"from":"eve","id":"x%s","body":"bad","ts":1,"epoch":"%s"}'
                      % (seq, seq, ep))
            redis_cmd(redis, "PUBLISH", "chatd:events",
                      '{"t":"m","room":"r","seq":%s,"from":"eve","id":"y%s","body":"bad","ts":1e300,"epoch":"%s"}'
                      % (seq, seq, ep))
        await asyncio.to_thread(drop_subscription_and_wait_up, srv, redis)
        await a.send({"type": "send", "room": "r", "id": "m2", "body": "two"})
        # The ack and the message come on two Redis connections: any order.
        seen = set()
        got = await recv_until(a, lambda m: seen.add((m["type"], m.get("id"))) or
                               {("ack", "m2"), ("message", "m2")} <= seen)
        assert [m["seq"] for m in got if m["type"] == "message"][-1] == 2, got
        assert not [m for m in got if m["type"] == "reset" or m.get("from") == "eve"], got
        h = await a.request({"type": "history", "room": "r"}, "history")
        assert [(m["seq"], m["id"]) for m in h["messages"]] == [(1, "m1"), (2, "m2")]
        await a.close()

    run(go())


def test_many_sends_in_flight_complete_promptly(chatd, redis):
    """40,000 sends in flight while Redis is paused: once it resumes, every
    ack comes within seconds. Each message in flight is looked up by its
    sender and id on every send and on its completion; with a list walk
    (as once) this took 28 s and a loaded node never caught up."""
    n = 40000
    srv = chatd(node_cfg(redis, 1, limits={"rate": 10000000, "burst": 10000000,
                                           "send_queue_messages": 1000000,
                                           "send_queue_bytes": 1 << 30}))

    async def main():
        a = await srv.client("alice")
        await a.join("r")
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            for i in range(n):
                await a.send({"type": "send", "room": "r", "id": "m%d" % i, "body": "x"})
            await alive(a)          # every send was read by the node
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        t0 = time.monotonic()
        acks = set()
        while len(acks) < n:
            m = await a.recv(scaled(30))
            assert m["type"] != "error", m
            if m["type"] == "ack":
                acks.add(m["seq"])
        took = time.monotonic() - t0
        assert acks == set(range(1, n + 1))
        assert took < scaled(10), "acks took %.1f s" % took
        await a.close()

    run(main(), timeout=scaled(120))
