"""Room roles and moderation (issue 15): roles from the token's claim or
granted by an owner, kick/ban/unban/mute/unmute/invite/grant/delete each
refused without the role, every action a sequenced event from "!mod" in the
room's history, logged with who did it; bans and grants survive a restart
(SQLite) and hold on every node of a cluster (redis-server)."""

import asyncio
import json
import os
import sys
import time

import pytest

from chatd_helpers import Client, run, scaled, wait_until
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
from mint_token import mint  # noqa: E402

SECRET = b"moderation-test-secret-0123456789abcdef"
OWNER = {"owner": ["lobby", "team-*"]}
MOD = {"moderator": ["lobby", "team-*"]}


def token(sub, roles=None, **claims):
    c = {"sub": sub, "exp": int(time.time()) + 600}
    if roles:
        c["roles"] = roles
    c.update(claims)
    return mint(SECRET, c)


def auth_cfg(**more):
    cfg = {"auth": {"mode": "jwt", "jwt_secret": SECRET.decode()},
           "limits": {"sessions_per_name": 3, "rate": 1000, "burst": 1000}}
    for k, v in more.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


@pytest.fixture
def server(chatd):
    return chatd(auth_cfg())


async def user(srv, sub, roles=None, **claims):
    c = await Client.connect(srv.port, label=sub)
    await c.send({"type": "hello", "token": token(sub, roles, **claims)})
    w = await c.expect("welcome")
    c.name = w["name"]
    return c


async def drain(c, until_type, **fields):
    """Frames up to the first of until_type with fields (presence etc. skipped)."""
    while True:
        m = await c.recv()
        if m["type"] == until_type and all(m.get(k) == v for k, v in fields.items()):
            return m


async def mod_cmd(c, cmd, **kw):
    """Run a moderation command; its answer is the ack of its event."""
    await c.send(dict({"type": cmd, "ref": cmd}, **kw))
    return await drain(c, "ack", ref=cmd)


async def history_events(c, room):
    await c.send({"type": "history", "room": room, "limit": 500})
    h = await drain(c, "history")
    return [dict(json.loads(m["body"]), seq=m["seq"]) for m in h["messages"] if m["from"] == "!mod"]


def test_joined_carries_the_role_from_the_claim(server):
    async def go():
        o = await user(server, "olga", OWNER)
        m = await user(server, "mo", {"moderator": ["team-*"]})
        b = await user(server, "bob")
        assert (await o.join("team-x"))["role"] == "owner"
        assert (await m.join("team-x"))["role"] == "moderator"
        assert (await m.join("other"))["role"] == "member"     # prefix does not match
        assert (await b.join("other"))["role"] == "member"
        for c in (o, m, b):
            await c.close()
    run(go())


def test_kick_removes_every_session_and_tells_why(server):
    async def go():
        mod = await user(server, "mo", MOD)
        alice = await user(server, "alice")
        bobs = [await user(server, "bob") for _ in range(2)]
        await mod.join("lobby")
        await alice.join("lobby")
        for b in bobs:
            await b.join("lobby")
        ack = await mod_cmd(mod, "kick", room="lobby", user="bob", reason="spam links")
        assert ack["room"] == "lobby" and ack["seq"] >= 1
        for b in bobs:
            k = await drain(b, "kicked")
            assert k == {"type": "kicked", "room": "lobby", "by": "mo", "reason": "spam links"}, k
        p = await drain(alice, "presence", name="bob", state="leave")
        assert p["cause"] == "kicked" and p["reason"] == "spam links" and p["by"] == "mo", p
        ev = await drain(alice, "message")
        assert ev["from"] == "!mod" and ev["seq"] == ack["seq"]
        assert json.loads(ev["body"]) == {"action": "kick", "user": "bob", "by": "mo", "reason": "spam links"}
        # bob is out of the room: sending there is refused, rejoining works (a kick is no ban).
        await bobs[0].send({"type": "send", "room": "lobby", "id": "x", "body": "hi", "ref": "s"})
        await bobs[0].expect_error("forbidden", ref="s")
        await bobs[0].join("lobby")
        await alice.send({"type": "members", "room": "lobby"})
        m = await drain(alice, "members")
        assert sorted(m["names"]) == ["alice", "bob", "mo"]
        evs = await history_events(alice, "lobby")
        assert [e["action"] for e in evs] == ["kick"]
        for c in [mod, alice] + bobs:
            await c.close()
    run(go())
    assert "room lobby: kick bob by mo: spam links" in server.log_text()


