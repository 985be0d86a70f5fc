"""Durable history: the real binary with a real SQLite file in a temp dir."""

import asyncio
import json
import os
import resource
import signal
import sqlite3
import time

import pytest

from chatd_helpers import OP_TEXT, encode_frame, run, scaled
from conftest import run_cli


def storage_cfg(tmp_path, sync="batch", **extra):
    st = {"path": str(tmp_path / "chat.db"), "sync": sync}
    st.update(extra)
    return {"storage": st}


async def send_burst(c, room, n, prefix, body="x"):
    """Pipeline n sends, then read until every one is answered.

    Returns ({id: seq} of the acks, [ids answered with unavailable])."""
    for i in range(n):
        await c.send({"type": "send", "room": room, "id": "%s%d" % (prefix, i),
                      "body": "%s-%s%d" % (body, prefix, i), "ref": "%s%d" % (prefix, i)})
    acks, failed = {}, []
    while len(acks) + len(failed) < n:
        m = await c.recv(scaled(10))
        if m["type"] == "ack":
            acks[m["id"]] = m["seq"]
        elif m["type"] == "error":
            assert m["code"] == "unavailable", m
            failed.append(m["ref"])
    return acks, failed


async def all_history(c, room):
    """Every message the server still holds for room, oldest first."""
    out, after = [], 0
    while True:
        h = await c.request({"type": "history", "room": room, "after": after, "limit": 500}, "history")
        if not h["messages"]:
            return out
        out += h["messages"]
        after = h["messages"][-1]["seq"]


def db_rows(path, sql):
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_restart_keeps_history_seq_and_epoch(chatd, tmp_path):
    srv = chatd(storage_cfg(tmp_path))

    async def before():
        c = await srv.client("alice")
        j = await c.join("lobby")
        assert j["seq"] == 0
        acks, failed = await send_burst(c, "lobby", 20, "m")
        assert not failed and sorted(acks.values()) == list(range(1, 21))
        await c.close()
        return j["epoch"]

    epoch = run(before())
    assert srv.stop() == 0
    srv.stopped = False
    srv.start()

    async def after():
        c = await srv.client("alice")
        j = await c.join("lobby")
        assert j["seq"] == 20 and j["epoch"] == epoch, j
        msgs = await all_history(c, "lobby")
        assert [m["seq"] for m in msgs] == list(range(1, 21))
        assert msgs[4]["body"] == "x-m4" and msgs[4]["from"] == "alice" and msgs[4]["id"] == "m4"
        await c.send({"type": "send", "room": "lobby", "id": "next", "body": "after restart"})
        ack = await c.expect("ack")
        assert ack["seq"] == 21
        await c.close()

    run(after())


@pytest.mark.parametrize("sync", ["batch", "always"])
def test_kill_9_loses_no_acked_message(chatd, tmp_path, sync):
    srv = chatd(storage_cfg(tmp_path, sync))

    async def burst():
        c = await srv.client("alice")
        await c.join("r")
        acks, failed = await send_burst(c, "r", 300, "k")
        assert not failed
        # No goodbye: the process dies right after the last ack.
        srv.signal(signal.SIGKILL)
        return acks

    acks = run(burst())
    srv.wait_exit(scaled(5))
    srv.stopped = False
    srv.start()

    async def check():
        c = await srv.client("bob")
        j = await c.join("r")
        assert j["seq"] == 300, j
        msgs = await all_history(c, "r")
        got = {m["id"]: m["seq"] for m in msgs}
        assert got == acks
        await c.send({"type": "send", "room": "r", "id": "after", "body": "b"})
        assert (await c.expect("ack"))["seq"] == 301
        await c.close()

    run(check())


