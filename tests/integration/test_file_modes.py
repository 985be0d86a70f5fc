"""Files that hold secrets or history (issue 17, point 4): a JWT secret file
that others can rewrite is refused (at --check-config, at start and at
reload), one that others can read is warned about, a secret shorter than 32
bytes is refused, and the SQLite database and its WAL are created 0600
whatever the umask."""

import os
import signal
import stat
import sys
import time

import pytest

from chatd_helpers import Client, run, scaled, wait_until
from conftest import REPO, run_cli

sys.path.insert(0, os.path.join(REPO, "tools"))
from mint_token import mint  # noqa: E402

SECRET = b"file-modes-test-secret-0123456789abcdef"


def jwt_config(tmp_path, secret_file):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nport = 0\n[auth]\nmode = "jwt"\njwt_secret_file = "%s"\n' % secret_file)
    return str(cfg)


def secret_file(tmp_path, mode, data=SECRET + b"\n"):
    f = tmp_path / "jwt.secret"
    f.write_bytes(data)
    f.chmod(mode)
    return f


@pytest.mark.parametrize("mode,who", [(0o620, "group"), (0o602, "others"), (0o666, "others")])
def test_secret_file_writable_by_others_is_refused(tmp_path, mode, who):
    f = secret_file(tmp_path, mode)
    cfg = jwt_config(tmp_path, f)
    for args in (["--check-config"], []):
        r = run_cli(["-c", cfg] + args)
        assert r.returncode == 2, r
        assert "auth.jwt_secret_file" in r.stderr and ("writable by " + who) in r.stderr, r.stderr
        assert "%04o" % mode in r.stderr and "mint tokens" in r.stderr, r.stderr
        assert SECRET.decode() not in r.stderr + r.stdout


def test_secret_file_readable_by_others_is_a_warning(tmp_path):
    cfg = jwt_config(tmp_path, secret_file(tmp_path, 0o644))
    r = run_cli(["-c", cfg, "--check-config"])
    assert r.returncode == 0, r
    assert "readable by others" in r.stderr and "0644" in r.stderr, r.stderr
    cfg = jwt_config(tmp_path, secret_file(tmp_path, 0o640))
    r = run_cli(["-c", cfg, "--check-config"])
    assert r.returncode == 0 and "readable by others" not in r.stderr, r


@pytest.mark.parametrize("how", ["file", "inline"])
def test_short_secret_is_refused(tmp_path, how):
    short = b"x" * 31
    if how == "file":
        cfg = jwt_config(tmp_path, secret_file(tmp_path, 0o600, short + b"\n"))
        key = "auth.jwt_secret_file"
    else:
        cfg = str(tmp_path / "c.toml")
        (tmp_path / "c.toml").write_text('[auth]\nmode = "jwt"\njwt_secret = "%s"\n' % short.decode())
        key = "auth.jwt_secret"
    r = run_cli(["-c", cfg, "--check-config"])
    assert r.returncode == 2, r
    assert key in r.stderr and "31 bytes" in r.stderr and "at least 32" in r.stderr, r.stderr
    # 32 bytes is enough
    if how == "file":
        secret_file(tmp_path, 0o600, b"x" * 32)
    else:
        (tmp_path / "c.toml").write_text('[auth]\nmode = "jwt"\njwt_secret = "%s"\n' % ("x" * 32))
    r = run_cli(["-c", cfg, "--check-config"])
    assert r.returncode == 0, r


def test_reload_refuses_a_secret_file_made_writable(chatd, tmp_path):
    f = secret_file(tmp_path, 0o600)
    srv = chatd({"auth": {"mode": "jwt", "jwt_secret_file": str(f)}})
    f.write_bytes(b"an-attacker-wrote-this-secret-0123456789\n")
    f.chmod(0o666)
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in srv.log_text(), scaled(5), what="reload refused")
    assert "writable by others" in srv.log_text()

    async def go():
        c = await Client.connect(srv.port)
        # the attacker's secret does not mint anything; the old one still works
        tok = mint(b"an-attacker-wrote-this-secret-0123456789", {"sub": "eve", "exp": int(time.time()) + 60})
        await c.send({"type": "hello", "token": tok, "ref": "h"})
        e = await c.recv()
        assert e["type"] == "error" and e["code"] == "not_authenticated", e
        tok = mint(SECRET, {"sub": "alice", "exp": int(time.time()) + 60})
        await c.send({"type": "hello", "token": tok, "ref": "h2"})
        w = await c.recv()
        assert w["type"] == "welcome" and w["name"] == "alice", w
        await c.close()
    run(go())


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_database_and_wal_are_created_0600(chatd, tmp_path, umask):
    db = tmp_path / "chat.db"
    srv = chatd({"storage": {"path": str(db)}}, start=False)
    srv.preexec = lambda: os.umask(umask)
    srv.start()

    async def go():
        c = await srv.client("alice")
        await c.join("r")
        await c.send({"type": "send", "room": "r", "id": "m1", "body": "private", "ref": "s"})
        await c.expect("ack", ref="s")
        await c.close()
    run(go())
    wal = str(db) + "-wal"
    assert os.path.exists(wal), os.listdir(tmp_path)
    assert mode(db) == 0o600, oct(mode(db))
    assert mode(wal) == 0o600, oct(mode(wal))
    for extra in (str(db) + "-shm", str(db) + "-journal"):
        if os.path.exists(extra):
            assert mode(extra) == 0o600, (extra, oct(mode(extra)))


def test_existing_database_readable_by_others_is_warned_about(chatd, tmp_path):
    db = tmp_path / "chat.db"
    srv = chatd({"storage": {"path": str(db)}})
    assert srv.stop() == 0
    db.chmod(0o644)
    srv.stopped = False
    srv.start()
    assert "readable or writable by group/others (mode 0644)" in srv.log_text()
    assert mode(db) == 0o644        # the operator's file: reported, not changed