def test_every_command_needs_its_role(server):
    cmds = [("kick", {}), ("ban", {}), ("unban", {}), ("mute", {}), ("unmute", {}),
            ("invite", {}), ("grant", {"role": "moderator"}), ("delete", {"seq": 1}),
            ("settings", {"topic": "x"})]

    async def go():
        owner = await user(server, "olga", OWNER)
        mod = await user(server, "mo", MOD)
        mem = await user(server, "bob")
        other = await user(server, "carol")
        for c in (owner, mod, mem, other):
            await c.join("lobby")
        await owner.send({"type": "send", "room": "lobby", "id": "1", "body": "first"})
        await drain(owner, "ack")
        for cmd, extra in cmds:
            kw = dict({"room": "lobby"}, **extra)
            if cmd not in ("delete", "settings"):
                kw["user"] = "carol"
            await mem.send(dict({"type": cmd, "ref": "m-" + cmd}, **kw))
            e = await drain(mem, "error", ref="m-" + cmd)
            assert e["code"] == "forbidden", (cmd, e)
        # A moderator: not grant, not settings; and never against an owner.
        for cmd in ("grant", "settings"):
            kw = dict({"room": "lobby"}, **dict(cmds)[cmd])
            if cmd == "grant":
                kw["user"] = "carol"
            await mod.send(dict({"type": cmd, "ref": "x"}, **kw))
            assert (await drain(mod, "error", ref="x"))["code"] == "forbidden"
        for cmd in ("kick", "ban", "mute"):
            await mod.send({"type": cmd, "room": "lobby", "user": "olga", "ref": "o"})
            assert (await drain(mod, "error", ref="o"))["code"] == "forbidden"
        # Not a member of the room: forbidden too.
        await mod.send({"type": "kick", "room": "elsewhere", "user": "bob", "ref": "e"})
        assert (await drain(mod, "error", ref="e"))["code"] == "forbidden"
        # Malformed: bad_request.
        await mod.send({"type": "ban", "room": "lobby", "user": "bob", "duration": -1, "ref": "d"})
        assert (await drain(mod, "error", ref="d"))["code"] == "bad_request"
        await owner.send({"type": "grant", "room": "lobby", "user": "bob", "role": "god", "ref": "g"})
        assert (await drain(owner, "error", ref="g"))["code"] == "bad_request"
        # The roles that may: each accepted (events in history, in order).
        await mod_cmd(mod, "mute", room="lobby", user="carol")
        await mod_cmd(mod, "unmute", room="lobby", user="carol")
        await mod_cmd(mod, "invite", room="lobby", user="dave")
        await mod_cmd(owner, "grant", room="lobby", user="carol", role="moderator")
        await mod_cmd(owner, "settings", room="lobby", topic="rules")
        evs = await history_events(owner, "lobby")
        assert [e["action"] for e in evs] == ["mute", "unmute", "invite", "grant", "settings"]
        assert all(e["by"] in ("mo", "olga") for e in evs)
        for c in (owner, mod, mem, other):
            await c.close()
    run(go())


def test_ban_timed_and_permanent(server):
    async def go():
        mod = await user(server, "mo", MOD)
        bob = await user(server, "bob")
        await mod.join("lobby")
        await bob.join("lobby")
        await mod_cmd(mod, "ban", room="lobby", user="bob", reason="flood", duration=2)
        b = await drain(bob, "banned")
        assert b["reason"] == "flood" and b["until"] > time.time() * 1000
        await bob.send({"type": "join", "room": "lobby", "ref": "j"})
        e = await bob.expect_error("forbidden", ref="j")
        assert "banned" in e["message"]
        await asyncio.sleep(2.2)
        await bob.join("lobby")                         # the timed ban ended
        await mod_cmd(mod, "ban", room="lobby", user="bob")
        b = await drain(bob, "banned")
        assert b["until"] == 0                          # permanent
        await asyncio.sleep(0.3)
        await bob.send({"type": "join", "room": "lobby", "ref": "j2"})
        await bob.expect_error("forbidden", ref="j2")
        await mod_cmd(mod, "unban", room="lobby", user="bob")
        await bob.join("lobby")
        await mod.close()
        await bob.close()
    run(go())