def test_resume_with_since_across_restart(chatd, tmp_path):
    # A small ring: most of the gap has to come from the database.
    srv = chatd(dict(storage_cfg(tmp_path), history={"messages_per_room": 4}))

    async def before():
        a = await srv.client("alice")
        j = await a.join("r")
        b = await srv.client("bob")
        await b.join("r")
        acks, _ = await send_burst(b, "r", 5, "early")
        await a.close()                         # alice saw up to seq 5
        await send_burst(b, "r", 12, "late")    # 6..17 while she is away
        await b.close()
        return j["epoch"]

    epoch = run(before())
    assert srv.stop() == 0
    srv.stopped = False
    srv.start()

    async def resume():
        a = await srv.client("alice")
        await a.send({"type": "join", "room": "r", "since": 5, "epoch": epoch})
        replayed = []
        while True:
            m = await a.recv()
            if m["type"] == "joined":
                break
            assert m["type"] == "message", m
            replayed.append(m["seq"])
        assert replayed == list(range(6, 18))
        assert m["recovered"] is True and m["seq"] == 17 and m["epoch"] == epoch
        assert "truncated" not in m
        await a.close()

    run(resume())


def test_dedup_survives_restart(chatd, tmp_path):
    srv = chatd(storage_cfg(tmp_path))

    async def first():
        c = await srv.client("alice")
        await c.join("r")
        acks, _ = await send_burst(c, "r", 3, "d")
        await c.close()
        return acks

    acks = run(first())
    assert srv.stop() == 0
    srv.stopped = False
    srv.start()

    async def retry():
        b = await srv.client("bob")
        await b.join("r")
        a = await srv.client("alice")
        await a.join("r")
        await b.expect("presence")
        await a.send({"type": "send", "room": "r", "id": "d1", "body": "again"})
        ack = await a.expect("ack")
        assert ack["seq"] == acks["d1"]
        await b.expect_silence(0.3)            # nothing broadcast for a duplicate
        await a.send({"type": "send", "room": "r", "id": "fresh", "body": "new"})
        assert (await a.expect("ack"))["seq"] == 4
        await a.close()
        await b.close()

    run(retry())


def test_retention_messages_prunes_old_rows(chatd, tmp_path):
    db = str(tmp_path / "chat.db")
    srv = chatd(dict(storage_cfg(tmp_path, retention_messages=10), history={"messages_per_room": 5}))

    async def fill():
        c = await srv.client("alice")
        await c.join("r")
        acks, _ = await send_burst(c, "r", 40, "p")
        assert len(acks) == 40
        await c.close()

    run(fill())
    m = srv.metrics()
    assert m.value("chatd_storage_pruned_total") >= 20
    assert srv.stop() == 0
    rows = db_rows(db, "SELECT min(seq), max(seq), count(*) FROM messages WHERE room = 'r'")
    assert rows == [(31, 40, 10)]
    assert db_rows(db, "SELECT seq FROM rooms WHERE name = 'r'") == [(40,)]

    srv.stopped = False
    srv.start()

    async def resume_old():
        c = await srv.client("bob")
        await c.send({"type": "join", "room": "r", "since": 3})
        seqs = []
        while True:
            m = await c.recv()
            if m["type"] == "joined":
                break
            seqs.append(m["seq"])
        assert seqs == list(range(31, 41))
        assert m["recovered"] is False      # 4..30 are gone
        await c.close()

    run(resume_old())


def test_retention_days_prunes_by_age(chatd, tmp_path):
    db = str(tmp_path / "chat.db")
    # 0.00002 days = 1.7 s
    srv = chatd(storage_cfg(tmp_path, retention_days=0.00002))

    async def go():
        c = await srv.client("alice")
        await c.join("r")
        await send_burst(c, "r", 5, "old")
        await asyncio.sleep(scaled(1.0) + 3.5)
        await send_burst(c, "r", 2, "new")
        await c.close()

    run(go())
    assert srv.stop() == 0
    ids = [r[0] for r in db_rows(db, "SELECT id FROM messages ORDER BY seq")]
    assert ids == ["new0", "new1"]


def test_corrupt_file_is_refused(tmp_path):
    db = tmp_path / "chat.db"
    db.write_bytes(os.urandom(8192))
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nport = 0\n[storage]\npath = "%s"\n' % db)
    before = db.read_bytes()
    r = run_cli(["-c", str(cfg)])
    assert r.returncode == 2, r
    assert "not a usable SQLite database" in r.stderr and str(db) in r.stderr
    assert db.read_bytes() == before        # untouched


