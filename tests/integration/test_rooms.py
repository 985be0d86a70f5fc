"""Rooms: join / leave / presence, send / ack / message, dedup, dm, history, members, recovery."""

import asyncio
import time

import pytest

from chatd_helpers import run, scaled


async def send_msg(c, room, mid, body, **extra):
    """Send and return (ack, own message event); the two may come in either order."""
    await c.send(dict({"type": "send", "room": room, "id": mid, "body": body}, **extra))
    got = await c.expect_unordered(["ack", "message"])
    ack, msg = got["ack"], got["message"]
    assert ack["id"] == mid and ack["room"] == room, ack
    assert msg["id"] == mid and msg["seq"] == ack["seq"], (ack, msg)
    return ack, msg


def check_message(m, room, seq, frm, mid, body):
    assert m["type"] == "message", m
    assert m["room"] == room and m["seq"] == seq and m["from"] == frm, m
    assert m["id"] == mid and m["body"] == body, m
    assert isinstance(m["ts"], int) and not isinstance(m["ts"], bool), m
    now = time.time() * 1000
    assert abs(m["ts"] - now) < 60_000, "ts %r is not server ms since the epoch (now %d)" % (m["ts"], now)


# ---------------------------------------------------------------------------
# join / leave / presence


def test_join_joined_members_and_presence(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        c = await server.client("carol")
        try:
            j = await a.join("lobby")
            assert j["seq"] == 0, j
            assert isinstance(j["epoch"], str) and j["epoch"], j
            assert j["members"] == ["alice"], j
            assert j.get("recovered") in (None, True, False)

            j = await b.join("lobby")
            assert sorted(j["members"]) == ["alice", "bob"], j
            p = await a.expect("presence")
            assert p == {"type": "presence", "room": "lobby", "name": "bob", "state": "join"}, p

            j = await c.join("lobby")
            assert sorted(j["members"]) == ["alice", "bob", "carol"], j
            for x in (a, b):
                await x.expect("presence", room="lobby", name="carol", state="join")
            # the joiner itself gets no presence about itself
            await c.ping_pong()
            # one epoch per room
            ja = await a.request({"type": "join", "room": "lobby"}, "joined")
            assert ja["epoch"] == j["epoch"]
        finally:
            for x in (a, b, c):
                await x.close()

    run(main())


def test_presence_only_to_members_of_that_room(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("one")
            await b.join("two")
            await a.ping_pong()       # nothing about bob joining "two"
            await b.join("one")
            await a.expect("presence", room="one", name="bob", state="join")
        finally:
            await a.close()
            await b.close()

    run(main())


def test_join_again_gives_joined_and_no_presence(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("r")
            await b.join("r")
            await a.expect("presence", name="bob", state="join")
            j = await b.join("r")
            assert sorted(j["members"]) == ["alice", "bob"]
            await b.send({"type": "send", "room": "r", "id": "1", "body": "after rejoin"})
            # the very next frame alice sees is the message, no second presence
            m = await a.expect("message")
            assert m["id"] == "1"
        finally:
            await a.close()
            await b.close()

    run(main())


def test_leave_left_and_presence_leave(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("r")
            await b.join("r")
            await a.expect("presence", name="bob", state="join")
            await b.send({"type": "leave", "room": "r", "ref": "l"})
            assert await b.expect("left", ref="l") == {"type": "left", "room": "r", "ref": "l"}
            p = await a.expect("presence")
            assert p == {"type": "presence", "room": "r", "name": "bob", "state": "leave"}, p
            mem = await a.request({"type": "members", "room": "r"}, "members")
            assert mem["names"] == ["alice"], mem
            # no longer a member
            await b.send({"type": "send", "room": "r", "id": "x", "body": "x"})
            await b.expect_error("forbidden")
            await b.send({"type": "members", "room": "r"})
            await b.expect_error("forbidden")
            # leaving again: not a member
            await b.send({"type": "leave", "room": "r", "ref": "again"})
            await b.expect_error("not_found", ref="again")
            await b.send({"type": "leave", "room": "never", "ref": "n"})
            await b.expect_error("not_found", ref="n")
            # and alice is not told about any of that
            await a.ping_pong()
        finally:
            await a.close()
            await b.close()

    run(main())


def test_presence_leave_on_disconnect(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("r1")
            await a.join("r2")
            await b.join("r1")
            await b.join("r2")
            await a.expect("presence", room="r1", name="bob", state="join")
            await a.expect("presence", room="r2", name="bob", state="join")
            await b.close()
            got = [await a.expect("presence", name="bob", state="leave") for _ in range(2)]
            assert sorted(p["room"] for p in got) == ["r1", "r2"], got
            mem = await a.request({"type": "members", "room": "r1"}, "members")
            assert mem["names"] == ["alice"]
        finally:
            await a.close()

    run(main())


def test_presence_leave_on_abrupt_tcp_close(server):
    async def main():
        a = await server.client("alice")
        try:
            await a.join("r")
            r = server.raw()
            r.hello("rawbob")
            r.join("r")
            await a.expect("presence", name="rawbob", state="join")
            r.close()            # no close frame, just FIN
            await a.expect("presence", name="rawbob", state="leave")
        finally:
            await a.close()

    run(main())


def test_members(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        c = await server.client("carol")
        try:
            await a.join("r")
            await b.join("r")
            await c.join("other")
            await a.expect("presence")
            mem = await a.request({"type": "members", "room": "r", "ref": "m"}, "members")
            assert mem["room"] == "r" and mem["ref"] == "m"
            assert sorted(mem["names"]) == ["alice", "bob"], mem
            # not a member -> forbidden (also for a room that does not exist)
            await c.send({"type": "members", "room": "r", "ref": "f"})
            await c.expect_error("forbidden", ref="f")
            await c.send({"type": "members", "room": "nosuchroom"})
            m = await c.expect("error")
            assert m["code"] in ("forbidden", "not_found"), m
        finally:
            for x in (a, b, c):
                await x.close()

    run(main())


# ---------------------------------------------------------------------------
# send / ack / message


def test_send_ack_and_message_to_every_member_including_sender(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        c = await server.client("carol")
        outsider = await server.client("dave")
        try:
            await a.join("r")
            await b.join("r")
            await c.join("r")
            await a.expect("presence", name="bob")
            await a.expect("presence", name="carol")
            await b.expect("presence", name="carol")

            await a.send({"type": "send", "room": "r", "id": "m1", "body": "hello", "ref": "s"})
            got = await a.expect_unordered(["ack", "message"])
            assert got["ack"] == {"type": "ack", "id": "m1", "room": "r", "seq": 1, "ref": "s"}, got
            check_message(got["message"], "r", 1, "alice", "m1", "hello")
            for x in (b, c):
                m = await x.expect("message")
                check_message(m, "r", 1, "alice", "m1", "hello")
                assert m["ts"] == got["message"]["ts"], "one ts per message"
            await outsider.ping_pong()   # not a member: nothing
        finally:
            for x in (a, b, c, outsider):
                await x.close()

    run(main())


def test_seq_starts_at_1_gap_free_and_per_room(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("r1")
            await a.join("r2")
            await b.join("r1")
            await a.expect("presence")
            for i in range(1, 21):
                room = "r1" if i % 2 else "r2"
                ack, _ = await send_msg(a, room, "m%d" % i, "body %d" % i)
                assert ack["seq"] == (i + 1) // 2, ack
            got = [await b.expect("message") for _ in range(10)]
            assert [m["seq"] for m in got] == list(range(1, 11))
            assert [m["id"] for m in got] == ["m%d" % i for i in range(1, 21, 2)]
            # latest seq reported on join
            c = await server.client("carol")
            j = await c.join("r1")
            assert j["seq"] == 10
            j = await c.join("r2")
            assert j["seq"] == 10
            await c.close()
        finally:
            await a.close()
            await b.close()

    run(main())


def test_seq_interleaved_senders(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("r")
            await b.join("r")
            await a.expect("presence")
            expect_seq = 1
            for i in range(10):
                sender, other = (a, b) if i % 2 == 0 else (b, a)
                ack, _ = await send_msg(sender, "r", "i%d" % i, "x")
                assert ack["seq"] == expect_seq
                await other.expect("message", seq=expect_seq, id="i%d" % i)
                expect_seq += 1
        finally:
            await a.close()
            await b.close()

    run(main())


def test_send_when_not_member_is_forbidden(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await b.join("r")
            await a.send({"type": "send", "room": "r", "id": "x", "body": "hi", "ref": "f"})
            await a.expect_error("forbidden", ref="f")
            await a.send({"type": "send", "room": "doesnotexist", "id": "x", "body": "hi"})
            await a.expect_error("forbidden")
            await b.ping_pong()          # nothing broadcast
            # and the rejected send consumed no seq
            await b.send({"type": "send", "room": "r", "id": "y", "body": "first"})
            got = await b.expect_unordered(["ack", "message"])
            assert got["ack"]["seq"] == 1
        finally:
            await a.close()
            await b.close()

    run(main())


def test_dedup_same_id_same_ack_no_second_broadcast(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("r")
            await b.join("r")
            await a.expect("presence")
            ack1, _ = await send_msg(a, "r", "dup", "one")
            await b.expect("message", seq=1, id="dup")
            # same id again (even with another body): same ack, nothing broadcast
            await a.send({"type": "send", "room": "r", "id": "dup", "body": "two", "ref": "again"})
            ack2 = await a.expect("ack")
            assert ack2["seq"] == ack1["seq"] == 1 and ack2["id"] == "dup" and ack2["room"] == "r", ack2
            assert ack2.get("ref") == "again"
            await send_msg(a, "r", "next", "three")
            m = await b.expect("message")
            assert m["id"] == "next" and m["seq"] == 2, "duplicate was broadcast or consumed a seq: %r" % m
            h = await a.request({"type": "history", "room": "r"}, "history")
            assert [(x["seq"], x["id"], x["body"]) for x in h["messages"]] == [(1, "dup", "one"), (2, "next", "three")]
        finally:
            await a.close()
            await b.close()

    run(main())


def test_dedup_is_per_sender_and_per_room(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("r")
            await a.join("s")
            await b.join("r")
            await a.expect("presence")
            ack, _ = await send_msg(a, "r", "x", "alice's")
            assert ack["seq"] == 1
            await b.expect("message", seq=1)
            ack, _ = await send_msg(b, "r", "x", "bob's")     # same id, other sender
            assert ack["seq"] == 2
            await a.expect("message", seq=2, **{"from": "bob"})
            ack, _ = await send_msg(a, "s", "x", "other room")  # same id, other room
            assert ack["seq"] == 1 and ack["room"] == "s"
        finally:
            await a.close()
            await b.close()

    run(main())


def test_dedup_after_reconnect_with_same_name(server):
    async def main():
        b = await server.client("bob")
        a = await server.client("alice")
        try:
            await b.join("r")
            await a.join("r")
            await b.expect("presence", name="alice", state="join")
            ack1, _ = await send_msg(a, "r", "once", "body")
            await b.expect("message", id="once", seq=1)
            await a.close()
            await b.expect("presence", name="alice", state="leave")

            a2 = await server.client()
            deadline = time.monotonic() + scaled(3)
            while True:       # the old session may take a moment to be unregistered
                await a2.send({"type": "hello", "name": "alice"})
                w = await a2.recv()
                if w["type"] == "welcome":
                    break
                assert w.get("code") == "conflict" and time.monotonic() < deadline, w
                await asyncio.sleep(0.05)
            await a2.join("r")
            await b.expect("presence", name="alice", state="join")
            await a2.send({"type": "send", "room": "r", "id": "once", "body": "body", "ref": "retry"})
            ack2 = await a2.expect("ack", ref="retry")
            assert ack2["seq"] == ack1["seq"] and ack2["id"] == "once", (ack1, ack2)
            await a2.ping_pong()        # no message event for the duplicate
            await send_msg(a2, "r", "new", "b")
            await b.expect("message", id="new", seq=2)
            await a2.close()
        finally:
            await a.close()
            await b.close()

    run(main())


def test_dedup_window(chatd):
    srv = chatd({"history": {"dedup_window": 3, "messages_per_room": 100}})

    async def main():
        a = await srv.client("alice")
        try:
            await a.join("r")
            for i in range(1, 6):
                await send_msg(a, "r", "m%d" % i, "x")
            # m5 is within the last 3: deduplicated
            await a.send({"type": "send", "room": "r", "id": "m5", "body": "x"})
            ack = await a.expect("ack")
            assert ack["seq"] == 5
            # m1 fell out of the window: accepted as new
            ack, _ = await send_msg(a, "r", "m1", "x")
            assert ack["seq"] == 6
        finally:
            await a.close()

    run(main())


# ---------------------------------------------------------------------------
# dm


def test_dm_ack_and_direct(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        c = await server.client("carol")
        try:
            await a.send({"type": "dm", "to": "bob", "id": "d1", "body": "psst", "ref": "r"})
            ack = await a.expect("ack")
            # The dm is message 1 of the conversation @alice:bob (issue 14).
            assert ack == {"type": "ack", "id": "d1", "ref": "r", "room": "@alice:bob", "seq": 1}, ack
            d = await b.expect("direct")
            assert d["from"] == "alice" and d["id"] == "d1" and d["body"] == "psst", d
            assert isinstance(d["ts"], int) and abs(d["ts"] - time.time() * 1000) < 60_000, d
            await a.ping_pong()   # the sender gets no copy
            await c.ping_pong()   # nobody else does
            # no room membership needed
            await b.send({"type": "dm", "to": "alice", "id": "d2", "body": "back"})
            await b.expect("ack", id="d2")
            await a.expect("direct", id="d2", body="back", **{"from": "bob"})
        finally:
            for x in (a, b, c):
                await x.close()

    run(main())


def test_dm_every_session_of_target(chatd):
    srv = chatd({"limits": {"sessions_per_name": 2}})

    async def main():
        a = await srv.client("alice")
        b1 = await srv.client("bob")
        b2 = await srv.client("bob")
        try:
            await a.send({"type": "dm", "to": "bob", "id": "d", "body": "both"})
            await a.expect("ack", id="d")
            for b in (b1, b2):
                await b.expect("direct", id="d", body="both", **{"from": "alice"})
        finally:
            for x in (a, b1, b2):
                await x.close()

    run(main())


def test_dm_offline_is_not_found(server):
    async def main():
        a = await server.client("alice")
        try:
            await a.send({"type": "dm", "to": "ghost", "id": "d", "body": "x", "ref": "nf"})
            await a.expect_error("not_found", ref="nf")
            b = await server.client("bob")
            await b.close()
            deadline = time.monotonic() + scaled(3)
            while True:
                await a.send({"type": "dm", "to": "bob", "id": "d2", "body": "x"})
                m = await a.recv()
                if m["type"] == "error":
                    assert m["code"] == "not_found", m
                    break
                assert m["type"] == "ack" and time.monotonic() < deadline, m
                await asyncio.sleep(0.05)
        finally:
            await a.close()

    run(main())


def test_dm_to_invalid_name_is_error(server):
    async def main():
        a = await server.client("alice")
        try:
            await a.send({"type": "dm", "to": "not a name", "id": "d", "body": "x"})
            m = await a.expect("error")
            assert m["code"] in ("bad_request", "not_found"), m
            await a.ping_pong()
        finally:
            await a.close()

    run(main())


# ---------------------------------------------------------------------------
# history


async def fill(c, room, n, start=1, batch=50):
    """Send n messages m<start>.. from c (a member), pipelined in batches."""
    for lo in range(start, start + n, batch):
        hi = min(lo + batch, start + n)
        for i in range(lo, hi):
            await c.send({"type": "send", "room": room, "id": "m%d" % i, "body": "b%d" % i})
        frames = await c.recv_n(2 * (hi - lo))
        acks = [f for f in frames if f["type"] == "ack"]
        assert len(acks) == hi - lo and all(f["type"] in ("ack", "message") for f in frames), frames
        assert [f["seq"] for f in acks] == list(range(lo, hi)), acks


def seqs(h):
    return [m["seq"] for m in h["messages"]]


def test_history_basic(server):
    async def main():
        a = await server.client("alice")
        try:
            await a.join("r")
            h = await a.request({"type": "history", "room": "r", "ref": "h0"}, "history")
            assert h == {"type": "history", "room": "r", "messages": [], "ref": "h0"}, h
            events = []
            for i in range(1, 6):
                _, m = await send_msg(a, "r", "m%d" % i, "body %d" % i)
                events.append(m)
            h = await a.request({"type": "history", "room": "r"}, "history")
            assert h["room"] == "r"
            assert h["messages"] == events, "history elements must equal the message events"
        finally:
            await a.close()

    run(main())


def test_history_limits_and_bounds(chatd):
    srv = chatd({"history": {"messages_per_room": 1000}})

    async def main():
        a = await srv.client("alice")
        try:
            await a.join("r")
            await fill(a, "r", 600)

            async def hist(**kw):
                return await a.request(dict({"type": "history", "room": "r"}, **kw), "history")

            h = await hist()
            assert seqs(h) == list(range(551, 601)), "default: the newest 50, oldest first"
            assert h["messages"][0]["id"] == "m551" and h["messages"][0]["body"] == "b551"
            h = await hist(limit=10)
            assert seqs(h) == list(range(591, 601))
            h = await hist(limit=500)
            assert seqs(h) == list(range(101, 601))
            h = await hist(limit=10000)
            assert seqs(h) == list(range(101, 601)), "limit is capped at 500"
            h = await hist(before=10, limit=3)
            assert seqs(h) == [7, 8, 9]
            h = await hist(before=3, limit=10)
            assert seqs(h) == [1, 2]
            h = await hist(before=1)
            assert seqs(h) == []
            h = await hist(before=100)
            assert seqs(h) == list(range(50, 100))
            h = await hist(after=10, limit=3)
            assert seqs(h) == [11, 12, 13]
            h = await hist(after=0, limit=2)
            assert seqs(h) == [1, 2]
            h = await hist(after=595)
            assert seqs(h) == [596, 597, 598, 599, 600]
            h = await hist(after=600)
            assert seqs(h) == []
            h = await hist(after=0, limit=1000)
            assert seqs(h) == list(range(1, 501))
        finally:
            await a.close()

    run(main())


def test_history_ring_keeps_the_newest(chatd):
    srv = chatd({"history": {"messages_per_room": 10}})

    async def main():
        a = await srv.client("alice")
        try:
            await a.join("r")
            await fill(a, "r", 25)
            h = await a.request({"type": "history", "room": "r"}, "history")
            assert seqs(h) == list(range(16, 26))
            h = await a.request({"type": "history", "room": "r", "after": 0, "limit": 3}, "history")
            assert seqs(h) == [16, 17, 18]
            h = await a.request({"type": "history", "room": "r", "before": 12}, "history")
            assert seqs(h) == []
        finally:
            await a.close()

    run(main())


def test_history_requires_membership(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("r")
            await send_msg(a, "r", "1", "secret")
            await b.send({"type": "history", "room": "r", "ref": "h"})
            await b.expect_error("forbidden", ref="h")
        finally:
            await a.close()
            await b.close()

    run(main())


def test_history_visible_to_late_joiner(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("r")
            for i in range(3):
                await send_msg(a, "r", "m%d" % i, "b%d" % i)
            j = await b.join("r")
            assert j["seq"] == 3
            h = await b.request({"type": "history", "room": "r"}, "history")
            assert [(m["seq"], m["from"], m["id"], m["body"]) for m in h["messages"]] == [
                (1, "alice", "m0", "b0"), (2, "alice", "m1", "b1"), (3, "alice", "m2", "b2")]
        finally:
            await a.close()
            await b.close()

    run(main())


# ---------------------------------------------------------------------------
# join with since


def test_join_since_replays_in_order_then_recovered(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("r")
            j0 = await b.join("r")
            await a.expect("presence")
            await send_msg(a, "r", "m1", "one")
            m1 = await b.expect("message", seq=1)
            epoch = j0["epoch"]
            await b.close()
            await a.expect("presence", name="bob", state="leave")
            sent = []
            for i in range(2, 6):
                _, m = await send_msg(a, "r", "m%d" % i, "n%d" % i)
                sent.append(m)

            b2 = await server.client("bob2")
            await b2.send({"type": "join", "room": "r", "since": 1, "epoch": epoch, "ref": "rj"})
            replay = [await b2.expect("message") for _ in range(4)]
            assert replay == sent, "replay must be the messages seq > since, oldest first"
            j = await b2.expect("joined", ref="rj")
            assert j["seq"] == 5 and j["epoch"] == epoch and j["recovered"] is True, j
            assert "truncated" not in j or j["truncated"] is False
            assert sorted(j["members"]) == ["alice", "bob2"]
            await a.expect("presence", name="bob2", state="join")

            # since == latest: nothing to replay, recovered
            b3 = await server.client("bob3")
            await b3.send({"type": "join", "room": "r", "since": 5, "epoch": epoch})
            j = await b3.expect("joined")
            assert j["recovered"] is True and j["seq"] == 5, j
            # since 0 replays everything held
            b4 = await server.client("bob4")
            await b4.send({"type": "join", "room": "r", "since": 0, "epoch": epoch})
            replay = [await b4.expect("message") for _ in range(5)]
            assert [m["seq"] for m in replay] == [1, 2, 3, 4, 5]
            assert replay[0] == m1
            j = await b4.expect("joined")
            assert j["recovered"] is True, j
            for x in (b2, b3, b4):
                await x.close()
        finally:
            await a.close()

    run(main())


def test_join_since_when_already_member_replays(server):
    """A client whose connection survived but missed nothing still gets a clean answer."""
    async def main():
        a = await server.client("alice")
        try:
            j = await a.join("r")
            await send_msg(a, "r", "m1", "x")
            await send_msg(a, "r", "m2", "y")
            await a.send({"type": "join", "room": "r", "since": 1, "epoch": j["epoch"]})
            await a.expect("message", seq=2, id="m2")
            await a.expect("joined", seq=2, recovered=True)
        finally:
            await a.close()

    run(main())


def test_join_since_gap_partly_lost_is_not_recovered(chatd):
    srv = chatd({"history": {"messages_per_room": 5}})

    async def main():
        a = await srv.client("alice")
        b = await srv.client("bob")
        try:
            j = await a.join("r")
            await fill(a, "r", 12)
            await b.send({"type": "join", "room": "r", "since": 2, "epoch": j["epoch"]})
            replay = [await b.expect("message") for _ in range(5)]
            assert [m["seq"] for m in replay] == [8, 9, 10, 11, 12]
            j2 = await b.expect("joined")
            assert j2["recovered"] is False and j2["seq"] == 12, j2
            # the gap is exactly what the ring holds: recovered
            c = await srv.client("carol")
            await c.send({"type": "join", "room": "r", "since": 7, "epoch": j["epoch"]})
            replay = [await c.expect("message") for _ in range(5)]
            assert [m["seq"] for m in replay] == [8, 9, 10, 11, 12]
            assert (await c.expect("joined"))["recovered"] is True
            await c.close()
        finally:
            await a.close()
            await b.close()

    run(main())


def test_join_since_wrong_epoch_replays_nothing(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            j = await a.join("r")
            for i in range(3):
                await send_msg(a, "r", "m%d" % i, "x")
            wrong = j["epoch"] + "-not"
            await b.send({"type": "join", "room": "r", "since": 1, "epoch": wrong})
            j2 = await b.expect("joined")      # no message frames before it
            assert j2["recovered"] is False and j2["epoch"] == j["epoch"] and j2["seq"] == 3, j2
        finally:
            await a.close()
            await b.close()

    run(main())


def test_join_since_without_epoch(server):
    """since without epoch: the contract asks for the epoch; either it is a
    bad_request or it is treated as unverifiable (recovered false)."""
    async def main():
        a = await server.client("alice")
        try:
            await a.join("r")
            await send_msg(a, "r", "m1", "x")
            b = await server.client("bob")
            await b.send({"type": "join", "room": "r", "since": 0})
            m = await b.recv()
            if m["type"] == "error":
                assert m["code"] == "bad_request"
            else:
                while m["type"] == "message":
                    m = await b.recv()
                assert m["type"] == "joined", m
            await b.close()
        finally:
            await a.close()

    run(main())


def test_epoch_changes_across_restart(chatd):
    s1 = chatd()

    async def get_epoch(srv):
        a = await srv.client("alice")
        j = await a.join("r")
        await send_msg(a, "r", "m1", "x")
        await a.close()
        return j["epoch"]

    e1 = run(get_epoch(s1))
    assert s1.stop() == 0
    s2 = chatd()
    e2 = run(get_epoch(s2))
    assert e1 != e2, "a restart without storage loses the history, so the epoch must change"

    async def rejoin():
        b = await s2.client("bob")
        await b.send({"type": "join", "room": "r", "since": 1, "epoch": e1})
        j = await b.expect("joined")
        assert j["recovered"] is False
        await b.close()

    run(rejoin())


def test_join_since_replay_bigger_than_queue_is_truncated(chatd):
    srv = chatd({"limits": {"send_queue_messages": 20, "slow_consumer": "close"},
                 "history": {"messages_per_room": 200}})

    async def main():
        a = await srv.client("alice")
        try:
            j = await a.join("r")
            await fill(a, "r", 100, batch=8)
            b = await srv.client("bob")
            await b.send({"type": "join", "room": "r", "since": 0, "epoch": j["epoch"]})
            replay = []
            m = await b.recv()
            while m["type"] == "message":
                replay.append(m)
                m = await b.recv()
            assert m["type"] == "joined", m
            assert 0 < len(replay) < 100
            assert [x["seq"] for x in replay] == list(range(1, len(replay) + 1)), "oldest first, no gaps"
            assert m.get("truncated") is True, m
            assert m["recovered"] in (True, False)
            await b.ping_pong()              # not closed as a slow consumer
            await b.close()
        finally:
            await a.close()

    run(main())
    assert srv.metrics().value("chatd_slow_consumer_closes_total") == 0


def test_history_reply_cut_to_queue_budget(chatd):
    """A history reply bigger than the session's queue byte budget is cut, never
    a reason to close the session as a slow consumer."""
    srv = chatd({"limits": {"send_queue_bytes": 30000, "send_queue_messages": 1000, "max_message_bytes": 1000,
                            "slow_consumer": "close"},
                 "history": {"messages_per_room": 500}})

    async def main():
        a = await srv.client("alice")
        try:
            await a.join("r")
            for lo in range(0, 100, 10):
                for i in range(lo, lo + 10):
                    await a.send({"type": "send", "room": "r", "id": "m%d" % i, "body": "h" * 1000})
                await a.recv_n(20)
            h = await a.request({"type": "history", "room": "r", "limit": 100}, "history")
            s = seqs(h)
            assert 0 < len(s) < 100, len(s)
            assert s == list(range(s[0], s[0] + len(s))), "a cut history must stay contiguous"
            await a.ping_pong()
        finally:
            await a.close()

    run(main())
    assert srv.metrics().value("chatd_slow_consumer_closes_total") == 0


def test_seq_epoch_pair_never_reused_when_room_empties(server):
    """If an emptied room is forgotten and seq restarts, the epoch must change;
    if the epoch stays, seq continues."""
    async def main():
        a = await server.client("alice")
        try:
            j1 = await a.join("r")
            for i in range(3):
                await send_msg(a, "r", "m%d" % i, "x")
            await a.request({"type": "leave", "room": "r"}, "left")
        finally:
            await a.close()
        b = await server.client("bob")
        try:
            j2 = await b.join("r")
            ack, _ = await send_msg(b, "r", "n", "y")
            if j2["epoch"] == j1["epoch"]:
                assert j2["seq"] == 3 and ack["seq"] == 4, (j1, j2, ack)
            else:
                assert ack["seq"] == j2["seq"] + 1, (j2, ack)
        finally:
            await b.close()

    run(main())


@pytest.mark.parametrize("cmd", [
    {"type": "history", "room": "r", "limit": 0},
    {"type": "history", "room": "r", "limit": -1},
    {"type": "history", "room": "r", "limit": 1.5},
    {"type": "history", "room": "r", "limit": 2 ** 63},
    {"type": "history", "room": "r", "before": 0},
    {"type": "history", "room": "r", "before": -5},
    {"type": "history", "room": "r", "before": 2 ** 64},
    {"type": "history", "room": "r", "after": -1},
    {"type": "history", "room": "r", "after": 1e300},
    {"type": "history", "room": "r", "before": 2, "after": 1},
    {"type": "history", "room": "r", "before": 1, "after": 3},
    {"type": "join", "room": "r", "since": 2 ** 63, "epoch": "x"},
    {"type": "join", "room": "r", "since": 1.5, "epoch": "x"},
    {"type": "join", "room": "r", "since": 1e300, "epoch": "x"},
    {"type": "join", "room": "r", "since": 0, "epoch": 5},
    {"type": "join", "room": "r", "since": 0, "epoch": "e" * 10000},
])
def test_odd_numbers_never_break_the_session(server, cmd):
    """Edge values: a sensible reply or bad_request, never a crash (UBSan) or a hang."""
    async def main():
        a = await server.client("alice")
        try:
            await a.join("r")
            for i in range(3):
                await send_msg(a, "r", "m%d" % i, "x")
            await a.send(dict(cmd, ref="odd"))
            m = await a.recv()
            while m["type"] == "message":       # a join with since may replay
                m = await a.recv()
            assert m.get("ref") == "odd", m
            if m["type"] == "error":
                assert m["code"] == "bad_request", m
            else:
                assert m["type"] == ("history" if cmd["type"] == "history" else "joined"), m
                if m["type"] == "history":
                    assert all(x["seq"] in (1, 2, 3) for x in m["messages"]), m
            await a.ping_pong()
        finally:
            await a.close()

    run(main())
    assert server.alive()


def test_join_since_ahead_of_room(server):
    async def main():
        a = await server.client("alice")
        try:
            j = await a.join("r")
            await send_msg(a, "r", "m", "x")
            b = await server.client("bob")
            await b.send({"type": "join", "room": "r", "since": 100, "epoch": j["epoch"]})
            j2 = await b.expect("joined")          # nothing to replay
            assert j2["seq"] == 1, j2
            await b.ping_pong()
            await b.close()
        finally:
            await a.close()

    run(main())