def test_mute_refuses_send_but_reads(server):
    async def go():
        mod = await user(server, "mo", MOD)
        bob = await user(server, "bob")
        await mod.join("lobby")
        await bob.join("lobby")
        await mod_cmd(mod, "mute", room="lobby", user="bob", duration=2)
        await drain(bob, "message")                     # the mute event itself
        await bob.send({"type": "send", "room": "lobby", "id": "1", "body": "x", "ref": "s"})
        e = await bob.expect_error("forbidden", ref="s")
        assert "muted" in e["message"]
        await mod.send({"type": "send", "room": "lobby", "id": "m1", "body": "read this"})
        m = await drain(bob, "message")
        assert m["body"] == "read this"                 # still reads
        await asyncio.sleep(2.2)
        await bob.send({"type": "send", "room": "lobby", "id": "2", "body": "back", "ref": "s2"})
        assert (await drain(bob, "ack"))["ref"] == "s2"
        await mod_cmd(mod, "mute", room="lobby", user="bob")
        await bob.send({"type": "send", "room": "lobby", "id": "3", "body": "x", "ref": "s3"})
        assert (await drain(bob, "error"))["code"] == "forbidden"
        await mod_cmd(mod, "unmute", room="lobby", user="bob")
        await bob.send({"type": "send", "room": "lobby", "id": "4", "body": "y", "ref": "s4"})
        assert (await drain(bob, "ack"))["ref"] == "s4"
        await mod.close()
        await bob.close()
    run(go())


def test_grant_makes_a_moderator_and_member_revokes(server):
    async def go():
        owner = await user(server, "olga", OWNER)
        carol = await user(server, "carol")
        bob = await user(server, "bob")
        for c in (owner, carol, bob):
            await c.join("lobby")
        await carol.send({"type": "kick", "room": "lobby", "user": "bob", "ref": "k"})
        assert (await drain(carol, "error", ref="k"))["code"] == "forbidden"
        await mod_cmd(owner, "grant", room="lobby", user="carol", role="moderator")
        await asyncio.sleep(0.1)
        await mod_cmd(carol, "kick", room="lobby", user="bob")
        await drain(bob, "kicked")
        await carol.send({"type": "leave", "room": "lobby"})
        await drain(carol, "left")
        assert (await carol.join("lobby"))["role"] == "moderator"
        await mod_cmd(owner, "grant", room="lobby", user="carol", role="member")
        await asyncio.sleep(0.1)
        await carol.send({"type": "mute", "room": "lobby", "user": "bob", "ref": "m"})
        assert (await drain(carol, "error", ref="m"))["code"] == "forbidden"
        for c in (owner, carol, bob):
            await c.close()
    run(go())


def test_the_mod_sender_cannot_be_impersonated(chatd):
    srv = chatd({})

    async def go():
        c = await Client.connect(srv.port)
        await c.send({"type": "hello", "name": "!mod", "ref": "h"})
        await c.expect_error("bad_request", ref="h")
        await c.close()
    run(go())
    jsrv = chatd(auth_cfg())

    async def go2():
        c = await Client.connect(jsrv.port)
        await c.send({"type": "hello", "token": token("!mod"), "ref": "h"})
        await c.expect_error("not_authenticated", ref="h")
        await c.close()
    run(go2())


def test_moderator_delete_is_a_sequenced_event(server):
    async def go():
        mod = await user(server, "mo", MOD)
        bob = await user(server, "bob")
        await mod.join("lobby")
        await bob.join("lobby")
        await bob.send({"type": "send", "room": "lobby", "id": "1", "body": "bad words", "ref": "s"})
        ack = await drain(bob, "ack")
        d = await mod_cmd(mod, "delete", room="lobby", seq=ack["seq"])
        assert d["seq"] == ack["seq"] + 1
        evs = await history_events(bob, "lobby")
        assert evs[-1]["action"] == "delete" and evs[-1]["seq"] == d["seq"]
        await bob.send({"type": "history", "room": "lobby"})
        h = await drain(bob, "history")
        gone = [m for m in h["messages"] if m["seq"] == ack["seq"]][0]
        assert gone["body"] == "" and gone["from"] == "bob" and gone["id"] == "1", gone
        await mod.send({"type": "delete", "room": "lobby", "seq": 99, "ref": "n"})
        assert (await drain(mod, "error", ref="n"))["code"] == "not_found"
        # The record of what moderators did is not deletable.
        await mod.send({"type": "delete", "room": "lobby", "seq": d["seq"], "ref": "e"})
        assert (await drain(mod, "error", ref="e"))["code"] == "forbidden"
        await mod.close()
        await bob.close()
    run(go())


