"""Frame-level rules, rate limits, slow consumers, concurrent senders."""

import asyncio
import json
import os
import threading
import time

import pytest

from chatd_helpers import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, encode_frame, run, scaled


# ---------------------------------------------------------------------------
# frames that close the connection


def test_binary_frame_closes_1003(server):
    r = server.raw()
    r.hello("alice")
    r.send_frame(OP_BINARY, b'{"type":"ping"}')
    r.expect_close_code(1003)


def test_binary_frame_before_hello_closes_1003(server):
    r = server.raw()
    r.send_frame(OP_BINARY, b"\x00\x01\x02")
    r.expect_close_code(1003)


@pytest.mark.parametrize("payload", [
    b'{"type":"ping","ref":"\xff"}',
    b'{"type":"ping","ref":"\xc3"}',              # truncated sequence
    b'{"type":"ping","ref":"\xed\xa0\x80"}',      # UTF-16 surrogate
    b'{"type":"ping","ref":"\xc0\xaf"}',          # overlong
    b'\xfe\xff',
])
def test_invalid_utf8_closes_1007(server, payload):
    r = server.raw()
    r.hello("alice")
    r.send_frame(OP_TEXT, payload)
    r.expect_close_code(1007)


def test_invalid_utf8_closes_others_unaffected(server):
    async def main():
        a = await server.client("alice")
        try:
            await a.join("r")
            r = server.raw()
            r.hello("bad")
            r.join("r")
            await a.expect("presence", name="bad", state="join")
            r.send_frame(OP_TEXT, b'{"type":"send","room":"r","id":"1","body":"\xff"}')
            await asyncio.to_thread(r.expect_close_code, 1007, None, True)   # and answer the close
            await a.expect("presence", name="bad", state="leave")
            await a.ping_pong()
        finally:
            await a.close()

    run(main())


def test_frame_over_max_frame_bytes_closes_1009(chatd):
    srv = chatd({"limits": {"max_frame_bytes": 1024, "max_message_bytes": 512}})
    r = srv.raw()
    r.hello("alice")
    r.join("r")
    r.send_text(json.dumps({"type": "send", "room": "r", "id": "1", "body": "x" * 2000}))
    r.expect_close_code(1009)


def test_frame_at_max_frame_bytes_is_fine(chatd):
    srv = chatd({"limits": {"max_frame_bytes": 1024, "max_message_bytes": 512}})
    r = srv.raw()
    r.hello("alice")
    frame = json.dumps({"type": "ping", "pad": ""})
    frame = json.dumps({"type": "ping", "pad": "p" * (1024 - len(frame))})
    assert len(frame) == 1024
    r.send_text(frame)
    r.expect("pong", auto_pong=True)


def test_body_over_max_message_within_frame_limit_is_too_large_not_close(chatd):
    srv = chatd({"limits": {"max_frame_bytes": 8192, "max_message_bytes": 1000}})
    r = srv.raw()
    r.hello("alice")
    r.join("r")
    r.send_json({"type": "send", "room": "r", "id": "1", "body": "x" * 5000, "ref": "big"})
    e = r.expect("error", auto_pong=True)
    assert e["code"] == "too_large" and e.get("ref") == "big", e
    r.send_json({"type": "ping"})
    r.expect("pong", auto_pong=True)


def test_oversized_frame_header_closes_1009_without_waiting_for_payload(chatd):
    """A header announcing 1 GiB must be refused at once, not buffered."""
    srv = chatd({"limits": {"max_frame_bytes": 4096, "max_message_bytes": 1024}})
    r = srv.raw()
    r.hello("alice")
    r.send_raw(encode_frame(OP_TEXT, b'{"type":"ping"', length=1 << 30))
    r.expect_close_code(1009, timeout=scaled(3))


