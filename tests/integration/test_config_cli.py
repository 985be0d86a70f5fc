"""CLI, config validation, SIGHUP reload, log formats."""

import asyncio
import json
import os
import re
import signal
import time

import pytest

from chatd_helpers import _toml_value, free_port, http_get, raw_upgrade, run, scaled, toml_dumps, wait_until
from conftest import SAMPLE_CONFIG, run_cli, sanitizer_report

# Every documented key with a valid, non-default value.
FULL_CONFIG = {
    "server": {
        "listen": "127.0.0.1", "port": 18080, "node_id": "n1", "handshake_timeout": 2.5,
        "shutdown_timeout": 1, "max_connections": 500, "max_connections_per_ip": 10,
        "allowed_origins": ["http://a.example", "https://b.example"],
    },
    "heartbeat": {"interval": 10, "timeout": 30.5},
    "limits": {
        "max_message_bytes": 2048, "max_frame_bytes": 8192, "send_queue_messages": 100,
        "send_queue_bytes": 100000, "total_queue_bytes": 1000000, "slow_consumer": "drop_oldest",
        "rate": 5.5, "burst": 10, "sessions_per_name": 3,
    },
    "history": {"messages_per_room": 50, "dedup_window": 20},
    "log": {"level": "debug", "format": "json"},
}


def check_clean(proc):
    found = sanitizer_report(proc.stdout + proc.stderr)
    assert not found, "sanitizer report: %s\n%s" % (found, proc.stderr)


def test_version():
    p = run_cli(["--version"])
    check_clean(p)
    assert p.returncode == 0, p.stderr
    assert re.search(r"\d+\.\d+\.\d+", p.stdout + p.stderr), (p.stdout, p.stderr)


def test_help():
    p = run_cli(["--help"])
    check_clean(p)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    for opt in ("-c", "--check-config", "--version", "--help"):
        assert opt in out, "--help does not mention %s:\n%s" % (opt, out)


def test_unknown_option_fails():
    p = run_cli(["--no-such-option"])
    check_clean(p)
    assert p.returncode != 0


def test_check_config_sample():
    assert os.path.isfile(SAMPLE_CONFIG), "conf/chatd.toml is missing"
    p = run_cli(["--check-config", "-c", SAMPLE_CONFIG])
    check_clean(p)
    assert p.returncode == 0, p.stderr


def test_check_config_every_key(tmp_path):
    path = tmp_path / "full.toml"
    path.write_text(toml_dumps(FULL_CONFIG))
    p = run_cli(["--check-config", "-c", str(path)])
    check_clean(p)
    assert p.returncode == 0, p.stderr


