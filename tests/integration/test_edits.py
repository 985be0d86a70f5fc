"""Edit, delete and react: sequenced events of a room, through the real binary.

Memory only, with a real SQLite file (restart, the deleted body gone from the
file, the schema 1 -> 2 upgrade), and resume convergence."""

import asyncio
import sqlite3
import time

from chatd_helpers import run, scaled


async def expect_both(c, event):
    """The ack and c's own event, in any order; presence events and others'
    events are skipped."""
    got = {}
    while len(got) < 2:
        m = await c.recv(scaled(5))
        if m["type"] == "presence" or m.get("from", c.name) != c.name:
            continue
        assert m["type"] in ("ack", event) and m["type"] not in got, (event, got, m)
        got[m["type"]] = m
    assert got["ack"]["seq"] == got[event]["seq"], got
    return got


async def send(c, room, id_, body):
    """send and return the ack's seq (the sender's own message event is read too)."""
    await c.send({"type": "send", "room": room, "id": id_, "body": body})
    return (await expect_both(c, "message"))["ack"]["seq"]


async def change(c, cmd, event):
    """An edit/delete/react by c: its ack and its own event (any order)."""
    await c.send(cmd)
    return (await expect_both(c, event))[event]


def fold(state, ev):
    """What a client does with the events: the current state of each message."""
    t = ev["type"]
    if t == "message":
        state[ev["seq"]] = {"from": ev["from"], "body": ev["body"], "deleted": bool(ev.get("deleted")),
                            "reactions": {}}
    elif ev.get("target") in state:
        m = state[ev["target"]]
        if t == "edit" and not m["deleted"] and not ev.get("deleted"):
            m["body"] = ev["body"]
        elif t == "delete":
            m.update(body="", deleted=True, reactions={})
        elif t == "react" and not m["deleted"]:
            names = m["reactions"].setdefault(ev["reaction"], set())
            (names.add if ev["on"] else names.discard)(ev["from"])
            if not names:
                del m["reactions"][ev["reaction"]]
    return state


def from_state_history(msgs):
    out = {}
    for m in msgs:
        out[m["seq"]] = {"from": m["from"], "body": m["body"], "deleted": bool(m.get("deleted")),
                         "reactions": {r["reaction"]: set(r["names"]) for r in m.get("reactions", [])}}
    return out


async def state_history(c, room):
    await c.send({"type": "history", "room": room, "state": True, "limit": 500})
    while True:
        h = await c.recv(scaled(5))
        if h["type"] == "history":
            return h["messages"]


def test_edit_delete_react_reach_every_member(server):
    async def go():
        a = await server.client("alice")
        b = await server.client("bob")
        await a.join("r")
        await b.join("r")
        await a.expect("presence")
        s1 = await send(a, "r", "m1", "helo")
        await b.expect("message", seq=s1, body="helo")

        ev = await change(a, {"type": "edit", "room": "r", "seq": s1, "body": "hello", "id": "e1"}, "edit")
        assert ev["target"] == s1 and ev["seq"] == s1 + 1 and ev["body"] == "hello" and ev["from"] == "alice"
        await b.expect("edit", seq=s1 + 1, target=s1, body="hello")

        ev = await change(b, {"type": "react", "room": "r", "seq": s1, "reaction": "\U0001F44D"}, "react")
        assert ev["on"] is True and ev["target"] == s1 and ev["from"] == "bob"
        await a.expect("react", seq=s1 + 2, reaction="\U0001F44D", on=True)

        st = await state_history(b, "r")
        assert len(st) == 1, st
        assert st[0]["body"] == "hello" and st[0]["edits"] == 1 and st[0]["edited"] >= st[0]["ts"]
        assert st[0]["reactions"] == [{"reaction": "\U0001F44D", "count": 1, "names": ["bob"]}]

        await change(b, {"type": "react", "room": "r", "seq": s1, "reaction": "\U0001F44D", "on": False}, "react")
        await a.expect("react", on=False)
        ev = await change(a, {"type": "delete", "room": "r", "seq": s1}, "delete")
        assert ev["target"] == s1 and "body" not in ev
        await b.expect("delete", target=s1)

        # The plain history now holds the tombstone and a blanked edit.
        h = await b.request({"type": "history", "room": "r"}, "history")
        kinds = [(m["type"], m["seq"]) for m in h["messages"]]
        assert kinds == [("message", 1), ("edit", 2), ("react", 3), ("react", 4), ("delete", 5)], kinds
        assert h["messages"][0]["deleted"] is True and h["messages"][0]["body"] == ""
        assert h["messages"][1]["deleted"] is True and h["messages"][1]["body"] == ""
        st = await state_history(b, "r")
        assert st[0]["deleted"] is True and st[0]["body"] == "" and st[0]["reactions"] == []
        await a.close()
        await b.close()

    run(go())