def test_fragmented_message_is_reassembled(server):
    r = server.raw()
    r.hello("alice")
    r.join("r")
    text = json.dumps({"type": "send", "room": "r", "id": "frag", "body": "in three parts"}).encode()
    a, b = len(text) // 3, 2 * len(text) // 3
    r.send_frame(OP_TEXT, text[:a], fin=False)
    r.send_frame(OP_CONT, text[a:b], fin=False)
    r.send_frame(OP_CONT, text[b:], fin=True)
    got = {}
    for _ in range(2):
        m = r.recv_json(auto_pong=True)
        got[m["type"]] = m
    assert sorted(got) == ["ack", "message"], got
    assert got["message"]["body"] == "in three parts"


def test_fragmented_message_with_ping_interleaved(server):
    r = server.raw()
    r.hello("alice")
    text = b'{"type":"ping","ref":"fragmented"}'
    r.send_frame(OP_TEXT, text[:10], fin=False)
    r.send_frame(OP_PING, b"client ping")     # control frames may interleave
    r.send_frame(OP_CONT, text[10:], fin=True)
    # the server answers our ping with a pong carrying the same payload, and
    # the reassembled command with its reply; RFC 6455 orders neither before
    # the other (chatd writes replies before the loop sleeps, lws the pong
    # when the socket is next writable)
    pongs, replies = [], []
    while not (pongs and replies):
        op, payload, fin = r.recv_frame()
        assert fin, (op, payload)
        if op == OP_PONG:
            pongs.append(payload)
        elif op == OP_TEXT:
            replies.append(json.loads(payload))
        else:
            assert op == OP_PING, (op, payload)
    assert pongs == [b"client ping"], pongs
    assert replies == [{"type": "pong", "ref": "fragmented"}], replies


def test_utf8_character_split_across_fragments_is_valid(server):
    r = server.raw()
    r.hello("alice")
    r.join("r")
    text = json.dumps({"type": "send", "room": "r", "id": "u", "body": "caf\u00e9 \u2603"},
                      ensure_ascii=False).encode()
    cut = text.index("\u00e9".encode()) + 1          # between the two bytes of é
    r.send_frame(OP_TEXT, text[:cut], fin=False)
    r.send_frame(OP_CONT, text[cut:], fin=True)
    got = {}
    for _ in range(2):
        m = r.recv_json(auto_pong=True)
        got[m["type"]] = m
    assert sorted(got) == ["ack", "message"], got
    assert got["message"]["body"] == "caf\u00e9 \u2603"


def test_invalid_utf8_in_a_fragment_closes_1007(server):
    r = server.raw()
    r.hello("alice")
    r.send_frame(OP_TEXT, b'{"type":"ping",', fin=False)
    r.send_frame(OP_CONT, b'"ref":"\xff"}', fin=True)
    r.expect_close_code(1007)


def test_fragmented_message_over_max_frame_bytes_closes_1009(chatd):
    """Each fragment is small but the message is not: memory must stay bounded."""
    srv = chatd({"limits": {"max_frame_bytes": 1024, "max_message_bytes": 512}})
    r = srv.raw()
    r.hello("alice")
    r.join("r")
    text = json.dumps({"type": "send", "room": "r", "id": "1", "body": "y" * 3000}).encode()
    chunks = [text[i:i + 500] for i in range(0, len(text), 500)]
    try:
        for i, ch in enumerate(chunks):
            r.send_frame(OP_TEXT if i == 0 else OP_CONT, ch, fin=(i == len(chunks) - 1))
    except (BrokenPipeError, ConnectionResetError):
        pass
    r.expect_close_code(1009)


def test_binary_fragmented_closes_1003(server):
    r = server.raw()
    r.hello("alice")
    r.send_frame(OP_BINARY, b"ab", fin=False)
    r.send_frame(OP_CONT, b"cd", fin=True)
    r.expect_close_code(1003)


def test_client_close_frame_is_answered(server):
    r = server.raw()
    r.hello("alice")
    r.send_close(1000, b"bye")
    kind, code, reason = r.wait_closed()
    assert kind == "close" and code == 1000, (kind, code, reason)


