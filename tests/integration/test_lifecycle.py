"""Heartbeats, graceful shutdown on SIGTERM / SIGINT, open-files limit."""

import asyncio
import json
import signal
import socket
import time

import pytest

from chatd_helpers import OP_TEXT, http_get, raw_upgrade, run, scaled, wait_until


# ---------------------------------------------------------------------------
# heartbeats


def test_heartbeat_evicts_peer_that_never_answers_pings(chatd):
    interval, timeout = 1, 3
    srv = chatd({"heartbeat": {"interval": interval, "timeout": timeout}})

    async def main():
        a = await srv.client("alice")          # websockets answers pings by itself
        try:
            await a.join("r")
            mute = srv.raw()
            mute.hello("mute")
            mute.send_json({"type": "join", "room": "r"})
            t_last = time.monotonic()          # the last thing `mute` ever sends
            await a.expect("presence", name="mute", state="join")
            kind, code, reason = await asyncio.to_thread(
                mute.wait_closed, timeout + interval + scaled(5), False)
            elapsed = time.monotonic() - t_last
            assert mute.pings >= 1, "the server never pinged"
            assert elapsed >= timeout - 0.25, "evicted after %.2fs, before heartbeat.timeout=%s" % (elapsed, timeout)
            assert elapsed <= timeout + interval + scaled(1.5), "evicted only after %.2fs" % elapsed
            # the room hears about it; alice, idle for as long but answering pings, stays
            await a.expect("presence", name="mute", state="leave")
            await a.ping_pong()
            mem = await a.request({"type": "members", "room": "r"}, "members")
            assert mem["names"] == ["alice"]
        finally:
            await a.close()

    run(main())
    m = srv.metrics()
    assert m.value("chatd_heartbeat_evictions_total") == 1
    wait_until(lambda: srv.metrics().value("chatd_connections") == 0, scaled(5), what="connections == 0")


def test_pongs_alone_keep_a_session_alive(chatd):
    srv = chatd({"heartbeat": {"interval": 0.5, "timeout": 1.5}})
    r = srv.raw()
    r.hello("ponger")
    # answer pings, send nothing else, for well over the timeout
    with pytest.raises(TimeoutError):
        r.recv_msg(timeout=3.5, auto_pong=True)
    assert r.pings >= 3
    r.send_json({"type": "ping", "ref": "alive"})
    r.expect("pong", auto_pong=True, ref="alive")
    assert srv.metrics().value("chatd_heartbeat_evictions_total") == 0


def test_any_frame_counts_as_liveness(chatd):
    srv = chatd({"heartbeat": {"interval": 0.5, "timeout": 1.5}})
    r = srv.raw()
    r.hello("chatty")
    end = time.monotonic() + 3.5
    while time.monotonic() < end:        # never pongs, but keeps sending commands
        r.send_json({"type": "ping"})
        r.expect("pong", auto_pong=False)
        time.sleep(0.3)
    assert r.pings >= 3
    r.send_json({"type": "ping", "ref": "alive"})
    r.expect("pong", ref="alive")
    assert srv.metrics().value("chatd_heartbeat_evictions_total") == 0


def test_pings_are_sent_at_the_interval(chatd):
    srv = chatd({"heartbeat": {"interval": 0.5, "timeout": 10}})
    r = srv.raw()
    w = r.hello("counter")
    assert w["heartbeat"] == 0.5
    with pytest.raises(TimeoutError):
        r.recv_msg(timeout=2.6, auto_pong=True)
    assert 3 <= r.pings <= 7, r.pings


# ---------------------------------------------------------------------------
# shutdown


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_every_client_1001_and_exits_0(chatd, sig):
    shutdown_timeout = 2
    srv = chatd({"server": {"shutdown_timeout": shutdown_timeout}})

    async def main():
        a = await srv.client("alice")
        b = await srv.client("bob")
        anon = await srv.client()             # connected, no hello yet
        raw = srv.raw()
        raw.hello("rawcarol")
        await a.join("r")
        await b.join("r")
        await a.expect("presence")
        t0 = time.monotonic()
        srv.signal(sig)
        for c in (a, b, anon):
            code, reason = await c.expect_closed(scaled(shutdown_timeout + 3))
            assert code == 1001, (c.label, code, reason)
            assert reason == "server shutdown", reason
        kind, code, reason = await asyncio.to_thread(raw.wait_closed, scaled(shutdown_timeout + 3), True)
        assert (kind, code) == ("close", 1001), (kind, code, reason)
        rc = await asyncio.to_thread(srv.wait_exit, shutdown_timeout + scaled(3))
        assert rc == 0, "exit code %r" % rc
        assert time.monotonic() - t0 <= shutdown_timeout + scaled(3)

    run(main())