def test_foreign_database_is_refused(tmp_path):
    db = tmp_path / "other.db"
    con = sqlite3.connect(str(db))
    con.execute("CREATE TABLE accounts(id INTEGER)")
    con.commit()
    con.close()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nport = 0\n[storage]\npath = "%s"\n' % db)
    r = run_cli(["-c", str(cfg)])
    assert r.returncode == 2 and "not a chatd database" in r.stderr, r
    assert db_rows(str(db), "SELECT name FROM sqlite_master") == [("accounts",)]


def test_newer_schema_is_refused(chatd, tmp_path):
    srv = chatd(storage_cfg(tmp_path))
    assert srv.stop() == 0
    db = str(tmp_path / "chat.db")
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    r = run_cli(["-c", srv.config_path])
    assert r.returncode == 2 and "schema version 99 is newer" in r.stderr, r


def test_second_instance_on_the_same_file_is_refused(chatd, tmp_path):
    first = chatd(storage_cfg(tmp_path))
    second = chatd(storage_cfg(tmp_path), start=False)
    r = run_cli(["-c", second.config_path])
    assert r.returncode == 2, r
    assert "locked by another process" in r.stderr
    # The first one keeps serving.
    assert first.http("/healthz")[0] == 200


def test_write_error_gives_unavailable_and_acks_only_stored(chatd, tmp_path):
    """A file-size limit makes SQLite fail mid-traffic (SQLITE_FULL/IOERR)."""
    srv = chatd(storage_cfg(tmp_path), start=False)
    limit = 160 * 1024

    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    srv.preexec = preexec
    srv.start()

    async def flood():
        c = await srv.client("alice")
        await c.join("r")
        acks, failed = {}, []
        for round_ in range(60):
            a, f = await send_burst(c, "r", 10, "w%d-" % round_, body="y" * 2000)
            acks.update(a)
            failed += f
            if failed:
                break
        assert failed, "the file-size limit never caused a write error"
        # Still serving this client (its message events may still be in
        # flight before the pong) and new ones.
        await c.send({"type": "ping", "ref": "alive?"})
        while (await c.recv())["type"] != "pong":
            pass
        d = await srv.client("dave")
        await d.ping_pong()
        await c.close()
        await d.close()
        return acks, failed

    acks, failed = run(flood())
    assert srv.metrics().value("chatd_storage_failures_total") >= 1
    assert "storage: writing" in srv.log_text()
    assert srv.stop() == 0

    srv.stopped = False
    srv.preexec = None
    srv.start()

    async def check():
        c = await srv.client("bob")
        j = await c.join("r")
        msgs = await all_history(c, "r")
        got = {m["id"]: m["seq"] for m in msgs}
        assert got == acks                  # every ack stored, nothing else
        assert not set(failed) & set(got)
        assert j["seq"] == max(acks.values())
        assert [m["seq"] for m in msgs] == list(range(1, j["seq"] + 1))   # gap-free
        await c.close()

    run(check())


def test_retry_while_the_first_is_uncommitted_gets_the_same_ack(chatd, tmp_path):
    """Two sends with one id read in the same loop iteration (before the
    batch commits): one message, two identical acks."""
    srv = chatd(storage_cfg(tmp_path))

    async def watch():
        w = await srv.client("watcher")
        await w.join("r")
        return w

    async def check(w):
        assert (await w.expect("presence"))["name"] == "alice"
        assert (await w.expect("message"))["seq"] == 1
        await w.expect_silence(0.3)
        await w.close()

    async def go():
        w = await watch()
        a = srv.raw()
        a.hello("alice")
        a.join("r")
        frame = '{"type":"send","room":"r","id":"same","body":"once","ref":"%s"}'
        # One TCP write carrying both frames: one read, one loop iteration.
        a.send_raw(encode_frame(OP_TEXT, (frame % "first").encode()) +
                   encode_frame(OP_TEXT, (frame % "second").encode()))
        got = [await asyncio.to_thread(a.recv_json, scaled(5)) for _ in range(3)]
        acks = [m for m in got if m["type"] == "ack"]
        assert sorted(m["ref"] for m in acks) == ["first", "second"], got
        assert acks[0]["seq"] == acks[1]["seq"] == 1
        await check(w)

    run(go())


