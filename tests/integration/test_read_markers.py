"""read {room, seq}: per-user read markers through the real binary. Monotonic,
shared by the user's sessions, carried by joined, optional receipts, and kept
across a restart with storage on."""

import sqlite3

from chatd_helpers import run, scaled


async def next_of(c, *types):
    """The next frame of one of these types; presence events are skipped."""
    while True:
        m = await c.recv(scaled(5))
        if m["type"] != "presence":
            assert m["type"] in types, (types, m)
            return m


async def fill(c, room, n):
    for i in range(n):
        await c.send({"type": "send", "room": room, "id": "m%d" % i, "body": "b%d" % i})
    got = {"ack": 0, "message": 0}
    while got["ack"] < n or got["message"] < n:
        m = await c.recv(scaled(5))
        if m["type"] in got:
            got[m["type"]] += 1


async def drain_messages(c, n):
    got = 0
    while got < n:
        if (await c.recv(scaled(5)))["type"] == "message":
            got += 1


def test_marker_is_per_user_monotonic_and_shared_by_sessions(chatd):
    srv = chatd({"limits": {"sessions_per_name": 2}})

    async def go():
        a1 = await srv.client("alice")
        a2 = await srv.client("alice")
        b = await srv.client("bob")
        j = await a1.join("r")
        assert j["read"] == 0, j
        await a2.join("r")
        await b.join("r")
        await fill(b, "r", 5)
        await drain_messages(a1, 5)
        await drain_messages(a2, 5)

        await a1.send({"type": "read", "room": "r", "seq": 3, "ref": "r1"})
        assert await next_of(a1, "read") == {"type": "read", "room": "r", "seq": 3, "ref": "r1"}
        assert await next_of(a2, "read") == {"type": "read", "room": "r", "seq": 3}
        # older than the marker: nothing moves, the answer says where it is
        await a2.send({"type": "read", "room": "r", "seq": 2, "ref": "r2"})
        assert await next_of(a2, "read") == {"type": "read", "room": "r", "seq": 3, "ref": "r2"}
        await a1.ping_pong()
        # past the room's latest message: clamped to it
        await a2.send({"type": "read", "room": "r", "seq": 99})
        assert (await next_of(a2, "read"))["seq"] == 5
        assert (await next_of(a1, "read"))["seq"] == 5
        # receipts are off by default: bob learns nothing
        await b.ping_pong()
        j = await a1.join("r")
        assert j["read"] == 5
        j = await b.join("r")
        assert j["read"] == 0
        m = await __import__("asyncio").to_thread(srv.metrics)
        assert m.value("chatd_read_markers_total") == 2

        for bad, code in (({"seq": -1}, "bad_request"), ({}, "bad_request"), ({"seq": "3"}, "bad_request")):
            await b.send(dict({"type": "read", "room": "r", "ref": "x"}, **bad))
            await b.expect_error(code, ref="x")
        await b.send({"type": "read", "room": "other", "seq": 1, "ref": "y"})
        await b.expect_error("forbidden", ref="y")
        for c in (a1, a2, b):
            await c.close()

    run(go())


def test_receipts_when_configured(chatd):
    srv = chatd({"conversations": {"read_receipts": True}})

    async def go():
        a = await srv.client("alice")
        b = await srv.client("bob")
        await a.join("r")
        await b.join("r")
        await fill(b, "r", 2)
        await drain_messages(a, 2)
        await a.send({"type": "read", "room": "r", "seq": 2})
        await next_of(a, "read")
        assert await next_of(b, "receipt") == {"type": "receipt", "room": "r", "from": "alice", "seq": 2}
        await a.close()
        await b.close()

    run(go())


def test_markers_survive_a_restart(chatd, tmp_path):
    path = str(tmp_path / "chat.db")
    srv = chatd({"storage": {"path": path}})

    async def before():
        a = await srv.client("alice")
        await a.join("r")
        await a.join("s")
        await fill(a, "r", 4)
        await a.send({"type": "read", "room": "r", "seq": 4})
        await next_of(a, "read", "message")
        await a.close()

    run(before())
    assert srv.stop() == 0
    con = sqlite3.connect(path)
    assert con.execute("SELECT room, name, seq FROM markers").fetchall() == [("r", "alice", 4)]
    con.close()
    srv.stopped = False
    srv.start()

    async def after():
        a = await srv.client("alice")
        assert (await a.join("r"))["read"] == 4
        assert (await a.join("s"))["read"] == 0
        await a.close()

    run(after())


def test_markers_are_shared_by_cluster_nodes(chatd, tmp_path):
    from test_cluster import Redis, node_cfg, redis_cmd

    redis = Redis(tmp_path).start()
    try:
        lim = {"limits": {"sessions_per_name": 2}}
        n1, n2 = chatd(node_cfg(redis, 1, **lim)), chatd(node_cfg(redis, 2, **lim))

        async def go():
            a1 = await n1.client("alice")
            a2 = await n2.client("alice")
            await a1.join("r")
            await a2.join("r")
            await fill(a1, "r", 3)
            await drain_messages(a2, 3)
            await a1.send({"type": "read", "room": "r", "seq": 2})
            assert (await next_of(a1, "read"))["seq"] == 2
            assert await next_of(a2, "read") == {"type": "read", "room": "r", "seq": 2}
            assert redis_cmd(redis, "HGET", "chatd:room:r:reads", "alice") == "2"
            # monotonic across nodes too
            await a2.send({"type": "read", "room": "r", "seq": 1, "ref": "old"})
            assert await next_of(a2, "read") == {"type": "read", "room": "r", "seq": 2, "ref": "old"}
            await a1.close()
            await a2.close()

        run(go())
        # a node that loads the room afresh takes the marker from Redis
        assert n2.stop() == 0
        n2.stopped = False
        n2.start()

        async def after():
            a = await n2.client("alice")
            assert (await a.join("r"))["read"] == 2
            await a.close()

        run(after())
    finally:
        for srv in chatd.servers:
            srv.stop()
        redis.stop()