def test_ban_and_grant_survive_a_restart(chatd, tmp_path):
    srv = chatd(auth_cfg(storage={"path": str(tmp_path / "chat.db")}))

    async def before():
        owner = await user(srv, "olga", OWNER)
        bob = await user(srv, "bob")
        await owner.join("lobby")
        await bob.join("lobby")
        await mod_cmd(owner, "ban", room="lobby", user="bob", reason="gone")
        await mod_cmd(owner, "grant", room="lobby", user="carol", role="moderator")
        await mod_cmd(owner, "mute", room="lobby", user="dave")
        await owner.close()
        await bob.close()

    run(before())
    assert srv.stop() == 0
    srv.stopped = False
    srv.start()

    async def after():
        bob = await user(srv, "bob")
        await bob.send({"type": "join", "room": "lobby", "ref": "j"})
        await bob.expect_error("forbidden", ref="j")
        carol = await user(srv, "carol")
        assert (await carol.join("lobby"))["role"] == "moderator"
        dave = await user(srv, "dave")
        await dave.join("lobby")
        await dave.send({"type": "send", "room": "lobby", "id": "1", "body": "x", "ref": "s"})
        assert (await drain(dave, "error", ref="s"))["code"] == "forbidden"
        await mod_cmd(carol, "unban", room="lobby", user="bob")
        await bob.join("lobby")
        evs = await history_events(bob, "lobby")
        assert [e["action"] for e in evs] == ["ban", "grant", "mute", "unban"]
        for c in (bob, carol, dave):
            await c.close()
    run(after())


def test_ban_holds_on_every_node_of_a_cluster(chatd, tmp_path):
    from test_cluster import REDIS, Redis, node_cfg
    if not os.path.exists(REDIS):
        pytest.skip("redis-server is not installed")
    redis = Redis(tmp_path).start()
    try:
        a, b = [chatd(dict(node_cfg(redis, i), **auth_cfg())) for i in (1, 2)]

        async def go():
            mod = await user(a, "mo", MOD)
            bob_a = await user(a, "bob")
            bob_b = await user(b, "bob")
            carol_b = await user(b, "carol")
            for c in (mod, bob_a, bob_b, carol_b):
                await c.join("lobby")
            ack = await mod_cmd(mod, "ban", room="lobby", user="bob", reason="raid")
            # Both of bob's sessions leave, on both nodes; carol on node b sees why.
            for c in (bob_a, bob_b):
                x = await drain(c, "banned")
                assert x["reason"] == "raid" and x["by"] == "mo", x
            p = await drain(carol_b, "presence", name="bob", cause="banned")
            assert p["reason"] == "raid"
            ev = await drain(carol_b, "message")
            assert ev["from"] == "!mod" and ev["seq"] == ack["seq"]
            # Rejoining is refused on either node, also once the room is loaded afresh.
            for c in (bob_a, bob_b):
                await c.send({"type": "join", "room": "lobby", "ref": "j"})
                assert (await drain(c, "error", ref="j"))["code"] == "forbidden"
            # A mute set on node b holds for a session on node a.
            owner_b = await user(b, "olga", OWNER)
            await owner_b.join("lobby")
            dave = await user(a, "dave")
            await dave.join("lobby")
            await mod_cmd(owner_b, "mute", room="lobby", user="dave")
            await drain(dave, "message")                    # the mute event, through the stream
            await dave.send({"type": "send", "room": "lobby", "id": "1", "body": "x", "ref": "s"})
            assert (await drain(dave, "error", ref="s"))["code"] == "forbidden"
            # A delete on node a empties the body on node b and in Redis.
            await carol_b.send({"type": "send", "room": "lobby", "id": "c1", "body": "oops", "ref": "c1"})
            cack = await drain(carol_b, "ack", ref="c1")
            await drain(mod, "message", id="c1")
            await mod_cmd(mod, "delete", room="lobby", seq=cack["seq"])
            await drain(carol_b, "message", **{"from": "!mod"})
            await carol_b.send({"type": "history", "room": "lobby"})
            h = await drain(carol_b, "history")
            assert [m["body"] for m in h["messages"] if m["seq"] == cack["seq"]] == [""]
            for c in (mod, bob_a, bob_b, carol_b, owner_b, dave):
                await c.close()
        run(go())
        # The state lives in Redis: a third node that loads the room fresh applies it.
        c3 = chatd(dict(node_cfg(redis, 3), **auth_cfg()))

        async def third():
            bob = await user(c3, "bob")
            await bob.send({"type": "join", "room": "lobby", "ref": "j"})
            assert (await drain(bob, "error", ref="j"))["code"] == "forbidden"
            await bob.close()
            eve = await user(c3, "eve")
            await eve.join("lobby")
            await eve.send({"type": "history", "room": "lobby"})
            h = await drain(eve, "history")
            bodies = {m["id"]: m["body"] for m in h["messages"]}
            assert bodies["c1"] == "", bodies
            await eve.close()
        run(third())
    finally:
        redis.stop()