def test_bad_edits_get_clear_errors(chatd):
    srv = chatd({"conversations": {"max_edits": 2, "max_reactions": 2}})

    async def go():
        a = await srv.client("alice")
        b = await srv.client("bob")
        await a.join("r")
        await b.join("r")
        await a.expect("presence")
        s1 = await send(a, "r", "m1", "mine")
        await b.expect("message")

        await b.send({"type": "edit", "room": "r", "seq": s1, "body": "yours now", "ref": "x"})
        await b.expect_error("forbidden", ref="x")
        await b.send({"type": "delete", "room": "r", "seq": s1, "ref": "y"})
        await b.expect_error("forbidden", ref="y")
        await a.send({"type": "edit", "room": "r", "seq": 99, "body": "?"})
        await a.expect_error("not_found")
        await a.send({"type": "edit", "room": "r", "seq": 0, "body": "?"})
        await a.expect_error("bad_request")
        await a.send({"type": "react", "room": "r", "seq": s1, "reaction": "x" * 33})
        await a.expect_error("too_large")
        await a.send({"type": "react", "room": "r", "seq": s1, "reaction": "a b"})
        await a.expect_error("bad_request")
        await a.send({"type": "edit", "room": "nope", "seq": s1, "body": "?"})
        await a.expect_error("forbidden")

        for i in range(2):
            await change(a, {"type": "edit", "room": "r", "seq": s1, "body": "v%d" % i}, "edit")
            await b.expect("edit", body="v%d" % i)
        await a.send({"type": "edit", "room": "r", "seq": s1, "body": "v3"})
        await a.expect_error("conflict")

        await change(a, {"type": "react", "room": "r", "seq": s1, "reaction": "a"}, "react")
        await b.expect("react")
        await a.send({"type": "react", "room": "r", "seq": s1, "reaction": "a"})
        await a.expect_error("conflict")         # once per user and reaction
        await change(b, {"type": "react", "room": "r", "seq": s1, "reaction": "a"}, "react")
        await change(b, {"type": "react", "room": "r", "seq": s1, "reaction": "b"}, "react")
        await a.recv_n(2)
        await b.send({"type": "react", "room": "r", "seq": s1, "reaction": "c"})
        await b.expect_error("conflict")         # max_reactions distinct
        await b.send({"type": "react", "room": "r", "seq": s1, "reaction": "c", "on": False})
        await b.expect_error("not_found")

        # An event is not a message: it cannot be edited.
        await a.send({"type": "edit", "room": "r", "seq": s1 + 1, "body": "?"})
        await a.expect_error("not_found")
        await change(a, {"type": "delete", "room": "r", "seq": s1}, "delete")
        await a.send({"type": "delete", "room": "r", "seq": s1})
        await a.expect_error("not_found")
        await a.ping_pong()
        await a.close()
        await b.close()

    run(go())


def test_edit_window(chatd):
    srv = chatd({"conversations": {"edit_window": 0.5}})

    async def go():
        a = await srv.client("alice")
        await a.join("r")
        s1 = await send(a, "r", "m1", "quick")
        await change(a, {"type": "edit", "room": "r", "seq": s1, "body": "in time"}, "edit")
        await asyncio.sleep(scaled(0.8))
        await a.send({"type": "edit", "room": "r", "seq": s1, "body": "too late", "ref": "late"})
        err = await a.expect_error("forbidden", ref="late")
        assert "0.5" in err["message"], err
        await a.close()

    run(go())


def test_retry_of_an_edit_gets_the_same_ack(server):
    async def go():
        a = await server.client("alice")
        await a.join("r")
        s1 = await send(a, "r", "m1", "x")
        ev = await change(a, {"type": "edit", "room": "r", "seq": s1, "body": "y", "id": "e"}, "edit")
        await a.send({"type": "edit", "room": "r", "seq": s1, "body": "y", "id": "e"})
        ack = await a.expect("ack")
        assert ack["seq"] == ev["seq"]
        await a.expect_silence(scaled(0.3))
        await a.close()

    run(go())


