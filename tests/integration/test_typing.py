"""typing {room}: an ephemeral signal through the real binary. Not sequenced,
not stored, rate-limited per session, and dropped before messages under
queue pressure."""

import asyncio
import sqlite3

from chatd_helpers import run, scaled


async def skip_presence(c):
    m = await c.recv(scaled(5))
    while m["type"] == "presence":
        m = await c.recv(scaled(5))
    return m


def test_typing_reaches_the_others_once_per_interval(chatd):
    srv = chatd({"conversations": {"typing_interval": 0.5, "typing_ttl": 4},
                 "limits": {"sessions_per_name": 2}})

    async def go():
        a = await srv.client("alice")
        a2 = await srv.client("alice")
        b = await srv.client("bob")
        for c in (a, a2, b):
            await c.join("r")
        for _ in range(5):
            await a.send({"type": "typing", "room": "r", "ref": "t"})
        m = await skip_presence(b)
        assert m == {"type": "typing", "room": "r", "from": "alice", "on": True, "ttl": 4000}, m
        await b.expect_silence(scaled(0.3))         # the other four: within the interval
        await asyncio.sleep(0.5)
        await a.send({"type": "typing", "room": "r"})
        await b.expect("typing", on=True)
        await a.send({"type": "typing", "room": "r", "on": False})
        await b.expect("typing", on=False, ttl=0)
        # no reply to the typist, nothing to alice's other session
        await a.send({"type": "ping", "ref": "p"})
        assert (await skip_presence(a))["type"] == "pong"
        await a2.send({"type": "ping", "ref": "p"})
        assert (await skip_presence(a2))["type"] == "pong"
        m = await asyncio.to_thread(srv.metrics)
        assert m.value("chatd_typing_total") == 3 and m.value("chatd_typing_dropped_total") == 4
        # a seq is for messages only: the next message is seq 1
        await a.send({"type": "send", "room": "r", "id": "x", "body": "hi"})
        await b.expect("message", seq=1)
        await a.recv_n(2)                            # its ack and message
        await a.send({"type": "typing", "room": "elsewhere", "ref": "nm"})
        await a.expect_error("forbidden", ref="nm")
        await a.send({"type": "typing", "room": "r", "on": "yes", "ref": "bad"})
        await a.expect_error("bad_request", ref="bad")
        for c in (a, a2, b):
            await c.close()

    run(go())


def test_typing_is_never_stored_or_replayed(chatd, tmp_path):
    path = str(tmp_path / "chat.db")
    srv = chatd({"storage": {"path": path}, "conversations": {"typing_interval": 0}})

    async def go():
        a = await srv.client("alice")
        b = await srv.client("bob")
        j = await a.join("r")
        await b.join("r")
        await a.send({"type": "send", "room": "r", "id": "1", "body": "one"})
        for _ in range(3):
            await a.send({"type": "typing", "room": "r"})
        await a.send({"type": "send", "room": "r", "id": "2", "body": "two"})
        got = [await skip_presence(b) for _ in range(5)]
        # (with storage a message goes out at the group commit, typing at once)
        types = [m["type"] for m in got]
        assert sorted(types) == ["message"] * 2 + ["typing"] * 3, got
        assert [m["body"] for m in got if m["type"] == "message"] == ["one", "two"]
        await a.close()
        c = await srv.client("carol")
        await c.send({"type": "join", "room": "r", "since": 0, "epoch": j["epoch"]})
        replay = [await c.recv(scaled(5)) for _ in range(3)]
        assert [m["type"] for m in replay] == ["message", "message", "joined"], replay
        h = await c.request({"type": "history", "room": "r"}, "history")
        assert [m["type"] for m in h["messages"]] == ["message", "message"]
        await b.close()
        await c.close()

    run(go())
    assert srv.stop() == 0
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM messages").fetchone() == (2,)
    con.close()


def test_typing_is_dropped_before_messages_under_pressure(chatd):
    """bob stops reading: once his queue is half full he gets no typing
    signals, while the messages keep queueing; carol still gets them."""
    srv = chatd({"limits": {"send_queue_messages": 40, "send_queue_bytes": 64 * 1024 * 1024,
                            "slow_consumer": "drop_oldest", "rate": 10000, "burst": 10000},
                 "server": {"socket_send_buffer": 4096},
                 "conversations": {"typing_interval": 0}})

    async def go():
        a = await srv.client("alice")
        c = await srv.client("carol")
        await a.join("r")
        await c.join("r")
        bob = srv.raw(rcvbuf=4096)
        bob.hello("bob")
        bob.join("r")
        n = 0
        while True:          # until bob's queue is more than half full
            for i in range(10):
                await a.send({"type": "send", "room": "r", "id": "f%d" % (n + i), "body": "q" * 4000})
            n += 10
            await asyncio.sleep(0.1)      # alice's and carol's queues drain; bob's does not
            m = await asyncio.to_thread(srv.metrics)
            if m.value("chatd_queue_messages") > 25:
                break
            assert n < 400, "bob's queue does not fill"
        await a.send({"type": "typing", "room": "r"})
        # carol gets it after the n messages
        seen = 0
        while True:
            m = await c.recv(scaled(10))
            if m["type"] == "message":
                seen += 1
            elif m["type"] == "typing":
                break
        assert seen == n
        m = await asyncio.to_thread(srv.metrics)
        assert m.value("chatd_typing_dropped_total") == 1
        # bob reads everything: messages, never the typing signal
        types = []
        while True:
            try:
                f = await asyncio.to_thread(bob.recv_json, scaled(2), True)
            except (AssertionError, TimeoutError, OSError):
                break
            types.append(f["type"])
        assert "typing" not in types and types.count("message") > 0, types[-5:]
        await a.close()
        await c.close()

    run(go(), timeout=120)


def test_typing_crosses_cluster_nodes_without_the_sequencer(chatd, tmp_path):
    from test_cluster import Redis, node_cfg, redis_cmd

    redis = Redis(tmp_path).start()
    try:
        n1, n2 = chatd(node_cfg(redis, 1)), chatd(node_cfg(redis, 2))

        async def go():
            a = await n1.client("alice")
            b = await n2.client("bob")
            await a.join("r")
            await b.join("r")
            await a.send({"type": "send", "room": "r", "id": "1", "body": "one"})
            assert (await skip_presence(b))["type"] == "message"
            keys = sorted(redis_cmd(redis, "KEYS", "*"))
            seq = redis_cmd(redis, "GET", "chatd:room:r:seq")
            await a.send({"type": "typing", "room": "r"})
            m = await skip_presence(b)
            assert m == {"type": "typing", "room": "r", "from": "alice", "on": True, "ttl": 5000}, m
            await b.send({"type": "typing", "room": "r", "on": False})
            m = await skip_presence(a)
            while m["type"] != "typing":
                m = await skip_presence(a)
            assert m["from"] == "bob" and m["on"] is False
            # no key written, no seq taken
            assert sorted(redis_cmd(redis, "KEYS", "*")) == keys
            assert redis_cmd(redis, "GET", "chatd:room:r:seq") == seq == "1"
            await a.close()
            await b.close()

        run(go())
    finally:
        for srv in chatd.servers:
            srv.stop()
        redis.stop()
