"""[auth] mode = "jwt" and [tls]: tokens, room claims, reload of the secret, wss:// and https://."""

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time

import pytest
import websockets

from chatd_helpers import Client, run, scaled, wait_until
from conftest import REPO, run_cli

sys.path.insert(0, os.path.join(REPO, "tools"))
from mint_token import mint  # noqa: E402

SECRET = b"test-secret-\x01-not-for-production"


def token(sub="alice", secret=SECRET, ttl=300, alg="HS256", **claims):
    now = int(time.time())
    c = {"sub": sub, "exp": now + ttl}
    c.update(claims)
    return mint(secret, c, alg)


@pytest.fixture
def jwt_server(chatd, tmp_path):
    secret_file = tmp_path / "jwt.secret"
    secret_file.write_bytes(SECRET + b"\n")          # a trailing newline is not part of it
    secret_file.chmod(0o600)
    return chatd({"auth": {"mode": "jwt", "jwt_secret_file": str(secret_file), "leeway": 1},
                  "server": {"handshake_timeout": 3}})


async def hello_token(c, tok, ref="h"):
    await c.send({"type": "hello", "token": tok, "ref": ref})
    return await c.recv()


def test_valid_token_names_the_session(jwt_server):
    async def go():
        c = await Client.connect(jwt_server.port)
        w = await hello_token(c, token("alice"))
        assert w["type"] == "welcome" and w["name"] == "alice" and w["ref"] == "h", w
        await c.join("anything")
        await c.close()
    run(go())


@pytest.mark.parametrize("bad", ["expired", "future", "wrong_secret", "alg_none", "alg_hs512",
                                 "garbage", "no_sub", "bad_sub", "missing"])
def test_bad_tokens_are_not_authenticated(jwt_server, bad):
    now = int(time.time())
    toks = {
        "expired": token(ttl=-60),
        "future": mint(SECRET, {"sub": "alice", "nbf": now + 600, "exp": now + 900}),
        "wrong_secret": token(secret=b"other"),
        "alg_none": mint(SECRET, {"sub": "alice", "exp": now + 60}, "none"),
        "alg_hs512": token().replace(
            token().split(".")[0],
            __import__("base64").urlsafe_b64encode(b'{"alg":"HS512","typ":"JWT"}').rstrip(b"=").decode()),
        "garbage": "not.a.token",
        "no_sub": mint(SECRET, {"exp": now + 60}),
        "bad_sub": token(sub="bad name!"),
        "missing": None,
    }

    async def go():
        c = await Client.connect(jwt_server.port)
        if toks[bad] is None:
            await c.send({"type": "hello", "name": "alice", "ref": "h"})
            e = await c.recv()
        else:
            e = await hello_token(c, toks[bad])
        assert e["type"] == "error" and e["code"] == "not_authenticated" and e["ref"] == "h", e
        assert SECRET.decode("latin-1") not in json.dumps(e)
        # still open: a good token works afterwards
        w = await hello_token(c, token("alice"))
        assert w["type"] == "welcome", w
        await c.close()
    run(go())
    assert SECRET.decode("latin-1") not in jwt_server.log_text()


def test_three_failed_hellos_close_1008(jwt_server):
    async def go():
        c = await Client.connect(jwt_server.port)
        for i in range(3):
            e = await hello_token(c, token(secret=b"nope"), ref=str(i))
            assert e["code"] == "not_authenticated"
        code, _ = await c.expect_closed(scaled(3))
        assert code == 1008
    run(go())


def test_no_hello_closes_1008_after_handshake_timeout(jwt_server):
    async def go():
        c = await Client.connect(jwt_server.port)
        e = await hello_token(c, token(ttl=-100))
        assert e["code"] == "not_authenticated"
        t0 = time.monotonic()
        code, _ = await c.expect_closed(scaled(6))
        assert code == 1008 and time.monotonic() - t0 <= scaled(4)
    run(go())


def test_rooms_claim_limits_joins(jwt_server):
    async def go():
        c = await Client.connect(jwt_server.port)
        await hello_token(c, token("bob", rooms=["lobby", "team-*"]))
        await c.join("lobby")
        await c.join("team-red")
        await c.send({"type": "join", "room": "secret", "ref": "j"})
        await c.expect_error("forbidden", ref="j")
        await c.send({"type": "join", "room": "team", "ref": "k"})     # "team-*" needs the dash
        await c.expect_error("forbidden", ref="k")
        await c.close()
    run(go())


def test_reload_changes_the_secret_live(jwt_server, tmp_path):
    new_secret = b"rotated-secret-of-at-least-32-bytes"

    async def go():
        alice = await Client.connect(jwt_server.port)
        await hello_token(alice, token("alice"))
        (tmp_path / "jwt.secret").write_bytes(new_secret)
        jwt_server.signal(signal.SIGHUP)
        await asyncio.to_thread(wait_until, lambda: "configuration reloaded" in jwt_server.log_text(),
                                scaled(5), what="reload")
        old = await Client.connect(jwt_server.port)
        e = await hello_token(old, token("bob"))
        assert e["code"] == "not_authenticated"
        new = await Client.connect(jwt_server.port)
        w = await hello_token(new, token("bob", secret=new_secret))
        assert w["type"] == "welcome"
        # A session verified with the old secret is asked to refresh (issue 15)
        # and keeps going meanwhile.
        e = await alice.expect("token_expiring")
        assert e["reason"] == "key_rotated", e
        await alice.ping_pong()
        for c in (old, new, alice):
            await c.close()
    run(go())


def test_missing_secret_file_is_a_config_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[auth]\nmode = "jwt"\njwt_secret_file = "%s"\n' % (tmp_path / "nope"))
    r = run_cli(["-c", str(cfg), "--check-config"])
    assert r.returncode == 2 and "auth.jwt_secret_file" in r.stderr and "cannot read" in r.stderr, r


# ---- TLS -------------------------------------------------------------------

def make_cert(d):
    key, cert = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def test_wss_and_https_on_one_port(chatd, tmp_path):
    cert, key = make_cert(tmp_path)
    srv = chatd({"tls": {"cert": cert, "key": key}}, start=False)
    srv.health_scheme = "https"
    ctx = ssl.create_default_context(cafile=cert)
    # The fixture probes /healthz over plain HTTP; wait for the port instead.
    srv.proc = subprocess.Popen([srv_bin(), "-c", srv.config_path], stdout=open(srv.log_path, "ab"),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def go():
        deadline = time.monotonic() + scaled(10)
        while True:
            try:
                ws = await websockets.connect("wss://127.0.0.1:%d/ws" % srv.port, ssl=ctx,
                                              subprotocols=["chat.v1"])
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        assert ws.subprotocol == "chat.v1"
        c = Client(ws)
        await c.hello("alice")
        await c.join("secure")
        await c.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        assert b'"status":"ok"' in data
    run(go())


def srv_bin():
    from conftest import chatd_bin
    return chatd_bin()


def test_unreadable_tls_key_exits_2(tmp_path):
    cert, key = make_cert(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tls]\ncert = "%s"\nkey = "%s"\n' % (cert, tmp_path / "missing-key.pem"))
    r = run_cli(["-c", str(cfg)])
    assert r.returncode == 2, r
    assert "tls.key" in r.stderr and "cannot read" in r.stderr