def test_server_answers_client_ping(server):
    r = server.raw()
    r.hello("alice")
    r.send_frame(OP_PING, b"abc")
    op, payload, _ = r.recv_frame()
    while op == OP_PING:        # a heartbeat ping may come first
        op, payload, _ = r.recv_frame()
    assert (op, payload) == (OP_PONG, b"abc")


# ---------------------------------------------------------------------------
# rate limit


def test_rate_limited(chatd):
    srv = chatd({"limits": {"rate": 1, "burst": 3}})

    async def main():
        c = await srv.client("alice")     # hello takes one token
        other = await srv.client("bob")
        try:
            for i in range(10):
                await c.send({"type": "ping", "ref": "p%d" % i})
            replies = await c.recv_n(10)
            kinds = [(m["type"], m.get("code"), m.get("ref")) for m in replies]
            assert kinds[:2] == [("pong", None, "p0"), ("pong", None, "p1")], kinds
            assert kinds[2:] == [("error", "rate_limited", "p%d" % i) for i in range(2, 10)], kinds
            # the connection stays open, other sessions are not limited
            await other.ping_pong()
            m = await asyncio.to_thread(srv.metrics)
            assert m.value("chatd_rate_limited_total") == 8
            assert m.value("chatd_errors_total", code="rate_limited") == 8
            # tokens come back at `rate` per second
            await asyncio.sleep(1.1)
            await c.send({"type": "ping", "ref": "later"})
            await c.expect("pong", ref="later")
        finally:
            await c.close()
            await other.close()

    run(main())


def test_rate_limit_applies_to_hello_and_rejected_commands(chatd):
    srv = chatd({"limits": {"rate": 0.5, "burst": 2}})

    async def main():
        c = await srv.client()
        try:
            await c.send({"type": "ping", "ref": "1"})     # token 1: not_authenticated
            await c.expect_error("not_authenticated", ref="1")
            await c.send({"type": "hello", "name": "alice", "ref": "2"})  # token 2
            await c.expect("welcome", ref="2")
            await c.send({"type": "ping", "ref": "3"})
            await c.expect_error("rate_limited", ref="3")
            await c.send({"type": "hello", "name": "x", "ref": "4"})
            await c.expect_error("rate_limited", ref="4")
        finally:
            await c.close()

    run(main())


def test_rate_limited_send_is_not_broadcast(chatd):
    srv = chatd({"limits": {"rate": 0.5, "burst": 4}})

    async def main():
        a = await srv.client("alice")    # 1 token
        b = await srv.client("bob")
        try:
            await a.join("r")            # 2
            await b.join("r")
            await a.expect("presence")
            for i in range(4):           # tokens 3 and 4 are left: two accepted, two limited
                await a.send({"type": "send", "room": "r", "id": "m%d" % i, "body": "x"})
            frames = await a.recv_n(2 + 2 + 2)
            acks = [f for f in frames if f["type"] == "ack"]
            errs = [f for f in frames if f["type"] == "error"]
            assert [x["id"] for x in acks] == ["m0", "m1"], frames
            assert [e["code"] for e in errs] == ["rate_limited", "rate_limited"], frames
            got = [await b.expect("message") for _ in range(2)]
            assert [m["seq"] for m in got] == [1, 2]
            await b.ping_pong()
        finally:
            await a.close()
            await b.close()

    run(main())


# ---------------------------------------------------------------------------
# slow consumers

SLOW_CFG = {
    "heartbeat": {"interval": 5, "timeout": 60},     # a stalled reader must not be evicted by heartbeat here
    "limits": {"send_queue_messages": 64, "send_queue_bytes": 262144, "rate": 1000000, "burst": 1000000,
               "max_message_bytes": 4096, "max_frame_bytes": 65536},
    "history": {"messages_per_room": 100},
}
BODY = "z" * 3000


