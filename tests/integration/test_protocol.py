"""Wire protocol v1: handshake, names, refs, bad input, ping."""

import json
import time

import pytest

from chatd_helpers import run, scaled


# ---------------------------------------------------------------------------
# handshake


def test_welcome_fields_and_subprotocol_echo(server):
    async def main():
        c = await server.client(subprotocols=["chat.v1"])
        try:
            assert c.ws.subprotocol == "chat.v1"
            await c.send({"type": "hello", "name": "alice"})
            w = await c.expect("welcome")
            assert w["name"] == "alice"
            assert isinstance(w["session"], str) and w["session"], w
            assert w["heartbeat"] == 1 and isinstance(w["heartbeat"], (int, float)), w
            assert not isinstance(w["heartbeat"], bool), w
            assert w["node"] == "test-node", w
            assert "ref" not in w, "no ref was sent, none may be echoed: %r" % w
        finally:
            await c.close()

    run(main())


def test_subprotocol_echoed_among_several_offered(server):
    r = server.raw(subprotocols=("x.other", "chat.v1"))
    assert r.subprotocol == "chat.v1"
    r.hello("alice")


def test_no_subprotocol_offered_still_v1(server):
    async def main():
        c = await server.client(subprotocols=None)
        try:
            assert c.ws.subprotocol is None
            w = await c.hello("bob")
            assert w["node"] == "test-node"
            await c.ping_pong()
        finally:
            await c.close()

    run(main())
    r = server.raw(subprotocols=())
    assert "sec-websocket-protocol" not in r.headers, r.headers
    r.hello("carol")