async def alice_and_bob_in(srv, room):
    """Two clients joined to room, alice's presence event consumed."""
    a = await srv.client("alice")
    b = await srv.client("bob")
    await a.join(room)
    await b.join(room)
    await a.expect("presence")
    return a, b


# Frames that cJSON alone took and altered: a bad \u escape became U+0000
# and cut the body short ("ab\uZZZZcd" was stored and delivered as "ab"),
# raw control characters and numbers outside the grammar went through.
NON_RFC8259_SENDS = [
    r'{"type":"send","room":"r","id":"e1","body":"ab\uZZZZcd"}',
    r'{"type":"send","room":"r","id":"e2","body":"ab\u00g1cd"}',
    r'{"type":"send","room":"r","id":"e3","body":"ab\u12"}',
    r'{"type":"send","room":"r","id":"e4","body":"a\xb"}',
    '{"type":"send","room":"r","id":"e5","body":"tab\there"}',
    r'{"type":"send","room":"r","id":"e6","body":"\ud800 lone"}',
    '{"type":"send","room":"r","id":"e7","body":"x","n":+1}',
    '{"type":"send","room":"r","id":"e8","body":"x","n":01}',
]


def test_non_rfc8259_frames_are_refused_never_stored_altered(chatd, tmp_path):
    """Every frame is strict JSON before it is used: a body is stored and
    delivered byte for byte as sent, or refused with bad_request."""
    srv = chatd(storage_cfg(tmp_path))

    async def main():
        a, b = await alice_and_bob_in(srv, "r")
        try:
            for text in NON_RFC8259_SENDS:
                await a.send_text(text)
                e = await a.expect_error("bad_request")
                assert "JSON" in e["message"], e
            # A valid frame with every escape RFC 8259 has arrives intact.
            body = "ab\u00e9\U0001F600/\"\\\b\f\n\r\t end"
            await a.send_text('{"type":"send","room":"r","id":"ok","body":%s}' % json.dumps(body))
            ack = await a.expect("ack")
            m = await b.expect("message")
            assert (m["id"], m["body"], m["seq"]) == ("ok", body, ack["seq"]) and ack["seq"] == 1, m
            h = await b.request({"type": "history", "room": "r"}, "history")
            assert [x["body"] for x in h["messages"]] == [body]
        finally:
            await a.close()
            await b.close()

    run(main())
    srv.stop()
    rows = db_rows(str(tmp_path / "chat.db"), "SELECT id, body FROM messages ORDER BY seq")
    assert rows == [("ok", "ab\u00e9\U0001F600/\"\\\b\f\n\r\t end")], rows


@pytest.mark.parametrize("sync", ["batch", "always", "off"])
def test_every_sync_mode_completes_after_submit_in_order(chatd, tmp_path, sync):
    """The engine contract: a message completes after submit returned, never
    inside it (the hub logs an error if it is re-entered); acks and the
    stored rows follow seq order in every sync mode."""
    srv = chatd(storage_cfg(tmp_path, sync=sync))

    async def main():
        a, b = await alice_and_bob_in(srv, "r")
        try:
            acks, failed = await send_burst(a, "r", 50, "s")
            assert not failed and sorted(acks.values()) == list(range(1, 51))
            got = [(await b.expect("message"))["seq"] for _ in range(50)]
            assert got == list(range(1, 51))
        finally:
            await a.close()
            await b.close()

    run(main())
    srv.stop()
    assert "engine contract broken" not in srv.log_text(), srv.log_tail()
    assert db_rows(str(tmp_path / "chat.db"), "SELECT count(*), max(seq) FROM messages") == [(50, 50)]