def test_sigterm_with_no_clients_exits_0_quickly(chatd):
    srv = chatd({"server": {"shutdown_timeout": 5}})
    t0 = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - t0 < scaled(2), "idle shutdown should not wait for shutdown_timeout"


def _fill_stuck_reader(srv, a, room, n, body):
    """alice sends n messages to a room where a raw reader has stopped reading."""
    async def go():
        base = _fill_stuck_reader.sent
        _fill_stuck_reader.sent += n
        for i in range(base, base + n):
            await a.send({"type": "send", "room": room, "id": "f%d" % i, "body": body})
        got = await a.recv_n(2 * n, scaled(10))     # n acks and n own message events
        assert sorted(m["type"] for m in got) == ["ack"] * n + ["message"] * n, got[:4]
    return go()


_fill_stuck_reader.sent = 0

STUCK_CFG = {
    "heartbeat": {"interval": 5, "timeout": 60},
    "limits": {"send_queue_messages": 100000, "send_queue_bytes": 64 * 1024 * 1024,
               "total_queue_bytes": 256 * 1024 * 1024, "max_message_bytes": 4096},
    "history": {"messages_per_room": 10},
}


def test_shutdown_with_stuck_reader_is_bounded_by_shutdown_timeout(chatd):
    shutdown_timeout = 3
    srv = chatd(dict(STUCK_CFG, server={"shutdown_timeout": shutdown_timeout}))

    async def main():
        a = await srv.client("alice")
        try:
            await a.join("r")
            stuck = srv.raw(rcvbuf=4096)
            stuck.hello("stuck")
            stuck.join("r")
            await a.expect("presence")
            n = 0
            while True:          # until the server holds queued bytes it cannot write
                await _fill_stuck_reader(srv, a, "r", 200, "q" * 4000)
                n += 200
                m = await asyncio.to_thread(srv.metrics)
                if m.value("chatd_queue_bytes") > 0:
                    break
                assert n < 5000, "chatd_queue_bytes stays 0 with a reader that stopped"
            t0 = time.monotonic()
            srv.signal(signal.SIGTERM)
            code, reason = await a.expect_closed(scaled(shutdown_timeout + 3))
            assert code == 1001

            # while draining no new session is accepted
            def probe():
                try:
                    status, _, _ = raw_upgrade(srv.port, timeout=2)
                    return status
                except OSError:
                    return "refused"

            if srv.alive():
                st = await asyncio.to_thread(probe)
                assert st != 101, "a WebSocket upgrade was accepted during shutdown"
                try:
                    status, _, body = await asyncio.to_thread(http_get, srv.port, "/healthz", timeout=2)
                    if srv.alive():
                        assert status == 503, (status, body)
                        assert json.loads(body)["status"] == "shutting_down"
                except OSError:
                    pass
            rc = await asyncio.to_thread(srv.wait_exit, shutdown_timeout + scaled(3))
            assert rc == 0
            assert time.monotonic() - t0 <= shutdown_timeout + scaled(3)
        finally:
            await a.close()

    run(main(), timeout=90)