def test_deleted_body_is_gone_from_the_sqlite_file(chatd, tmp_path):
    db = tmp_path / "chat.db"
    srv = chatd(auth_cfg(storage={"path": str(db)}))
    secret = "UNMISTAKABLE-SECRET-BODY-%d" % os.getpid()

    async def go():
        mod = await user(srv, "mo", MOD)
        bob = await user(srv, "bob")
        await mod.join("lobby")
        await bob.join("lobby")
        await bob.send({"type": "send", "room": "lobby", "id": "1", "body": secret, "ref": "s"})
        ack = await drain(bob, "ack")
        await bob.send({"type": "send", "room": "lobby", "id": "2", "body": "keep me", "ref": "s2"})
        await drain(bob, "ack", ref="s2")
        await mod_cmd(mod, "delete", room="lobby", seq=ack["seq"])
        await mod.close()
        await bob.close()
    run(go())
    assert srv.stop() == 0
    data = b"".join(p.read_bytes() for p in tmp_path.glob("chat.db*"))
    assert b"keep me" in data
    assert secret.encode() not in data
    import sqlite3
    con = sqlite3.connect(str(db))
    rows = con.execute("SELECT seq, sender, body FROM messages WHERE room = 'lobby' ORDER BY seq").fetchall()
    con.close()
    assert rows[0] == (1, "bob", "") and rows[1][2] == "keep me", rows
    assert rows[2][1] == "!mod" and json.loads(rows[2][2])["action"] == "delete"
    srv.stopped = False
    srv.start()

    async def after():
        bob = await user(srv, "bob")
        await bob.join("lobby")
        await bob.send({"type": "history", "room": "lobby"})
        h = await drain(bob, "history")
        assert h["messages"][0]["body"] == "" and h["messages"][1]["body"] == "keep me"
        await bob.close()
    run(after())


def test_a_refreshed_token_s_roles_apply_at_once(server):
    async def go():
        mo = await user(server, "mo")
        bob = await user(server, "bob")
        await mo.join("lobby")
        await bob.join("lobby")
        await mo.send({"type": "kick", "room": "lobby", "user": "bob", "ref": "k1"})
        assert (await drain(mo, "error", ref="k1"))["code"] == "forbidden"
        await mo.send({"type": "refresh", "token": token("mo", MOD), "ref": "r"})
        await drain(mo, "refreshed", ref="r")
        await mod_cmd(mo, "kick", room="lobby", user="bob", reason="now I can")
        assert (await drain(bob, "kicked"))["reason"] == "now I can"
        # And taken away again by the next refresh.
        await mo.send({"type": "refresh", "token": token("mo"), "ref": "r2"})
        await drain(mo, "refreshed", ref="r2")
        await mo.send({"type": "mute", "room": "lobby", "user": "bob", "ref": "m"})
        assert (await drain(mo, "error", ref="m"))["code"] == "forbidden"
        await mo.close()
        await bob.close()
    run(go())
