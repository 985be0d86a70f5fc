"""Tokens that stay true for a connection's life (issue 15): token_expiring
before exp, refresh {token} for the same sub (new rooms apply at once), the
close with 4001 at expiry without a refresh, and a SIGHUP that rotates the
secret asking live sessions to refresh."""

import asyncio
import os
import signal
import sys
import time

import pytest

from chatd_helpers import Client, Closed, run, scaled, wait_until
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
from mint_token import mint  # noqa: E402

SECRET = b"token-lifecycle-secret-0123456789abcdef"
WINDOW = 2


def token(sub="alice", ttl=300, secret=SECRET, **claims):
    c = {"sub": sub, "exp": time.time() + ttl}
    c.update(claims)
    return mint(secret, c)


@pytest.fixture
def server(chatd, tmp_path):
    secret_file = tmp_path / "jwt.secret"
    secret_file.write_bytes(SECRET)
    secret_file.chmod(0o600)
    return chatd({"auth": {"mode": "jwt", "jwt_secret_file": str(secret_file), "leeway": 0,
                           "refresh_window": WINDOW}})


async def hello(c, tok):
    await c.send({"type": "hello", "token": tok, "ref": "h"})
    return await c.recv()


def test_expiry_warns_then_closes_with_4001(server):
    async def go():
        c = await Client.connect(server.port)
        t0 = time.time()
        w = await hello(c, token(ttl=WINDOW + 1.5))
        assert w["type"] == "welcome" and w["exp"] > t0, w
        e = await c.expect("token_expiring", timeout=scaled(5))
        assert e["reason"] == "exp" and abs(e["exp"] - w["exp"]) < 0.01, e
        # Sent about WINDOW seconds before exp, not at once.
        assert time.time() - t0 >= 1.0, "warned too early"
        await c.ping_pong()                       # still served until exp
        code, reason = await c.expect_closed(timeout=scaled(6))
        assert code == 4001 and "expired" in reason, (code, reason)
        assert time.time() >= w["exp"] - 0.05
    run(go())
    m = server.metrics()
    assert m.value("chatd_tokens_expired_total") == 1


def test_refresh_keeps_the_session_and_applies_new_rooms(server):
    async def go():
        c = await Client.connect(server.port)
        bob = await Client.connect(server.port)
        await hello(c, token(ttl=WINDOW + 1, rooms=["a", "b"]))
        await hello(bob, token("bob"))
        await c.join("a")
        await c.join("b")
        await bob.join("b")
        await c.expect("presence", name="bob", state="join")
        await c.expect("token_expiring", timeout=scaled(5))
        new_exp = time.time() + 600
        await c.send({"type": "refresh", "token": token(ttl=600, rooms=["a"]), "ref": "r"})
        left = await c.expect("left", timeout=scaled(3))
        assert left["room"] == "b" and left["reason"] == "token", left
        r = await c.expect("refreshed", timeout=scaled(3))
        assert r["ref"] == "r" and abs(r["exp"] - new_exp) < 2, r
        p = await bob.expect("presence")
        assert p["name"] == "alice" and p["state"] == "leave"
        # Past the old exp: still open, and the narrower rooms hold.
        await asyncio.sleep(2.0)
        await c.ping_pong()
        await c.send({"type": "join", "room": "b", "ref": "j"})
        await c.expect_error("forbidden", ref="j")
        await c.send({"type": "send", "room": "a", "id": "1", "body": "still here", "ref": "s"})
        await c.expect("ack")
        await c.close()
        await bob.close()
    run(go())
    assert server.metrics().value("chatd_tokens_refreshed_total") == 1


def test_refresh_with_another_sub_is_refused(server):
    async def go():
        c = await Client.connect(server.port)
        await hello(c, token(ttl=60))
        await c.send({"type": "refresh", "token": token("mallory", ttl=600), "ref": "r"})
        await c.expect_error("forbidden", ref="r")
        await c.send({"type": "refresh", "token": token(ttl=600, secret=b"x" * 40), "ref": "r2"})
        await c.expect_error("not_authenticated", ref="r2")
        await c.send({"type": "refresh", "token": token(ttl=-10), "ref": "r3"})
        e = await c.expect_error("not_authenticated", ref="r3")
        assert "expired" in e["message"]
        await c.ping_pong()                       # the session keeps its own token
        await c.close()
    run(go())
    assert "refresh refused: sub mallory is not alice" in server.log_text()


def test_token_without_exp_is_never_closed(server):
    async def go():
        c = await Client.connect(server.port)
        w = await hello(c, mint(SECRET, {"sub": "alice"}))
        assert w["type"] == "welcome" and "exp" not in w
        await c.expect_silence(0.5)
        await c.close()
    run(go())


def test_rotation_asks_live_sessions_to_refresh(server, tmp_path):
    new_secret = b"the-rotated-secret-0123456789abcdefgh"

    async def go():
        old = [await Client.connect(server.port) for _ in range(3)]
        for i, c in enumerate(old):
            await hello(c, token("u%d" % i, ttl=600))
        (tmp_path / "jwt.secret").write_bytes(new_secret)
        server.signal(signal.SIGHUP)
        for c in old:
            e = await c.expect("token_expiring", timeout=scaled(5))
            assert e["reason"] == "key_rotated" and e["in"] <= WINDOW, e
        # One refreshes with a token of the new secret and stays.
        await old[0].send({"type": "refresh", "token": token("u0", ttl=600, secret=new_secret), "ref": "r"})
        await old[0].expect("refreshed")
        # A token of the old secret is no refresh any more.
        await old[1].send({"type": "refresh", "token": token("u1", ttl=600), "ref": "r"})
        await old[1].expect_error("not_authenticated", ref="r")
        for c in old[1:]:
            code, _ = await c.expect_closed(timeout=scaled(WINDOW + 3))
            assert code == 4001
        await old[0].expect_silence(0.5)
        await old[0].ping_pong()
        await old[0].close()
    run(go())


def test_reload_with_the_same_secret_disturbs_nobody(server):
    async def go():
        c = await Client.connect(server.port)
        await hello(c, token(ttl=600))
        server.signal(signal.SIGHUP)
        await asyncio.to_thread(wait_until, lambda: "configuration reloaded" in server.log_text(),
                                scaled(5), what="reload")
        await c.expect_silence(0.5)
        await c.close()
    run(go())


def test_many_sessions_expire_through_one_timer(server):
    """200 sessions with staggered expiries: each warned once and closed
    once, in order, while the others keep being served."""
    async def go():
        cs = []
        for i in range(200):
            c = await Client.connect(server.port)
            w = await hello(c, token("m%d" % i, ttl=WINDOW + 1 + (i % 4) * 0.25))
            assert w["type"] == "welcome"
            cs.append(c)
        keep = await Client.connect(server.port)
        await hello(keep, token("keeper", ttl=600))
        async def warned_then_closed(c):
            await c.expect("token_expiring", timeout=scaled(10))
            return await c.expect_closed(timeout=scaled(10))
        codes = await asyncio.gather(*[warned_then_closed(c) for c in cs], return_exceptions=True)
        assert all(not isinstance(x, Exception) and x[0] == 4001 for x in codes), codes[:3]
        await keep.ping_pong()
        await keep.close()
    run(go())
    assert server.metrics().value("chatd_tokens_expired_total") == 200