def test_shutdown_flushes_queues_before_1001(chatd):
    shutdown_timeout = 8
    srv = chatd(dict(STUCK_CFG, server={"shutdown_timeout": shutdown_timeout}))

    async def main():
        a = await srv.client("alice")
        try:
            await a.join("r")
            slow = srv.raw(rcvbuf=4096)
            slow.hello("slow")
            slow.join("r")
            await a.expect("presence")
            n = 0
            while True:
                await _fill_stuck_reader(srv, a, "r", 100, "q" * 4000)
                n += 100
                m = await asyncio.to_thread(srv.metrics)
                if m.value("chatd_queue_bytes") > 0:
                    break
                assert n < 5000, "chatd_queue_bytes stays 0 with a reader that stopped"
            srv.signal(signal.SIGTERM)
            await a.expect_closed(scaled(shutdown_timeout + 3))
            # now the slow reader reads: every message, in order, then 1001
            data = []
            kind, code, reason = await asyncio.to_thread(slow.wait_closed, scaled(shutdown_timeout + 3), True, data)
            frames = [json.loads(p) for op, p in data if op == OP_TEXT]
            # (presence leave of alice, whose session ended first, may come along)
            assert all(f["type"] in ("message", "presence") for f in frames), frames[-3:]
            seqs = [f["seq"] for f in frames if f["type"] == "message"]
            assert seqs == list(range(1, n + 1)), "got %d of %d messages before the close" % (len(seqs), n)
            assert (kind, code) == ("close", 1001), (kind, code, reason)
            rc = await asyncio.to_thread(srv.wait_exit, shutdown_timeout + scaled(3))
            assert rc == 0
        finally:
            await a.close()

    run(main(), timeout=90)


def test_server_keeps_running_after_client_misbehaviour(server):
    """A series of nasty clients; the server is still healthy and exits 0 afterwards."""
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        s.close()
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"\x00\xff garbage \r\n\r\n")
        s.close()
        s = socket.create_connection(("127.0.0.1", server.port))
        s.close()
        r = server.raw()
        r.send_raw(b"\x81")          # half a frame header, then gone
        r.close()
        r = server.raw()
        r.hello("half")
        r.send_raw(b"\x81\xfe\x10\x00abcd")   # header of a 4 KiB frame, a few bytes, then gone
        r.close()
    status, _, _ = http_get(server.port, "/healthz")
    assert status == 200

    async def main():
        c = await server.client("after")
        await c.ping_pong()
        await c.close()

    run(main())
    wait_until(lambda: server.metrics().value("chatd_connections") == 0, scaled(5), what="connections == 0")
    wait_until(lambda: server.metrics().value("chatd_sessions") == 0, scaled(5), what="sessions == 0")


# ---------------------------------------------------------------------------
# open files limit


def _limits(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                parts = line.split()
                return int(parts[3]), int(parts[4])
    raise AssertionError("no Max open files in /proc/%d/limits" % pid)


def test_raises_soft_nofile_limit_to_what_max_connections_needs(chatd):
    # (the pre-upgrade cap per address would refuse the raw sockets below)
    srv = chatd({"server": {"max_connections": 1500, "max_pending_per_ip": 1000}},
                rlimit_nofile=(256, 4096))
    soft, hard = _limits(srv.pid)
    assert hard == 4096
    assert 1500 + 64 <= soft < hard, "soft open-files limit not sized to max_connections: %d" % soft
    # and it is usable: 300 connections, more than the starting soft limit of 256
    socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(300)]
    try:
        assert http_get(srv.port, "/healthz")[0] == 200
    finally:
        for s in socks:
            s.close()


def test_lowers_a_huge_soft_nofile_limit(chatd):
    # lws sizes its fd table by the limit and scans it on every close.
    srv = chatd({"server": {"max_connections": 100}}, rlimit_nofile=(20000, 20000))
    soft, hard = _limits(srv.pid)
    assert hard == 20000
    assert 100 + 64 <= soft <= 1000, "soft open-files limit not lowered: %d" % soft


def test_soft_nofile_limit_stops_at_hard(chatd):
    srv = chatd({"server": {"max_connections": 5000}}, rlimit_nofile=(256, 2048))
    soft, hard = _limits(srv.pid)
    assert soft == hard == 2048


def test_warns_when_max_connections_exceeds_nofile(chatd):
    srv = chatd({"server": {"max_connections": 100000}}, rlimit_nofile=(256, 1024))
    log = srv.log_text()
    assert "max_connections" in log, "no clear message about max_connections vs the open-files limit:\n" + log
    assert "1024" in log, "the message should name the limit (1024):\n" + log