def test_check_config_empty_file_is_valid(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("# nothing: every key is optional\n")
    p = run_cli(["-c", str(path), "--check-config"])
    assert p.returncode == 0, p.stderr


def test_check_config_without_file_uses_valid_defaults():
    p = run_cli(["--check-config"])
    check_clean(p)
    assert p.returncode == 0, p.stderr


def test_c_without_argument_fails():
    p = run_cli(["-c"])
    check_clean(p)
    assert p.returncode != 0


def test_node_id_defaults_to_hostname(chatd):
    import socket
    srv = chatd({"server": {"node_id": None}})

    async def main():
        c = await srv.client()
        w = await c.hello("alice")
        await c.close()
        return w

    w = run(main())
    assert w["node"] == socket.gethostname(), w


def test_check_config_does_not_start_a_server(tmp_path):
    port = free_port()
    path = tmp_path / "c.toml"
    path.write_text("[server]\nport = %d\n" % port)
    t0 = time.monotonic()
    p = run_cli(["--check-config", "-c", str(path)])
    assert p.returncode == 0
    assert time.monotonic() - t0 < scaled(5)
    with pytest.raises(OSError):
        http_get(port, "/healthz", timeout=1)


def expect_config_error(tmp_path, text, line, key, check=True):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    args = (["--check-config"] if check else []) + ["-c", str(path)]
    p = run_cli(args)
    check_clean(p)
    assert p.returncode == 2, "exit %d, stderr:\n%s" % (p.returncode, p.stderr)
    want = "%s:%s: %s" % (path, line, key) if line is not None else None
    err = p.stderr
    if want:
        assert want in err, "expected %r in stderr:\n%s" % (want, err)
    else:
        assert str(path) in err and key in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, "expected one clear line, got:\n%s" % err
    return err


def test_unknown_key(tmp_path):
    expect_config_error(tmp_path, "[server]\nport = 8080\nprot = 8081\n", 3, "server.prot")


def test_unknown_key_at_the_end_of_a_later_table(tmp_path):
    expect_config_error(tmp_path, "[server]\nport = 8080\n\n[limits]\nrate = 5\nburts = 10\n", 6,
                        "limits.burts")


def test_unknown_table(tmp_path):
    expect_config_error(tmp_path, "[server]\nport = 8080\n[bogus]\nx = 1\n", 3, "bogus")


def test_unknown_top_level_key(tmp_path):
    expect_config_error(tmp_path, "port = 8080\n", 1, "port")


def test_invalid_config_without_check_exits_2(tmp_path):
    expect_config_error(tmp_path, "[limits]\nrate = -1\n", 2, "limits.rate", check=False)


BAD_VALUES = [
    ("server", "port", 70000),
    ("server", "port", -1),
    ("server", "port", "8080"),
    ("server", "port", 80.5),
    ("server", "listen", 5),
    ("server", "node_id", 1),
    ("server", "handshake_timeout", 0),
    ("server", "handshake_timeout", -1.5),
    ("server", "handshake_timeout", "10"),
    ("server", "shutdown_timeout", -1),
    ("server", "max_connections", 0),
    ("server", "max_connections_per_ip", -1),
    ("server", "max_pending_per_ip", -1),
    ("server", "max_pending_per_ip", 1.5),
    ("server", "header_timeout", 0),
    ("server", "header_timeout", "5"),
    ("api", "listen", 1),
    ("api", "port", 70000),
    ("api", "allow", "127.0.0.1"),
    ("api", "allow", ["10.0.0.0/33"]),
    ("api", "allow", ["nonsense"]),
    ("api", "allow", ["::1/129"]),
    ("api", "allow", ["10.0.0.0/"]),
    ("api", "allow", ["10.0.0.0/8x"]),
    ("server", "allowed_origins", "http://a.example"),
    ("server", "allowed_origins", [1, 2]),
    ("heartbeat", "interval", 0),
    ("heartbeat", "timeout", -3),
    ("limits", "max_message_bytes", 0),
    ("limits", "max_frame_bytes", 10),
    ("limits", "send_queue_messages", 0),
    ("limits", "send_queue_bytes", 0),
    ("limits", "total_queue_bytes", 0),
    ("limits", "slow_consumer", "maybe"),
    ("limits", "slow_consumer", 1),
    ("limits", "rate", 0),
    ("limits", "rate", -5),
    ("limits", "rate", "fast"),
    ("limits", "burst", 0.5),
    ("limits", "sessions_per_name", 0),
    ("history", "messages_per_room", -1),
    ("history", "dedup_window", -1),
    ("log", "level", "loud"),
    ("log", "format", "xml"),
    ("log", "format", True),
]


@pytest.mark.parametrize("section,key,value", BAD_VALUES, ids=lambda v: str(v))
def test_bad_value(tmp_path, section, key, value):
    text = "# a comment line\n[%s]\n%s = %s\n" % (section, key, _toml_value(value))
    expect_config_error(tmp_path, text, 3, "%s.%s" % (section, key))


def test_heartbeat_timeout_not_above_interval(tmp_path):
    path = tmp_path / "hb.toml"
    path.write_text("[heartbeat]\ninterval = 10\ntimeout = 5\n")
    p = run_cli(["--check-config", "-c", str(path)])
    assert p.returncode == 2, p.stderr
    assert str(path) in p.stderr and "heartbeat." in p.stderr, p.stderr


def test_toml_syntax_error(tmp_path):
    path = tmp_path / "syntax.toml"
    path.write_text("[server]\nport = 8080\nlisten = \"127.0.0.1\n")
    p = run_cli(["--check-config", "-c", str(path)])
    check_clean(p)
    assert p.returncode == 2, p.stderr
    assert re.search(re.escape(str(path)) + r":\d+", p.stderr), p.stderr


def test_duplicate_key_is_an_error(tmp_path):
    path = tmp_path / "dup.toml"
    path.write_text("[server]\nport = 8080\nport = 8081\n")
    p = run_cli(["--check-config", "-c", str(path)])
    assert p.returncode == 2, p.stderr
    assert str(path) in p.stderr


def test_missing_config_file(tmp_path):
    path = tmp_path / "does-not-exist.toml"
    p = run_cli(["--check-config", "-c", str(path)])
    check_clean(p)
    assert p.returncode == 2, p.stderr
    assert str(path) in p.stderr, p.stderr


# ---------------------------------------------------------------------------
# SIGHUP


async def limited_pattern(srv, pings=5):
    """Fresh session: hello + `pings` pings -> list of reply kinds."""
    c = await srv.client("probe%d" % int(time.monotonic() * 1e6))
    try:
        for i in range(pings):
            await c.send({"type": "ping", "ref": str(i)})
        return [m.get("code", m["type"]) for m in await c.recv_n(pings)]
    finally:
        await c.close()


def test_sighup_reload_changes_rate_live(chatd):
    srv = chatd({"limits": {"rate": 10000, "burst": 10000}})
    open_before = []

    async def main():
        assert await limited_pattern(srv) == ["pong"] * 5
        old = await srv.client("old")
        open_before.append(old)

        srv.rewrite({"limits": {"rate": 0.1, "burst": 3}})
        srv.signal(signal.SIGHUP)
        deadline = time.monotonic() + scaled(5)
        while True:
            pat = await limited_pattern(srv)
            if pat != ["pong"] * 5:
                break
            assert time.monotonic() < deadline, "SIGHUP did not apply limits.rate/burst"
            await asyncio.sleep(0.1)
        # burst 3: hello + 2 pings pass
        assert pat == ["pong", "pong", "rate_limited", "rate_limited", "rate_limited"], pat
        assert srv.alive()
        # sessions opened before the reload survive it
        await old.ping_pong()

        # an invalid file on reload: logged, old config kept, server keeps running
        log_len = len(srv.log_text())
        srv.write_config(text="[limits]\nrate = -5\n")
        srv.signal(signal.SIGHUP)
        await asyncio.to_thread(wait_until, lambda: "limits.rate" in srv.log_text()[log_len:], scaled(5), 0.05,
                                "the reload error in the log")
        assert "%s:2: limits.rate" % srv.config_path in srv.log_text()[log_len:], srv.log_tail(5)
        st, _, _ = await asyncio.to_thread(http_get, srv.port, "/healthz")
        assert st == 200
        assert await limited_pattern(srv) == ["pong", "pong", "rate_limited", "rate_limited", "rate_limited"]
        await old.ping_pong()

        # a valid file again: applied
        srv.rewrite({"limits": {"rate": 10000, "burst": 10000}})
        srv.signal(signal.SIGHUP)
        deadline = time.monotonic() + scaled(5)
        while await limited_pattern(srv) != ["pong"] * 5:
            assert time.monotonic() < deadline, "second SIGHUP not applied"
            await asyncio.sleep(0.1)
        await old.close()

    run(main())


def test_sighup_changes_origins_and_log_level_live(chatd):
    srv = chatd({"server": {"allowed_origins": []}, "log": {"level": "info"}})
    assert raw_upgrade(srv.port, origin="https://evil.example")[0] == 101
    srv.rewrite({"server": {"allowed_origins": ["https://chat.example"]}, "log": {"level": "debug"}})
    log_len = len(srv.log_text())
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in srv.log_text()[log_len:], scaled(5), what="reload")
    assert raw_upgrade(srv.port, origin="https://evil.example")[0] == 403
    assert raw_upgrade(srv.port, origin="https://chat.example")[0] == 101

    async def main():
        c = await srv.client("alice", origin="https://chat.example")
        await c.join("debugged")
        await c.close()

    run(main())
    # debug lines (joins) appear only after the reload raised the level
    assert " debug " in srv.log_text()[log_len:] and "joined debugged" in srv.log_text()[log_len:]
    assert "joined" not in srv.log_text()[:log_len]


