"""Room settings (issue 15): private (invite-only), read_only, topic and
history size, set by an owner, stored, shown in joined, with per-prefix
defaults from [[rooms]] tables of the config."""

import pytest

from chatd_helpers import run, toml_dumps
from conftest import run_cli
from test_moderation import OWNER, MOD, auth_cfg, drain, mod_cmd, user


def test_private_room_is_invitation_only(chatd):
    srv = chatd(auth_cfg())

    async def go():
        owner = await user(srv, "olga", OWNER)
        mod = await user(srv, "mo", MOD)
        bob = await user(srv, "bob")
        listed = await user(srv, "lena", rooms=["lobby"])
        await owner.join("lobby")
        await mod_cmd(owner, "settings", room="lobby", private=True)
        await bob.send({"type": "join", "room": "lobby", "ref": "j"})
        e = await bob.expect_error("forbidden", ref="j")
        assert "private" in e["message"]
        assert (await mod.join("lobby"))["settings"]["private"] is True     # moderators enter
        assert (await listed.join("lobby"))["role"] == "member"              # the token names it
        await mod_cmd(mod, "invite", room="lobby", user="bob")
        j = await bob.join("lobby")
        assert j["settings"]["private"] is True
        await mod_cmd(owner, "settings", room="lobby", private=False)
        carol = await user(srv, "carol")
        await carol.join("lobby")
        for c in (owner, mod, bob, listed, carol):
            await c.close()
    run(go())


def test_read_only_room_only_moderators_send(chatd):
    srv = chatd(auth_cfg())

    async def go():
        owner = await user(srv, "olga", OWNER)
        mod = await user(srv, "mo", MOD)
        bob = await user(srv, "bob")
        for c in (owner, mod, bob):
            await c.join("lobby")
        await mod_cmd(owner, "settings", room="lobby", read_only=True, topic="announcements")
        await bob.send({"type": "send", "room": "lobby", "id": "1", "body": "hi", "ref": "s"})
        e = await drain(bob, "error", ref="s")
        assert e["code"] == "forbidden" and "read-only" in e["message"]
        await mod.send({"type": "send", "room": "lobby", "id": "1", "body": "news", "ref": "s"})
        await drain(mod, "ack", ref="s")
        m = await drain(bob, "message", id="1")
        assert m["body"] == "news"                                   # members still read
        await bob.send({"type": "leave", "room": "lobby"})
        await drain(bob, "left")
        j = await bob.join("lobby")
        assert j["settings"] == {"private": False, "read_only": True, "history": 1000,
                                 "topic": "announcements"}, j
        for c in (owner, mod, bob):
            await c.close()
    run(go())


def test_history_size_bounds_what_a_room_keeps(chatd):
    srv = chatd(auth_cfg())

    async def go():
        owner = await user(srv, "olga", OWNER)
        await owner.join("lobby")
        await mod_cmd(owner, "settings", room="lobby", history=3)
        for i in range(6):
            await owner.send({"type": "send", "room": "lobby", "id": "m%d" % i, "body": "b%d" % i})
            await drain(owner, "ack")
        await owner.send({"type": "history", "room": "lobby", "limit": 50})
        h = await drain(owner, "history")
        assert [m["body"] for m in h["messages"]] == ["b3", "b4", "b5"], h
        bob = await user(srv, "bob")
        j = await bob.join("lobby")
        assert j["settings"]["history"] == 3
        await owner.close()
        await bob.close()
    run(go())


def test_settings_need_an_owner_and_are_checked(chatd):
    srv = chatd(auth_cfg())

    async def go():
        owner = await user(srv, "olga", OWNER)
        mod = await user(srv, "mo", MOD)
        await owner.join("lobby")
        await mod.join("lobby")
        await mod.send({"type": "settings", "room": "lobby", "read_only": True, "ref": "s"})
        assert (await drain(mod, "error", ref="s"))["code"] == "forbidden"
        for bad in ({"private": "yes"}, {"history": -1}, {"topic": 5}, {"topic": "x" * 300}, {}):
            await owner.send(dict({"type": "settings", "room": "lobby", "ref": "b"}, **bad))
            assert (await drain(owner, "error", ref="b"))["code"] == "bad_request", bad
        await mod.close()
        await owner.close()
    run(go())


def test_prefix_defaults_from_the_config(chatd):
    srv = chatd(auth_cfg(), start=False)
    srv.write_config(text=toml_dumps(srv.config) +
                     '\n[[rooms]]\nprefix = "announce-"\nread_only = true\n\n'
                     '[[rooms]]\nprefix = "announce-vip-"\nprivate = true\nread_only = true\nhistory = 5\n')
    srv.start()

    async def go():
        owner = await user(srv, "olga", {"owner": ["announce-*"]})
        bob = await user(srv, "bob")
        j = await bob.join("announce-news")
        assert j["settings"]["read_only"] is True and j["settings"]["private"] is False
        await bob.send({"type": "send", "room": "announce-news", "id": "1", "body": "x", "ref": "s"})
        assert (await drain(bob, "error", ref="s"))["code"] == "forbidden"
        await bob.send({"type": "join", "room": "announce-vip-lounge", "ref": "j"})
        assert (await drain(bob, "error", ref="j"))["code"] == "forbidden"   # longest prefix: private
        j = await owner.join("announce-vip-lounge")
        assert j["settings"] == {"private": True, "read_only": True, "history": 5}, j
        # The owner's own setting wins over the default.
        await owner.join("announce-news")
        await mod_cmd(owner, "settings", room="announce-news", read_only=False)
        await bob.send({"type": "send", "room": "announce-news", "id": "2", "body": "y", "ref": "s2"})
        assert (await drain(bob, "ack", ref="s2"))["seq"] >= 1
        await bob.send({"type": "join", "room": "other"})
        j = await drain(bob, "joined")
        assert j["settings"]["read_only"] is False
        await owner.close()
        await bob.close()
    run(go())


@pytest.mark.parametrize("toml,msg", [
    ('[[rooms]]\nread_only = true\n', "needs a prefix"),
    ('[[rooms]]\nprefix = "a b"\n', "rooms.prefix"),
    ('[[rooms]]\nprefix = "a"\nread_only = "yes"\n', "rooms.read_only"),
    ('[[rooms]]\nprefix = "a"\nhistory = -1\n', "rooms.history"),
    ('[[rooms]]\nprefix = "a"\ncolour = "red"\n', "rooms.colour: unknown key"),
    ('[rooms]\nprefix = "a"\n', "expected [[rooms]]"),
])
def test_rooms_config_errors(tmp_path, toml, msg):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    r = run_cli(["-c", str(cfg), "--check-config"])
    assert r.returncode == 2 and msg in r.stderr, r


def test_settings_survive_a_restart(chatd, tmp_path):
    srv = chatd(auth_cfg(storage={"path": str(tmp_path / "chat.db")}))

    async def before():
        owner = await user(srv, "olga", OWNER)
        await owner.join("lobby")
        await mod_cmd(owner, "settings", room="lobby", private=True, read_only=True,
                      topic="quiet please", history=7)
        await owner.close()

    run(before())
    assert srv.stop() == 0
    srv.stopped = False
    srv.start()

    async def after():
        owner = await user(srv, "olga", OWNER)
        j = await owner.join("lobby")
        assert j["settings"] == {"private": True, "read_only": True, "history": 7,
                                 "topic": "quiet please"}, j
        bob = await user(srv, "bob")
        await bob.send({"type": "join", "room": "lobby", "ref": "j"})
        assert (await drain(bob, "error", ref="j"))["code"] == "forbidden"
        await owner.close()
        await bob.close()
    run(after())