def test_concurrent_senders_agree_on_order(server):
    """Three clients send and edit at once: every member sees the same sequence."""
    async def go():
        cs = [await server.client(n) for n in ("a", "b", "c")]
        for c in cs:
            await c.join("r")
        seen = {c.name: [] for c in cs}

        async def drain(c, until):
            while len([e for e in seen[c.name] if e["type"] in ("message", "edit")]) < until:
                m = await c.recv(scaled(10))
                if m["type"] in ("message", "edit"):
                    seen[c.name].append(m)

        # everyone sends 10 at once, then edits each of their own
        for c in cs:
            for i in range(10):
                await c.send({"type": "send", "room": "r", "id": "%s%d" % (c.name, i), "body": "b%d" % i})
        acks = {c.name: [] for c in cs}
        for c in cs:
            while len(acks[c.name]) < 10:
                m = await c.recv(scaled(10))
                if m["type"] == "ack":
                    acks[c.name].append(m["seq"])
                elif m["type"] in ("message", "edit"):
                    seen[c.name].append(m)
        for c in cs:
            for s in acks[c.name]:
                await c.send({"type": "edit", "room": "r", "seq": s, "body": "edited by " + c.name})
        for c in cs:
            await drain(c, 60)
        orders = {n: [(e["type"], e["seq"], e.get("target")) for e in v] for n, v in seen.items()}
        assert orders["a"] == orders["b"] == orders["c"], orders
        assert [s for _, s, _ in orders["a"]] == list(range(1, 61))
        # every edit comes after its target and names the right sender
        by_seq = {e["seq"]: e for e in seen["a"]}
        for e in seen["a"]:
            if e["type"] == "edit":
                assert e["target"] < e["seq"] and by_seq[e["target"]]["from"] == e["from"]
                assert e["body"] == "edited by " + e["from"]
        for c in cs:
            await c.close()

    run(go())


def test_resume_converges_with_a_client_that_stayed(server):
    async def go():
        a = await server.client("alice")
        b = await server.client("bob")
        stay = await server.client("carol")
        await a.join("r")
        j = await b.join("r")
        await stay.join("r")
        seqs = [await send(a, "r", "m%d" % i, "text %d" % i) for i in range(4)]
        since = seqs[-1]
        await b.close()
        await change(a, {"type": "edit", "room": "r", "seq": seqs[0], "body": "first, edited"}, "edit")
        await change(a, {"type": "delete", "room": "r", "seq": seqs[1]}, "delete")
        await change(a, {"type": "react", "room": "r", "seq": seqs[2], "reaction": "ok"}, "react")
        await change(a, {"type": "react", "room": "r", "seq": seqs[3], "reaction": "ok"}, "react")
        await change(a, {"type": "react", "room": "r", "seq": seqs[3], "reaction": "ok", "on": False}, "react")
        last = await send(a, "r", "m9", "after")

        # carol stayed: fold everything she got
        state = {}
        while True:
            m = await stay.recv(scaled(5))
            if m["type"] == "presence":
                continue
            fold(state, m)
            if m.get("seq") == last and m["type"] == "message":
                break
        # bob resumes: the pre-resume snapshot plus the replayed events
        b2 = await server.client("bob")
        await b2.send({"type": "join", "room": "r", "since": since, "epoch": j["epoch"]})
        replayed = []
        while True:
            m = await b2.recv(scaled(5))
            if m["type"] == "joined":
                assert m["recovered"] is True
                break
            replayed.append(m)
        assert [m["seq"] for m in replayed] == list(range(since + 1, last + 1))
        # what bob held before he left (the messages up to since), then the replay
        h = await b2.request({"type": "history", "room": "r", "before": since + 1}, "history")
        resumed = {}
        for m in h["messages"] + replayed:
            fold(resumed, m)
        # the client that stayed only folded what arrived after it joined; the
        # state history is the server's view: all three agree
        expect = from_state_history(await state_history(b2, "r"))
        assert resumed == expect, (resumed, expect)
        for s, v in state.items():
            assert expect[s] == v, (s, expect[s], v)
        assert expect[seqs[0]]["body"] == "first, edited"
        assert expect[seqs[1]]["deleted"] and expect[seqs[1]]["body"] == ""
        assert expect[seqs[2]]["reactions"] == {"ok": {"alice"}} and expect[seqs[3]]["reactions"] == {}
        for c in (a, b2, stay):
            await c.close()

    run(go())


# ---- storage ---------------------------------------------------------------

def storage_cfg(tmp_path, **conv):
    cfg = {"storage": {"path": str(tmp_path / "chat.db")}}
    if conv:
        cfg["conversations"] = conv
    return cfg