class Stream:
    """One reading client: records every message event and checks presence separately."""

    def __init__(self, c):
        self.c = c
        self.messages = []
        self.presence = []
        self.acks = {}
        self.other = []

    async def pump_until(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            assert left > 0, "%s: stalled with %d messages" % (self.c.name, len(self.messages))
            m = await self.c.recv(left)
            t = m["type"]
            if t == "message":
                self.messages.append(m)
            elif t == "presence":
                self.presence.append(m)
            elif t == "ack":
                self.acks[m["id"]] = m["seq"]
            else:
                self.other.append(m)


async def run_senders(senders, streams, room, stop, window=8, cap=4000, timeout=60):
    """Each sender sends BODY-sized messages with at most `window` unacked, until
    stop() is true (checked every 50 messages) or cap messages in all.
    Returns the number of messages sent."""
    sent = 0
    done = False
    counters = {id(s): 0 for s in senders}
    deadline = time.monotonic() + scaled(timeout)

    async def one(s, st):
        nonlocal sent, done
        while not done:
            if sent >= cap:
                done = True
                break
            n = counters[id(s)]
            counters[id(s)] = n + 1
            sent += 1
            mid = "%s-%d" % (s.name, n)
            await s.send({"type": "send", "room": room, "id": mid, "body": BODY})
            # wait for acks so at most `window` are in flight
            await st.pump_until(lambda: len(st.acks) >= counters[id(s)] - window, deadline - time.monotonic())
            if sent % 50 == 0 and await asyncio.to_thread(stop):
                done = True

    await asyncio.gather(*(one(s, st) for s, st in zip(senders, streams)))
    return sent


async def expect_presence_leave(st, name, within=2.5):
    """The room hears that a server-closed session left, promptly (while the
    closed peer itself, stuck, never reads or answers anything). Not scaled for
    sanitizer builds: lws's own close-ack timeout (5 s) would hide the delay."""
    try:
        await st.pump_until(lambda: st.presence, within)
    except AssertionError:
        raise AssertionError("%s: no presence leave for %r within %.1fs of the close (it only comes once the "
                             "stuck TCP connection is finally torn down)" % (st.c.name, name, within)) from None
    assert st.presence == [{"type": "presence", "room": "room", "name": name, "state": "leave"}], st.presence


def assert_in_order(stream, total):
    seqs = [m["seq"] for m in stream.messages]
    assert seqs == list(range(1, total + 1)), "%s: got %d messages, first gap at %r" % (
        stream.c.name, len(seqs), next((i for i, s in enumerate(seqs) if s != i + 1), None))
    assert all(m["body"] == BODY for m in stream.messages)


def _server_socket_inode(port, peer_port):
    """The inode of chatd's socket for the connection from 127.0.0.1:peer_port."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == peer_port:
                return inode
    return None


def _holds_socket(pid, inode):
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) == "socket:[%s]" % inode:
                return True
        except OSError:
            pass
    return False


def join_slow_reader(srv):
    """A raw client "slow" with a 4 KiB receive buffer that never reads joins
    "room" (the caller waits for its presence)."""
    slow = srv.raw(rcvbuf=4096)
    slow.hello("slow")
    slow.join("room")
    return slow


def test_slow_consumer_blocked_socket_dropped_promptly(chatd):
    """A slow consumer cannot read the close frame behind its backlog: chatd
    aborts its socket 0.2 s after deciding to close it, instead of holding it
    (and megabytes of kernel buffers) for lws' 5 s flush of a frame tail."""
    srv = chatd(dict(SLOW_CFG, limits=dict(SLOW_CFG["limits"], slow_consumer="close")))

    async def main():
        a = await srv.client("alice")
        sa = Stream(a)
        try:
            await a.join("room")
            slow = join_slow_reader(srv)
            await a.expect("presence", name="slow", state="join")
            inode = _server_socket_inode(srv.port, slow.sock.getsockname()[1])
            assert inode and _holds_socket(srv.pid, inode)
            seen = {}

            def watch():
                deadline = time.monotonic() + scaled(60)
                while time.monotonic() < deadline:
                    if "close" not in seen:
                        if srv.metrics().value("chatd_slow_consumer_closes_total") >= 1:
                            seen["close"] = time.monotonic()
                    elif not _holds_socket(srv.pid, inode):
                        seen["gone"] = time.monotonic()
                        return
                    time.sleep(0.01)

            th = threading.Thread(target=watch)
            th.start()
            await run_senders([a], [sa], "room", lambda: "close" in seen)
            await asyncio.to_thread(th.join, scaled(65))
            assert "close" in seen, "the slow consumer was never closed"
            assert "gone" in seen, "chatd kept the slow consumer's socket"
            # 0.2 s grace, plus polling; lws alone holds it about 5 s
            assert seen["gone"] - seen["close"] < scaled(0.7), seen["gone"] - seen["close"]
            await expect_presence_leave(sa, "slow", within=scaled(2.5))
        finally:
            await a.close()

    run(main(), timeout=120)


def test_slow_consumer_closed_others_keep_receiving(chatd):
    srv = chatd(dict(SLOW_CFG, limits=dict(SLOW_CFG["limits"], slow_consumer="close")))

    async def main():
        a = await srv.client("alice")
        b = await srv.client("bob")
        sa, sb = Stream(a), Stream(b)
        try:
            await a.join("room")
            await b.join("room")
            await a.expect("presence", name="bob")
            slow = join_slow_reader(srv)
            for x in (a, b):
                await x.expect("presence", name="slow", state="join")
            # from here on `slow` reads nothing

            def closed():
                return srv.metrics().value("chatd_slow_consumer_closes_total") >= 1

            sent = await run_senders([a, b], [sa, sb], "room", closed)
            assert closed(), "slow consumer never closed after %d messages of %d bytes" % (sent, len(BODY))
            # a few more after the close; everyone left keeps receiving
            for i in range(20):
                await a.send({"type": "send", "room": "room", "id": "after-%d" % i, "body": BODY})
                await sa.pump_until(lambda: "after-%d" % i in sa.acks, scaled(10))
            total = sent + 20
            for st in (sa, sb):
                await st.pump_until(lambda: len(st.messages) >= total, scaled(20))
                assert_in_order(st, total)
                await expect_presence_leave(st, "slow")
                assert st.other == []
            assert sa.acks == {m["id"]: m["seq"] for m in sa.messages if m["from"] == "alice"}
            assert sb.acks == {m["id"]: m["seq"] for m in sb.messages if m["from"] == "bob"}

            # the slow one: what it did get is in order, then 1008 or a dropped connection
            data = []
            kind, code, reason = await asyncio.to_thread(slow.wait_closed, scaled(15), False, data)
            if kind == "close":
                assert code == 1008, (code, reason)
                assert reason == "slow consumer", reason
            got = [json.loads(p) for op, p in data if op == OP_TEXT]
            got_seqs = [m["seq"] for m in got if m["type"] == "message"]
            assert got_seqs == list(range(1, len(got_seqs) + 1)), "slow reader saw a gap before the close"
            assert len(got_seqs) < total
        finally:
            await a.close()
            await b.close()

    run(main(), timeout=120)
    m = srv.metrics()
    assert m.value("chatd_slow_consumer_closes_total") == 1
    assert m.value("chatd_slow_consumer_drops_total") == 0


def test_slow_consumer_drop_oldest_keeps_connection(chatd):
    srv = chatd(dict(SLOW_CFG, limits=dict(SLOW_CFG["limits"], slow_consumer="drop_oldest")))

    async def main():
        a = await srv.client("alice")
        b = await srv.client("bob")
        sa, sb = Stream(a), Stream(b)
        try:
            await a.join("room")
            await b.join("room")
            await a.expect("presence", name="bob")
            slow = join_slow_reader(srv)
            for x in (a, b):
                await x.expect("presence", name="slow", state="join")

            def dropped():
                return srv.metrics().value("chatd_slow_consumer_drops_total") >= 1

            sent = await run_senders([a, b], [sa, sb], "room", dropped)
            assert dropped(), "nothing dropped after %d messages" % sent
            for i in range(10):
                await a.send({"type": "send", "room": "room", "id": "after-%d" % i, "body": BODY})
                await sa.pump_until(lambda: "after-%d" % i in sa.acks, scaled(10))
            total = sent + 10
            for st in (sa, sb):
                await st.pump_until(lambda: len(st.messages) >= total, scaled(20))
                assert_in_order(st, total)
                assert st.presence == [] and st.other == []
            m = await asyncio.to_thread(srv.metrics)
            assert m.value("chatd_slow_consumer_closes_total") == 0
            drops = m.value("chatd_slow_consumer_drops_total")

            # the slow reader wakes up: still connected, messages in increasing seq order with
            # gaps, ending with the newest; then a ping is answered
            slow.send_json({"type": "ping", "ref": "still-there"})

            def drain():
                seqs = []
                while True:
                    m = slow.recv_json(scaled(15), auto_pong=True)
                    if m["type"] == "pong":
                        return seqs, m
                    assert m["type"] == "message", m
                    seqs.append(m["seq"])

            seqs, pong = await asyncio.to_thread(drain)
            assert pong.get("ref") == "still-there"
            assert seqs == sorted(set(seqs)), "order broken or duplicates"
            assert seqs[-1] == total, "the newest message must survive drop_oldest"
            assert len(seqs) < total
            assert total - len(seqs) >= drops, (total, len(seqs), drops)
        finally:
            await a.close()
            await b.close()

    run(main(), timeout=120)


def test_total_queue_bytes_cap_handles_largest_queue_first(chatd):
    cfg = dict(SLOW_CFG, limits=dict(SLOW_CFG["limits"], slow_consumer="close",
                                     send_queue_bytes=4 * 1024 * 1024, send_queue_messages=100000,
                                     total_queue_bytes=200000))
    srv = chatd(cfg)

    async def main():
        a = await srv.client("alice")
        sa = Stream(a)
        try:
            await a.join("room")
            slow = join_slow_reader(srv)
            await a.expect("presence", name="slow", state="join")

            def closed():
                return srv.metrics().value("chatd_slow_consumer_closes_total") >= 1

            sent = await run_senders([a], [sa], "room", closed)
            assert closed(), "the global cap never triggered after %d messages" % sent
            await sa.pump_until(lambda: len(sa.messages) >= sent, scaled(20))
            assert_in_order(sa, sent)
            await expect_presence_leave(sa, "slow")
            m = await asyncio.to_thread(srv.metrics)
            assert m.value("chatd_queue_bytes") <= 200000
            await a.ping_pong()
        finally:
            await a.close()

    run(main(), timeout=120)


def test_queue_bytes_gauge_returns_to_zero(server):
    async def main():
        a = await server.client("alice")
        try:
            await a.join("r")
            for i in range(5):
                await a.send({"type": "send", "room": "r", "id": str(i), "body": "x" * 100})
            await a.recv_n(10)
        finally:
            await a.close()

    run(main())
    from chatd_helpers import wait_until
    wait_until(lambda: server.metrics().value("chatd_queue_bytes") == 0, scaled(5), what="chatd_queue_bytes == 0")


# ---------------------------------------------------------------------------
# concurrent senders


def test_concurrent_senders_same_order_everywhere(chatd):
    srv = chatd({"limits": {"send_queue_messages": 10000, "send_queue_bytes": 16 * 1024 * 1024}})
    N, PER = 5, 50

    async def main():
        clients = []
        try:
            for i in range(N):
                c = await srv.client("user%d" % i)
                await c.join("busy")
                for prev in clients:
                    await prev.expect("presence", name=c.name, state="join")
                clients.append(c)

            results = {}

            async def worker(c):
                async def sender():
                    for k in range(PER):
                        await c.send({"type": "send", "room": "busy", "id": "%s/%d" % (c.name, k),
                                      "body": "%s says %d" % (c.name, k)})

                async def reader():
                    msgs, acks = [], {}
                    while len(msgs) < N * PER or len(acks) < PER:
                        m = await c.recv(scaled(20))
                        if m["type"] == "message":
                            msgs.append(m)
                        else:
                            assert m["type"] == "ack", m
                            acks[m["id"]] = m["seq"]
                    results[c.name] = (msgs, acks)

                await asyncio.gather(sender(), reader())

            await asyncio.gather(*(worker(c) for c in clients))

            ref_order = None
            by_id = {}
            for name, (msgs, acks) in results.items():
                seqs = [m["seq"] for m in msgs]
                assert seqs == list(range(1, N * PER + 1)), "%s: not gap-free from 1" % name
                order = [(m["seq"], m["from"], m["id"], m["body"], m["ts"]) for m in msgs]
                if ref_order is None:
                    ref_order = order
                    by_id = {m["id"]: m["seq"] for m in msgs}
                assert order == ref_order, "%s sees another order" % name
                for mid, seq in acks.items():
                    assert by_id[mid] == seq, "ack seq for %s is %d, message seq %d" % (mid, seq, by_id[mid])
                assert sorted(acks) == sorted("%s/%d" % (name, k) for k in range(PER))
            # each sender's own messages keep their send order
            for i in range(N):
                own = [int(mid.split("/")[1]) for (_, frm, mid, _, _) in ref_order if frm == "user%d" % i]
                assert own == list(range(PER)), "user%d's messages reordered" % i
            # history agrees
            h = await clients[0].request({"type": "history", "room": "busy", "limit": 500}, "history")
            assert [(m["seq"], m["id"]) for m in h["messages"]] == [(s, mid) for (s, _, mid, _, _) in ref_order]
        finally:
            for c in clients:
                await c.close()

    run(main(), timeout=90)
    m = srv.metrics()
    assert m.value("chatd_messages_in_total") == N * PER
    assert m.value("chatd_messages_out_total") == N * PER * N
    assert m.value("chatd_slow_consumer_closes_total") == 0


@pytest.mark.parametrize("frame", [
    encode_frame(OP_TEXT, b'{"type":"ping","ref":"\xff"}'),        # 1007
    encode_frame(OP_BINARY, b"bin"),                              # 1003
    encode_frame(OP_TEXT, b"x" * 5000),                           # 1009
], ids=["1007", "1003", "1009"])
def test_bad_frame_close_unregisters_promptly_even_if_peer_never_acks(chatd, frame):
    """The server's own close (1003/1007/1009) must end the session at once, like a
    heartbeat eviction does, even when the peer never answers the close frame:
    the room sees presence leave and the name is free again."""
    srv = chatd({"limits": {"max_frame_bytes": 1024, "max_message_bytes": 512}})

    async def main():
        a = await srv.client("alice")
        try:
            await a.join("r")
            r = srv.raw()
            r.hello("bad")
            r.join("r")
            await a.expect("presence", name="bad", state="join")
            r.send_raw(frame)
            kind, code, _ = await asyncio.to_thread(r.wait_closed)   # read the close, never answer it
            assert kind == "close" and code in (1003, 1007, 1009), (kind, code)
            # not scaled for sanitizer builds: lws's own close-ack timeout is 5 s
            await a.expect("presence", timeout=2.5, name="bad", state="leave")
            b = await srv.client("bad")      # the name is free again
            await b.close()
        finally:
            await a.close()

    run(main())