def test_sighup_with_unknown_key_keeps_running(chatd):
    srv = chatd()
    log_len = len(srv.log_text())
    srv.write_config(text="[server]\nport = %d\nprot = 1\n" % srv.port)
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "server.prot" in srv.log_text()[log_len:], scaled(5), what="the reload error in the log")
    assert srv.alive()
    assert http_get(srv.port, "/healthz")[0] == 200


# ---------------------------------------------------------------------------
# logs


def _activity(srv):
    async def main():
        a = await srv.client("alice")
        b = await srv.client("bob")
        await a.join("r")
        await b.join("r")
        await a.send({"type": "send", "room": "r", "id": "1", "body": "quote \" and \\ and \n newline"})
        await a.send_text("not json")
        await a.send({"type": "hello", "name": "x\"y"})
        await a.close()
        await b.close()
        return a.session, b.session

    sessions = run(main())
    r = srv.raw()
    r.hello("rawbin")
    r.send_frame(2, b"\x00")       # binary -> 1003
    r.wait_closed()
    return sessions


def test_json_log_every_line_is_an_object(chatd):
    srv = chatd({"log": {"format": "json", "level": "debug"}})
    sessions = _activity(srv)
    assert srv.stop() == 0
    lines = [l for l in srv.log_text().splitlines() if l.strip()]
    assert lines, "no log output at all"
    seen_sessions = set()
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError("not a JSON line: %r" % line)
        assert isinstance(obj, dict), line
        assert isinstance(obj.get("level"), str) and isinstance(obj.get("msg"), str), line
        if "session" in obj:
            seen_sessions.add(obj["session"])
    for s in sessions:
        assert s in seen_sessions or str(s) in {str(x) for x in seen_sessions}, \
            "no log line carries session %r" % s