def test_session_ids_are_distinct(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            assert a.session != b.session
        finally:
            await a.close()
            await b.close()

    run(main())


def test_welcome_echoes_ref(server):
    async def main():
        c = await server.client()
        try:
            await c.send({"type": "hello", "name": "alice", "ref": "h1"})
            await c.expect("welcome", ref="h1", name="alice")
        finally:
            await c.close()

    run(main())


@pytest.mark.parametrize("cmd", [
    {"type": "ping"},
    {"type": "join", "room": "lobby"},
    {"type": "leave", "room": "lobby"},
    {"type": "send", "room": "lobby", "id": "m1", "body": "hi"},
    {"type": "dm", "to": "bob", "id": "d1", "body": "hi"},
    {"type": "history", "room": "lobby"},
    {"type": "members", "room": "lobby"},
])
def test_command_before_hello_is_not_authenticated(server, cmd):
    async def main():
        c = await server.client()
        try:
            await c.send(dict(cmd, ref="r-before"))
            await c.expect_error("not_authenticated", ref="r-before")
            # the connection stays open and hello still works
            await c.hello("alice")
            await c.ping_pong()
        finally:
            await c.close()

    run(main())


def test_not_authenticated_repeatedly_keeps_connection(server):
    async def main():
        c = await server.client()
        try:
            for i in range(5):
                await c.send({"type": "ping", "ref": "p%d" % i})
                await c.expect_error("not_authenticated", ref="p%d" % i)
            await c.hello("alice")
        finally:
            await c.close()

    run(main())


def test_hello_twice_is_bad_request(server):
    async def main():
        c = await server.client("alice")
        try:
            await c.send({"type": "hello", "name": "alice2", "ref": "again"})
            await c.expect_error("bad_request", ref="again")
            await c.ping_pong()
            # the first name is still the session's name: alice2 is free, alice is not
            d = await server.client("alice2")
            e = await server.client()
            await e.send({"type": "hello", "name": "alice"})
            await e.expect_error("conflict")
            await d.close()
            await e.close()
        finally:
            await c.close()

    run(main())


@pytest.mark.parametrize("name", [
    "", "a" * 33, "a b", "al/ice", "al:ice", "\u00e9l\u00e8ne", "al\nice", "<script>", "al@ice",
])
def test_bad_name_is_bad_request(server, name):
    async def main():
        c = await server.client()
        try:
            await c.send({"type": "hello", "name": name, "ref": "bad"})
            await c.expect_error("bad_request", ref="bad")
            await c.hello("good")     # still open, still unauthenticated until now
        finally:
            await c.close()

    run(main())


@pytest.mark.parametrize("bad", [{"name": 42}, {"name": None}, {"name": ["a"]}, {}])
def test_hello_with_missing_or_non_string_name(server, bad):
    async def main():
        c = await server.client()
        try:
            await c.send(dict({"type": "hello", "ref": "x"}, **bad))
            await c.expect_error("bad_request", ref="x")
            await c.hello("good")
        finally:
            await c.close()

    run(main())


def test_valid_name_charset_and_length(server):
    async def main():
        names = ["a", "A" * 32, "Az09_.-", "...", "-_-", "0"]
        clients = []
        try:
            for n in names:
                clients.append(await server.client(n))
        finally:
            for c in clients:
                await c.close()

    run(main())


def test_name_conflict(server):
    async def main():
        a = await server.client("alice")
        b = await server.client()
        try:
            await b.send({"type": "hello", "name": "alice", "ref": "c"})
            await b.expect_error("conflict", ref="c")
            # the connection stays open; another name works
            await b.hello("bob")
            await a.ping_pong()
        finally:
            await a.close()
            await b.close()

    run(main())


def test_name_free_again_after_disconnect(server):
    async def main():
        a = await server.client("alice")
        await a.close()
        b = await server.client()
        try:
            deadline = time.monotonic() + scaled(3)
            while True:
                await b.send({"type": "hello", "name": "alice"})
                m = await b.recv()
                if m["type"] == "welcome":
                    break
                assert m["type"] == "error" and m["code"] == "conflict", m
                assert time.monotonic() < deadline, "name alice still taken after its session closed"
                await __import__("asyncio").sleep(0.05)
        finally:
            await b.close()

    run(main())


def test_sessions_per_name_2(chatd):
    srv = chatd({"limits": {"sessions_per_name": 2}})

    async def main():
        a1 = await srv.client("alice")
        a2 = await srv.client("alice")
        a3 = await srv.client()
        bob = await srv.client("bob")
        try:
            assert a1.session != a2.session
            await a3.send({"type": "hello", "name": "alice", "ref": "third"})
            await a3.expect_error("conflict", ref="third")

            await a1.join("room")
            await a2.join("room")     # presence for a second session of a name is left open
            j = await bob.join("room")
            assert sorted(j["members"]) == ["alice", "bob"], j
            mem = await bob.request({"type": "members", "room": "room"}, "members")
            assert sorted(mem["names"]) == ["alice", "bob"], mem

            # a dm reaches every session of the name
            await bob.send({"type": "dm", "to": "alice", "id": "d1", "body": "to both"})
            await bob.expect("ack", id="d1")
            for a in (a1, a2):
                # skip the presence of bob joining, which both alice sessions got
                m = await a.recv()
                while m["type"] == "presence":
                    m = await a.recv()
                assert m["type"] == "direct", m
                assert m["from"] == "bob" and m["id"] == "d1" and m["body"] == "to both", m
        finally:
            for c in (a1, a2, a3, bob):
                await c.close()

    run(main())


def test_handshake_timeout_closes_1008(chatd):
    srv = chatd({"server": {"handshake_timeout": 1}})

    async def main():
        t0 = time.monotonic()
        c = await srv.client()
        code, reason = await c.expect_closed(timeout=scaled(1 + 3))
        elapsed = time.monotonic() - t0
        assert code == 1008, (code, reason)
        assert reason == "handshake timeout", reason
        assert elapsed >= 0.8, "closed after %.2fs, before handshake_timeout=1" % elapsed

    run(main())
    m = srv.metrics()
    assert m.value("chatd_handshake_timeouts_total") == 1


def test_handshake_timeout_even_when_sending_other_commands(chatd):
    srv = chatd({"server": {"handshake_timeout": 1}})

    async def main():
        c = await srv.client()
        await c.send({"type": "ping"})
        await c.expect_error("not_authenticated")
        code, _ = await c.expect_closed(timeout=scaled(1 + 3))
        assert code == 1008

    run(main())


def test_no_handshake_timeout_after_hello(chatd):
    srv = chatd({"server": {"handshake_timeout": 1}})

    async def main():
        c = await srv.client("alice")
        try:
            await c.expect_silence(1.6)       # past handshake_timeout; heartbeat pings are answered
            await c.ping_pong()
        finally:
            await c.close()

    run(main())
    assert srv.metrics().value("chatd_handshake_timeouts_total") == 0


def test_raw_handshake_timeout_close_frame(chatd):
    srv = chatd({"server": {"handshake_timeout": 1}})
    r = srv.raw()
    assert r.expect_close_code(1008, timeout=scaled(4)) == "handshake timeout"


# ---------------------------------------------------------------------------
# ping / ref


def test_ping_pong(server):
    async def main():
        c = await server.client("alice")
        try:
            await c.send({"type": "ping"})
            p = await c.expect("pong")
            assert "ref" not in p, p
            await c.send({"type": "ping", "ref": "abc"})
            await c.expect("pong", ref="abc")
        finally:
            await c.close()

    run(main())


def test_ref_echoed_on_every_reply(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.send({"type": "join", "room": "r", "ref": "1"})
            await a.expect("joined", ref="1")
            await b.join("r")
            await a.expect("presence")
            await a.send({"type": "send", "room": "r", "id": "m", "body": "x", "ref": "2"})
            got = await a.expect_unordered(["ack", "message"])
            assert got["ack"].get("ref") == "2", got
            m = await b.expect("message")
            assert "ref" not in m, "the ref belongs to the sender's reply only: %r" % m
            assert "ref" not in got["message"] or got["message"]["ref"] == "2", got
            await a.send({"type": "history", "room": "r", "ref": "3"})
            await a.expect("history", ref="3")
            await a.send({"type": "members", "room": "r", "ref": "4"})
            await a.expect("members", ref="4")
            await a.send({"type": "dm", "to": "bob", "id": "d", "body": "y", "ref": "5"})
            await a.expect("ack", ref="5", id="d")
            d = await b.expect("direct")
            assert "ref" not in d, d
            await a.send({"type": "leave", "room": "r", "ref": "6"})
            await a.expect("left", ref="6")
            await a.send({"type": "ping", "ref": "7"})
            await a.expect("pong", ref="7")
            # errors too
            await a.send({"type": "send", "room": "r", "id": "m2", "body": "x", "ref": "8"})
            await a.expect_error("forbidden", ref="8")
            await a.send({"type": "dm", "to": "nobody", "id": "d2", "body": "x", "ref": "9"})
            await a.expect_error("not_found", ref="9")
            await a.send({"type": "bogus", "ref": "10"})
            await a.expect_error("bad_request", ref="10")
        finally:
            await a.close()
            await b.close()

    run(main())


def test_ref_length_limit(server):
    async def main():
        c = await server.client("alice")
        try:
            ok = "r" * 64
            await c.send({"type": "ping", "ref": ok})
            await c.expect("pong", ref=ok)
            await c.send({"type": "ping", "ref": "r" * 65})
            await c.expect_error("bad_request")
            # 64 bytes, not 64 characters: 33 two-byte characters = 66 bytes
            await c.send({"type": "ping", "ref": "\u00e9" * 33})
            await c.expect_error("bad_request")
            await c.ping_pong()
        finally:
            await c.close()

    run(main())


@pytest.mark.parametrize("ref", [42, None, {"a": 1}, ["x"], True])
def test_non_string_ref_is_bad_request(server, ref):
    async def main():
        c = await server.client("alice")
        try:
            await c.send({"type": "ping", "ref": ref})
            await c.expect_error("bad_request")
            await c.ping_pong()
        finally:
            await c.close()

    run(main())


# ---------------------------------------------------------------------------
# bad input never closes the connection


BAD_FRAMES = [
    "not json",
    "{",
    "",
    "[]",
    "[{\"type\":\"ping\"}]",
    "\"ping\"",
    "42",
    "null",
    "true",
    "{}",
    "{\"type\": 5}",
    "{\"type\": null}",
    "{\"type\": \"\"}",
    "{\"type\": \"nonexistent\"}",
    "{\"type\": \"PING\"}",
    "{\"type\":\"ping\"} trailing",
    "{\"type\":\"ping\"}{\"type\":\"ping\"}",
]


@pytest.mark.parametrize("text", BAD_FRAMES)
def test_bad_frame_is_bad_request_and_connection_stays_open(server, text):
    async def main():
        c = await server.client("alice")
        try:
            await c.send_text(text)
            await c.expect_error("bad_request")
            await c.ping_pong()
        finally:
            await c.close()

    run(main())


@pytest.mark.parametrize("text", BAD_FRAMES[:4] + ['{"type":"no_such_command","ref":"x"}'])
def test_bad_frame_before_hello_keeps_connection(server, text):
    async def main():
        c = await server.client()
        try:
            await c.send_text(text)
            m = await c.expect("error")
            assert m["code"] in ("bad_request", "not_authenticated"), m
            await c.hello("alice")
        finally:
            await c.close()

    run(main())


def test_unknown_type_echoes_ref(server):
    async def main():
        c = await server.client("alice")
        try:
            await c.send({"type": "frobnicate", "ref": "u1"})
            await c.expect_error("bad_request", ref="u1")
        finally:
            await c.close()

    run(main())


def test_unknown_fields_are_ignored(server):
    async def main():
        c = await server.client()
        try:
            await c.send({"type": "hello", "name": "alice", "extra": {"x": [1, 2]}, "v": 2})
            await c.expect("welcome", name="alice")
            await c.send({"type": "ping", "whatever": True, "ref": "p"})
            await c.expect("pong", ref="p")
            await c.send({"type": "join", "room": "r", "colour": "blue"})
            await c.expect("joined", room="r")
            await c.send({"type": "send", "room": "r", "id": "1", "body": "b", "prio": 9})
            await c.expect_unordered(["ack", "message"])
        finally:
            await c.close()

    run(main())


@pytest.mark.parametrize("cmd", [
    {"type": "join"},
    {"type": "join", "room": 5},
    {"type": "join", "room": ""},
    {"type": "join", "room": "r" * 65},
    {"type": "join", "room": "a b"},
    {"type": "join", "room": "a/b"},
    {"type": "join", "room": "r\u00e9"},
    {"type": "join", "room": "r", "since": "3"},
    {"type": "join", "room": "r", "since": -1},
    {"type": "leave"},
    {"type": "leave", "room": 1},
    {"type": "send", "room": "r", "id": "1"},
    {"type": "send", "room": "r", "body": "x"},
    {"type": "send", "id": "1", "body": "x"},
    {"type": "send", "room": "r", "id": "", "body": "x"},
    {"type": "send", "room": "r", "id": "i" * 65, "body": "x"},
    {"type": "send", "room": "r", "id": 1, "body": "x"},
    {"type": "send", "room": "r", "id": "1", "body": 5},
    {"type": "send", "room": "r", "id": "1", "body": None},
    {"type": "send", "room": "r", "id": "1", "body": {"text": "x"}},
    {"type": "dm", "id": "1", "body": "x"},
    {"type": "dm", "to": "bob", "body": "x"},
    {"type": "dm", "to": "bob", "id": "1"},
    {"type": "dm", "to": 7, "id": "1", "body": "x"},
    {"type": "history"},
    {"type": "history", "room": "r", "limit": "10"},
    {"type": "history", "room": "r", "before": "x"},
    {"type": "members"},
    {"type": "members", "room": ["r"]},
])
def test_missing_or_invalid_fields_are_bad_request(server, cmd):
    async def main():
        c = await server.client("alice")
        try:
            await c.join("r")
            await c.send(dict(cmd, ref="bad"))
            await c.expect_error("bad_request", ref="bad")
            await c.ping_pong()
        finally:
            await c.close()

    run(main())


def test_room_name_charset_and_length(server):
    async def main():
        c = await server.client("alice")
        try:
            for room in ["a", "R" * 64, "Az09_.:-", "team:dev.ops-1_x"]:
                await c.join(room)
        finally:
            await c.close()

    run(main())


def test_id_length_limit(server):
    async def main():
        c = await server.client("alice")
        try:
            await c.join("r")
            await c.send({"type": "send", "room": "r", "id": "i" * 64, "body": "x"})
            got = await c.expect_unordered(["ack", "message"])
            assert got["ack"]["id"] == "i" * 64
        finally:
            await c.close()

    run(main())


def test_body_too_large(chatd):
    srv = chatd({"limits": {"max_message_bytes": 100}})

    async def main():
        c = await srv.client("alice")
        bob = await srv.client("bob")
        try:
            await c.join("r")
            await bob.join("r")
            await c.expect("presence")
            await c.send({"type": "send", "room": "r", "id": "big", "body": "x" * 101, "ref": "t"})
            await c.expect_error("too_large", ref="t")
            # 100 bytes, counted in bytes: 51 two-byte characters is too large
            await c.send({"type": "send", "room": "r", "id": "big2", "body": "\u00e9" * 51})
            await c.expect_error("too_large")
            await c.send({"type": "dm", "to": "bob", "id": "d", "body": "y" * 101, "ref": "d"})
            await c.expect_error("too_large", ref="d")
            # exactly the limit is fine, and seq 1 was not consumed by the rejects
            await c.send({"type": "send", "room": "r", "id": "ok", "body": "x" * 100})
            got = await c.expect_unordered(["ack", "message"])
            assert got["ack"]["seq"] == 1, got
            m = await bob.expect("message", id="ok", seq=1)
            assert m["body"] == "x" * 100
        finally:
            await c.close()
            await bob.close()

    run(main())
    assert srv.metrics().value("chatd_errors_total", code="too_large") == 3


def test_unicode_body_roundtrip(server):
    async def main():
        a = await server.client("alice")
        b = await server.client("bob")
        try:
            await a.join("r")
            await b.join("r")
            await a.expect("presence")
            body = "h\u00e9llo \u2603 \U0001F600 \"quoted\" \\ back\nslash \t tab \u007f del \u2028 ls"
            await a.send({"type": "send", "room": "r", "id": "u", "body": body})
            m = await b.expect("message")
            assert m["body"] == body
            await a.send({"type": "dm", "to": "bob", "id": "d", "body": body})
            d = await b.expect("direct")
            assert d["body"] == body
        finally:
            await a.close()
            await b.close()

    run(main())


def test_body_with_nul_is_never_truncated(server):
    """A JSON string may hold U+0000: deliver it intact or reject it, never cut it."""
    async def main():
        a = await server.client("alice")
        try:
            await a.join("r")
            await a.send({"type": "send", "room": "r", "id": "n", "body": "before\u0000after"})
            m = await a.recv()
            if m["type"] == "error":
                assert m["code"] == "bad_request", m
                return
            got = {m["type"]: m}
            m2 = await a.recv()
            got[m2["type"]] = m2
            assert sorted(got) == ["ack", "message"], got
            assert got["message"]["body"] == "before\u0000after", got
        finally:
            await a.close()

    run(main())


def test_server_frames_are_text_json_objects(server):
    """Every server frame is one UTF-8 text frame holding one JSON object."""
    r = server.raw()
    r.send_json({"type": "hello", "name": "alice"})
    r.send_json({"type": "join", "room": "r"})
    r.send_json({"type": "send", "room": "r", "id": "1", "body": "x"})
    r.send_text("garbage")
    r.send_json({"type": "ping"})
    seen = []
    while True:
        op, payload = r.recv_msg(auto_pong=True)
        assert op == 1, "opcode %d" % op
        obj = json.loads(payload.decode("utf-8"))
        assert isinstance(obj, dict) and isinstance(obj["type"], str)
        seen.append(obj["type"])
        if obj["type"] == "pong":
            break
    assert seen[:2] == ["welcome", "joined"], seen
    assert sorted(seen[2:4]) == ["ack", "message"], seen
    assert seen[4:] == ["error", "pong"], seen


@pytest.mark.parametrize("text", [
    "[" * 5000 + "]" * 5000,
    '{"type":"ping","x":' + "[" * 3000 + "]" * 3000 + "}",
    '{"type":"ping","x":"' + "\\u" + '"}',
    '{"type":"ping","x":"\\ud800"}',
    '{"type":"ping","x":1e999999}',
    '{"type":"ping","type":"join"}',
    '{"type":"send","room":"r","id":"1","body":"' + "\\\"" * 300 + '"}',
])
def test_hostile_json_is_handled(server, text):
    async def main():
        c = await server.client("alice")
        try:
            await c.join("r")
            await c.send_text(text)
            m = await c.recv()
            assert m["type"] in ("error", "pong", "joined", "ack", "message"), m
            if m["type"] == "error":
                assert m["code"] in ("bad_request", "too_large"), m
            # let any rest of the reply through, then prove the session still works
            await c.send({"type": "ping", "ref": "end"})
            m = await c.recv()
            while not (m["type"] == "pong" and m.get("ref") == "end"):
                assert m["type"] in ("ack", "message"), m
                m = await c.recv()
        finally:
            await c.close()

    run(main())
    assert server.alive()
