"""Direct messages as conversations through the real binary: the room
"@a:b" with seq, history, dedup and resume that only a and b can join;
offline delivery with storage on (and across a restart, and on two cluster
nodes); the conversations list; old clients keep getting "direct"."""

import sqlite3

from chatd_helpers import run, scaled


async def next_of(c, *types):
    while True:
        m = await c.recv(scaled(5))
        if m["type"] != "presence":
            assert m["type"] in types, (types, m)
            return m


async def dm(c, to, id_, body):
    await c.send({"type": "dm", "to": to, "id": id_, "body": body, "ref": id_})
    return await next_of(c, "ack")


def test_dm_is_a_conversation_only_its_users_can_join(server):
    async def go():
        a = await server.client("alice")
        b = await server.client("bob")
        c = await server.client("carol")
        ack = await dm(a, "bob", "d1", "hi bob")
        assert ack == {"type": "ack", "id": "d1", "room": "@alice:bob", "seq": 1, "ref": "d1"}, ack
        d = await next_of(b, "direct")          # bob has not joined: the old event
        assert (d["from"], d["body"], d["room"], d["seq"]) == ("alice", "hi bob", "@alice:bob", 1)
        j = await b.join("@alice:bob")
        assert j["seq"] == 1 and j["read"] == 0
        h = await b.request({"type": "history", "room": "@alice:bob"}, "history")
        assert [(m["from"], m["body"]) for m in h["messages"]] == [("alice", "hi bob")]
        # now a member: the message event, not a second copy as direct
        ack = await dm(a, "bob", "d2", "again")
        assert ack["seq"] == 2
        m = await next_of(b, "message")
        assert m["room"] == "@alice:bob" and m["body"] == "again"
        await b.ping_pong()
        # bob answers in the room itself
        await b.send({"type": "send", "room": "@alice:bob", "id": "r1", "body": "hello alice"})
        assert (await next_of(a, "direct"))["body"] == "hello alice"
        # a retry is de-duplicated
        ack = await dm(a, "bob", "d2", "again")
        assert ack["seq"] == 2
        for room, code in (("@alice:bob", "forbidden"), ("@bob:alice", "bad_request"),
                           ("@alice", "bad_request"), ("@a:b:c", "bad_request")):
            await c.send({"type": "join", "room": room, "ref": "x"})
            await c.expect_error(code, ref="x")
        # memory only: an offline user cannot be reached
        await a.send({"type": "dm", "to": "nobody", "id": "d3", "body": "?"})
        await a.expect_error("not_found")
        lst = await a.request({"type": "conversations"}, "conversations")
        assert lst["conversations"] == [{"room": "@alice:bob", "with": "bob", "seq": 3, "read": 0,
                                         "unread": 3}], lst
        for x in (a, b, c):
            await x.close()

    run(go())


def test_offline_dm_is_delivered_on_return_and_after_restart(chatd, tmp_path):
    path = str(tmp_path / "chat.db")
    srv = chatd({"storage": {"path": path}})

    async def before():
        a = await srv.client("alice")
        for i in range(3):
            ack = await dm(a, "bob", "d%d" % i, "while you were out %d" % i)
            assert ack["seq"] == i + 1 and ack["room"] == "@alice:bob"
        await a.close()
        b = await srv.client("bob")
        lst = await b.request({"type": "conversations"}, "conversations")
        assert lst["conversations"] == [{"room": "@alice:bob", "with": "alice", "seq": 3, "read": 0,
                                         "unread": 3}], lst
        await b.send({"type": "join", "room": "@alice:bob", "since": 0})
        got = [await b.recv(scaled(5)) for _ in range(4)]
        assert [m["type"] for m in got] == ["message"] * 3 + ["joined"]
        assert got[2]["body"] == "while you were out 2"
        await b.send({"type": "read", "room": "@alice:bob", "seq": 2})
        await next_of(b, "read")
        await b.close()

    run(before())
    assert srv.stop() == 0
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM messages WHERE room = '@alice:bob'").fetchone() == (3,)
    con.close()
    srv.stopped = False
    srv.start()

    async def after():
        b = await srv.client("bob")
        lst = await b.request({"type": "conversations"}, "conversations")
        assert lst["conversations"] == [{"room": "@alice:bob", "with": "alice", "seq": 3, "read": 2,
                                         "unread": 1}], lst
        j = await b.join("@alice:bob")
        assert j["seq"] == 3 and j["read"] == 2
        h = await b.request({"type": "history", "room": "@alice:bob"}, "history")
        assert len(h["messages"]) == 3
        await b.close()
        c = await srv.client("carol")
        lst = await c.request({"type": "conversations"}, "conversations")
        assert lst["conversations"] == []
        await c.send({"type": "history", "room": "@alice:bob", "ref": "h"})
        await c.expect_error("forbidden", ref="h")
        await c.close()

    run(after())


