"""chatctl (tools/chatctl), the operator CLI, against the real binary's API."""

import json
import os
import subprocess

import pytest

from api_helpers import KEY, api, api_config, write_keys
from chatd_helpers import free_port, run, scaled

HERE = os.path.dirname(os.path.abspath(__file__))
CHATCTL = os.path.abspath(os.path.join(HERE, "..", "..", "tools", "chatctl"))


def chatctl(args, url=None, key_file=None, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_API")}
    if url:
        env["CHATD_API_URL"] = url
    if key_file:
        env["CHATD_API_KEY_FILE"] = key_file
    env.update(env_extra or {})
    return subprocess.run(["/usr/bin/python3", CHATCTL] + args, capture_output=True, text=True,
                          timeout=scaled(20), env=env)


@pytest.fixture
def ctl(chatd, tmp_path):
    keys = write_keys(tmp_path, [KEY])
    srv = chatd(api_config(keys))
    url = "http://127.0.0.1:%d" % srv.api_port
    return srv, (lambda args, **kw: chatctl(args, url=kw.pop("url", url),
                                            key_file=kw.pop("key_file", keys), **kw))


def test_publish_online_stats_members_history(ctl):
    srv, run_ctl = ctl

    async def go():
        a = await srv.client("alice")
        await a.join("lobby")
        r = run_ctl(["publish", "lobby", "maintenance at 22:00"])
        assert r.returncode == 0, r
        assert r.stdout.strip() == "published to lobby as seq 1"
        await a.expect("message", body="maintenance at 22:00", **{"from": "$system"})
        r = run_ctl(["--json", "publish", "lobby", "again", "--from", "ops", "--id", "x1"])
        assert r.returncode == 0 and json.loads(r.stdout) == {"room": "lobby", "seq": 2}
        await a.expect("message", body="again", **{"from": "ops"})

        r = run_ctl(["online"])
        assert r.returncode == 0 and r.stdout.split("\n")[:2] == ["alice", "1 online"], r.stdout
        r = run_ctl(["--json", "online"])
        assert json.loads(r.stdout) == {"names": ["alice"], "count": 1}
        r = run_ctl(["members", "lobby"])
        assert r.returncode == 0 and "alice" in r.stdout and "1 in lobby" in r.stdout
        r = run_ctl(["history", "lobby", "--limit", "1"])
        assert r.returncode == 0 and "ops" in r.stdout and "again" in r.stdout
        assert "maintenance" not in r.stdout
        r = run_ctl(["--json", "history", "lobby", "--after", "0"])
        assert [m["seq"] for m in json.loads(r.stdout)["messages"]] == [1, 2]
        r = run_ctl(["stats"])
        assert r.returncode == 0 and "sessions" in r.stdout and "queue_bytes" in r.stdout
        st = json.loads(run_ctl(["--json", "stats"]).stdout)
        assert st["sessions"] == 1 and st["connections"] == 1

        r = run_ctl(["dm", "alice", "hi there"])
        assert r.returncode == 0, r
        await a.expect("direct", body="hi there")
        r = run_ctl(["kick", "alice", "--reason", "bye now", "--code", "4009"])
        assert r.returncode == 0 and "1 session closed" in r.stdout, r
        assert await a.expect_closed() == (4009, "bye now")
    run(go())


def test_exit_codes(ctl, tmp_path):
    srv, run_ctl = ctl
    # refused: bad input, not found
    r = run_ctl(["publish", "bad room!", "x"])
    assert r.returncode == 1 and "bad_request" in r.stderr, r
    r = run_ctl(["dm", "nobody", "x"])
    assert r.returncode == 1 and "not_found" in r.stderr
    # not authenticated
    wrong = write_keys(tmp_path, ["wrong-key-000000000000000000"], name="wrong.keys")
    r = run_ctl(["stats"], key_file=wrong)
    assert r.returncode == 4 and "not_authenticated" in r.stderr
    # unavailable: nothing listens
    r = run_ctl(["stats"], url="http://127.0.0.1:%d" % free_port())
    assert r.returncode == 3 and "cannot reach" in r.stderr
    # usage
    r = chatctl(["stats"])
    assert r.returncode == 2 and "--key-file" in r.stderr
    r = run_ctl(["frobnicate"])
    assert r.returncode == 2
    r = run_ctl(["--json", "dm", "nobody", "x"])
    assert r.returncode == 1 and json.loads(r.stderr)["exit"] == 1


def test_flags_override_the_environment(ctl, tmp_path):
    srv, _ = ctl
    keys = write_keys(tmp_path, [KEY], name="flag.keys")
    url = "http://127.0.0.1:%d" % srv.api_port
    r = chatctl(["--url", url, "--key-file", keys, "stats"],
                url="http://127.0.0.1:%d" % free_port(), key_file="/nonexistent")
    assert r.returncode == 0, r