def test_deleted_body_is_gone_from_the_sqlite_file(chatd, tmp_path):
    srv = chatd(storage_cfg(tmp_path))
    path = str(tmp_path / "chat.db")

    async def go():
        a = await srv.client("alice")
        await a.join("r")
        s1 = await send(a, "r", "m1", "SECRET-ORIGINAL-xyzzy")
        await send(a, "r", "m2", "keep me")
        await change(a, {"type": "edit", "room": "r", "seq": s1, "body": "SECRET-EDIT-plugh"}, "edit")
        await change(a, {"type": "delete", "room": "r", "seq": s1}, "delete")
        await a.close()

    run(go())
    assert srv.stop() == 0
    con = sqlite3.connect(path)
    rows = con.execute("SELECT seq, kind, target, body, deleted FROM messages ORDER BY seq").fetchall()
    con.close()
    assert rows == [(1, 0, 0, "", 1), (2, 0, 0, "keep me", 0), (3, 1, 1, "", 1), (4, 2, 1, "", 0)], rows
    raw = open(path, "rb").read()
    assert b"keep me" in raw
    assert b"SECRET-ORIGINAL" not in raw and b"SECRET-EDIT" not in raw


def test_edits_and_reactions_survive_a_restart(chatd, tmp_path):
    srv = chatd(storage_cfg(tmp_path))

    async def before():
        a = await srv.client("alice")
        b = await srv.client("bob")
        await a.join("r")
        await b.join("r")
        s1 = await send(a, "r", "m1", "one")
        s2 = await send(a, "r", "m2", "two")
        await change(a, {"type": "edit", "room": "r", "seq": s1, "body": "ONE"}, "edit")
        await change(b, {"type": "react", "room": "r", "seq": s2, "reaction": "+1"}, "react")
        await change(a, {"type": "delete", "room": "r", "seq": s2}, "delete")
        s3 = await send(a, "r", "m3", "three")
        await change(b, {"type": "react", "room": "r", "seq": s3, "reaction": "+1"}, "react")
        st = await state_history(a, "r")
        await a.close()
        await b.close()
        return st

    st = run(before())
    assert srv.stop() == 0
    srv.stopped = False
    srv.start()

    async def after():
        a = await srv.client("alice")
        await a.join("r")
        st2 = await state_history(a, "r")
        assert st2 == st, (st2, st)
        assert [m["body"] for m in st2] == ["ONE", "", "three"]
        # the rules still apply after the restart: the deleted stays deleted
        await a.send({"type": "edit", "room": "r", "seq": 2, "body": "back?"})
        await a.expect_error("not_found")
        ev = await change(a, {"type": "edit", "room": "r", "seq": 1, "body": "ONE!"}, "edit")
        assert ev["seq"] == 8
        await a.close()

    run(after())