def test_text_log_names_sessions(chatd):
    srv = chatd({"log": {"format": "text", "level": "info"}})
    sessions = _activity(srv)
    assert srv.stop() == 0
    text = srv.log_text()
    for s in sessions:
        assert s in text, "session id %r never appears in the log" % s


def test_log_level_error_is_quiet(chatd):
    srv = chatd({"log": {"format": "json", "level": "error"}})
    _activity(srv)
    assert srv.stop() == 0
    for line in srv.log_text().splitlines():
        if line.strip():
            obj = json.loads(line)
            assert obj["level"] in ("error", "fatal", "crit", "critical"), line


def test_tcp_nodelay_false_still_chats_and_bad_value_is_refused(chatd, tmp_path):
    srv = chatd({"server": {"tcp_nodelay": False}})

    async def main():
        a = await srv.client("alice")
        b = await srv.client("bob")
        await a.join("r")
        await b.join("r")
        await a.expect("presence")
        for i in range(20):
            await a.send({"type": "send", "room": "r", "id": str(i), "body": "burst %d" % i})
        seqs = [m["seq"] for m in await b.recv_n(20)]
        assert seqs == list(range(1, 21))
        await a.close()
        await b.close()

    run(main())
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\ntcp_nodelay = \"yes\"\n")
    r = run_cli(["-c", str(bad), "--check-config"])
    assert r.returncode == 2 and "server.tcp_nodelay: expected true or false" in r.stderr, r