def test_dm_across_cluster_nodes_reaches_online_and_offline_users(chatd, tmp_path):
    from test_cluster import Redis, node_cfg

    redis = Redis(tmp_path).start()
    try:
        n1, n2 = chatd(node_cfg(redis, 1)), chatd(node_cfg(redis, 2))

        async def go():
            a = await n1.client("alice")
            b = await n2.client("bob")
            ack = await dm(a, "bob", "d1", "to the other node")
            assert ack["room"] == "@alice:bob" and ack["seq"] == 1
            d = await next_of(b, "direct")
            assert d["body"] == "to the other node" and d["seq"] == 1
            await b.close()
            ack = await dm(a, "carol", "d2", "carol is offline")   # Redis keeps it
            assert ack["room"] == "@alice:carol" and ack["seq"] == 1
            c = await n2.client("carol")
            await c.send({"type": "join", "room": "@alice:carol", "since": 0})
            m = await next_of(c, "message")
            assert m["body"] == "carol is offline" and m["from"] == "alice"
            await next_of(c, "joined")
            await a.close()
            await c.close()

        run(go())
    finally:
        for srv in chatd.servers:
            srv.stop()
        redis.stop()


def redis_array(redis, command):
    """An inline command's array-of-strings reply, read off a raw socket."""
    import socket
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as s:
        s.sendall(command.encode() + b"\r\n")
        f = s.makefile("rb")
        head = f.readline()
        assert head.startswith(b"*"), head
        out = []
        for _ in range(int(head[1:])):
            n = int(f.readline()[1:])
            out.append(f.read(n + 2)[:-2].decode())
        return out


def test_cluster_conversations_list_on_any_node_and_a_fresh_one(chatd, tmp_path):
    """The list comes from Redis: a node that never saw the messages (started
    after them) lists them with their seq and the user's marker, and so does
    a node that saw them pass without holding the room."""
    from test_cluster import Redis, node_cfg

    redis = Redis(tmp_path).start()
    try:
        n1, n2 = chatd(node_cfg(redis, 1)), chatd(node_cfg(redis, 2))

        async def before():
            b = await n2.client("bob")
            for i in range(3):
                assert (await dm(b, "alice", "b%d" % i, "while you were out %d" % i))["seq"] == i + 1
            c = await n2.client("carol")
            assert (await dm(c, "alice", "c0", "from carol"))["room"] == "@alice:carol"
            a = await n1.client("alice")          # n1 saw both pass, holds neither
            lst = await a.request({"type": "conversations"}, "conversations")
            assert lst["conversations"] == [
                {"room": "@alice:carol", "with": "carol", "seq": 1, "read": 0, "unread": 1},
                {"room": "@alice:bob", "with": "bob", "seq": 3, "read": 0, "unread": 3}], lst
            j = await a.join("@alice:bob")
            assert j["seq"] == 3
            await a.send({"type": "read", "room": "@alice:bob", "seq": 2})
            await next_of(a, "read")
            for x in (a, b, c):
                await x.close()

        run(before())
        n3 = chatd(node_cfg(redis, 3))          # started after all of it

        async def fresh():
            a = await n3.client("alice")
            # Two commands at once: both wait for the one Redis read.
            await a.send({"type": "conversations", "ref": "l1"})
            await a.send({"type": "conversations", "ref": "l2"})
            for ref in ("l1", "l2"):
                lst = await next_of(a, "conversations")
                assert lst["ref"] == ref
                assert lst["conversations"] == [      # the most recently active first
                    {"room": "@alice:carol", "with": "carol", "seq": 1, "read": 0, "unread": 1},
                    {"room": "@alice:bob", "with": "bob", "seq": 3, "read": 2, "unread": 1}], lst
            d = await n3.client("dave")
            lst = await d.request({"type": "conversations"}, "conversations")
            assert lst["conversations"] == []
            # Redis holds each user's index; the last activity orders it.
            assert redis_array(redis, "ZREVRANGE chatd:user:alice:convs 0 -1") == \
                ["@alice:carol", "@alice:bob"]
            await a.close()
            await d.close()

        run(fresh())
    finally:
        for srv in chatd.servers:
            srv.stop()
        redis.stop()