V1_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE rooms(name TEXT PRIMARY KEY, epoch TEXT NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE messages(room TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
 id TEXT NOT NULL, body TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID;
CREATE INDEX messages_ts ON messages(ts);
PRAGMA application_id = 1667785076;
PRAGMA user_version = 1;
"""


def test_schema_1_file_is_upgraded(chatd, tmp_path):
    """A database written by the previous chatd (schema 1) opens, keeps its
    history, and takes edits; the file says version 2 afterwards."""
    path = str(tmp_path / "chat.db")
    con = sqlite3.connect(path)
    con.executescript(V1_SCHEMA)
    now = int(time.time() * 1000)
    con.execute("INSERT INTO rooms VALUES ('r', '00000000000000aa', 2)")
    con.execute("INSERT INTO messages VALUES ('r', 1, 'alice', 'o1', 'old one', ?)", (now,))
    con.execute("INSERT INTO messages VALUES ('r', 2, 'bob', 'o2', 'old two', ?)", (now,))
    con.commit()
    con.close()
    srv = chatd(storage_cfg(tmp_path))

    async def go():
        a = await srv.client("alice")
        j = await a.join("r")
        assert j["seq"] == 2 and j["epoch"] == "00000000000000aa" and j["read"] == 0, j
        h = await a.request({"type": "history", "room": "r"}, "history")
        assert [(m["seq"], m["body"]) for m in h["messages"]] == [(1, "old one"), (2, "old two")]
        ev = await change(a, {"type": "edit", "room": "r", "seq": 1, "body": "old one, edited"}, "edit")
        assert ev["seq"] == 3
        await a.send({"type": "edit", "room": "r", "seq": 2, "body": "not mine"})
        await a.expect_error("forbidden")
        await a.close()

    run(go())
    assert srv.stop() == 0
    assert "upgraded from schema 1 to 2" in srv.log_text()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone() == (2,)
    assert con.execute("SELECT seq, kind, target FROM messages ORDER BY seq").fetchall() == \
        [(1, 0, 0), (2, 0, 0), (3, 1, 1)]
    con.close()


# ---- two cluster nodes and a real redis-server ------------------------------

def test_edits_across_two_cluster_nodes(chatd, tmp_path):
    from test_cluster import Redis, node_cfg, redis_cmd

    redis = Redis(tmp_path).start()
    try:
        n1, n2 = chatd(node_cfg(redis, 1)), chatd(node_cfg(redis, 2))

        async def go():
            a = await n1.client("alice")
            b = await n2.client("bob")
            j = await a.join("r")
            await b.join("r")
            s1 = await send(a, "r", "m1", "SECRET across nodes")
            await b.expect("message", seq=s1)
            await b.send({"type": "edit", "room": "r", "seq": s1, "body": "not mine", "ref": "f"})
            await b.expect_error("forbidden", ref="f")
            ev = await change(a, {"type": "edit", "room": "r", "seq": s1, "body": "edited on n1"}, "edit")
            got = await b.expect("edit", target=s1, body="edited on n1")
            assert got["seq"] == ev["seq"] == s1 + 1
            ev = await change(b, {"type": "react", "room": "r", "seq": s1, "reaction": "+1"}, "react")
            await a.expect("react", seq=ev["seq"], target=s1, reaction="+1", on=True)
            st1, st2 = await state_history(a, "r"), await state_history(b, "r")
            assert st1 == st2 and st1[0]["body"] == "edited on n1" and st1[0]["reactions"][0]["names"] == ["bob"]
            await change(a, {"type": "delete", "room": "r", "seq": s1}, "delete")
            await b.expect("delete", target=s1)
            # Redis' history list keeps no text of the deleted message or its edit
            hist = redis_cmd(redis, "LRANGE", "chatd:room:r:hist", 0, -1)
            assert len(hist) == 4 and not any("SECRET" in h or "edited on n1" in h for h in hist), hist
            # a client resuming on the other node converges on the same state
            c = await n2.client("carol")
            await c.send({"type": "join", "room": "r", "since": 0, "epoch": j["epoch"]})
            state = {}
            while True:
                m = await c.recv(scaled(5))
                if m["type"] == "joined":
                    break
                fold(state, m)
            assert state == from_state_history(await state_history(c, "r"))
            assert state[s1]["deleted"] and state[s1]["body"] == ""
            for x in (a, b, c):
                await x.close()

        run(go())
    finally:
        for srv in chatd.servers:
            srv.stop()
        redis.stop()


def test_delete_of_anothers_message_is_a_moderators(chatd):
    """delete is one command: one's own message is a sequenced delete event;
    anyone else's is a moderation delete (forbidden for a member), which ends
    the message's edits and reactions too."""
    from test_moderation import MOD, auth_cfg, drain, user

    srv = chatd(auth_cfg())

    async def go():
        mod = await user(srv, "mo", MOD)
        bob = await user(srv, "bob")
        carol = await user(srv, "carol")
        for c in (mod, bob, carol):
            await c.join("lobby")
        await bob.send({"type": "send", "room": "lobby", "id": "1", "body": "oops", "ref": "s"})
        seq = (await drain(bob, "ack", ref="s"))["seq"]
        await bob.send({"type": "edit", "room": "lobby", "seq": seq, "body": "OOPS", "ref": "e"})
        await drain(bob, "ack", ref="e")
        await carol.send({"type": "react", "room": "lobby", "seq": seq, "reaction": "x", "ref": "r"})
        await drain(carol, "ack", ref="r")
        await carol.send({"type": "delete", "room": "lobby", "seq": seq, "ref": "c"})
        assert (await drain(carol, "error", ref="c"))["code"] == "forbidden"
        await mod.send({"type": "delete", "room": "lobby", "seq": seq, "ref": "m"})
        await drain(mod, "ack", ref="m")
        await bob.send({"type": "history", "room": "lobby", "state": True, "ref": "h"})
        h = await drain(bob, "history", ref="h")
        st = [m for m in h["messages"] if m["seq"] == seq][0]
        assert st["deleted"] is True and st["body"] == "" and st["reactions"] == [], st
        await bob.send({"type": "history", "room": "lobby", "ref": "h2"})
        h = await drain(bob, "history", ref="h2")
        edit = [m for m in h["messages"] if m["type"] == "edit"][0]
        assert edit["body"] == "" and edit["deleted"] is True, edit     # its edit's text is gone too
        await bob.send({"type": "edit", "room": "lobby", "seq": seq, "body": "back", "ref": "b"})
        assert (await drain(bob, "error", ref="b"))["code"] == "not_found"
        for c in (mod, bob, carol):
            await c.close()

    run(go())
