"""The write path: chatd writes queued frames straight to the socket before
the loop sleeps, and libwebsockets writes pongs, pings and close frames on
the same socket. These tests check that the byte stream stays a sequence of
whole frames when the kernel takes only part of a write: a small send buffer
on the server's side, a small receive window and a slow reader on the
client's, continuous pings from the client, and frames of every size.
Every frame is parsed and every message body compared byte for byte."""

import json
import random
import subprocess
import threading
import time

import pytest

from chatd_helpers import OP_PING, OP_PONG, OP_TEXT, scaled

BIG = {
    "server": {"socket_send_buffer": 4096},
    "limits": {"max_message_bytes": 60000, "max_frame_bytes": 65536,
               "send_queue_messages": 100000, "send_queue_bytes": 64 << 20,
               "total_queue_bytes": 256 << 20, "rate": 100000, "burst": 100000},
    # the reader pings us; our own pings must not disturb the count
    "heartbeat": {"interval": 1, "timeout": 60},
}


def make_cert(d):
    key, cert = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def bodies(n, seed):
    """n bodies of every size class: tiny, around the 126 / 65536 header
    boundaries of the frame length, and tens of KiB."""
    rnd = random.Random(seed)
    sizes = [1, 100, 125, 126, 127, 1000, 20000, 59000]
    out = []
    for i in range(n):
        size = sizes[i] if i < len(sizes) else rnd.choice([rnd.randint(1, 200), rnd.randint(200, 4000),
                                                           rnd.randint(4000, 59000)])
        tag = "%d:" % i
        out.append(tag + "".join(chr(0x61 + (i + j) % 26) for j in range(max(0, size - len(tag)))))
    return out


def flood_with_pings(server, n=240, seed=7):
    """A sender floods a room with n messages while a slow reader with a
    4 KiB receive window pings continuously. Returns the reader's stats."""
    sender = server.raw(rcvbuf=1 << 20)
    reader = server.raw(rcvbuf=4096, timeout=scaled(30))
    reader.hello("reader")
    reader.join("flood")
    sender.hello("sender")
    sender.join("flood")
    texts = bodies(n, seed)
    errors = []

    def send_all():
        try:
            for i, body in enumerate(texts):
                sender.send_json({"type": "send", "room": "flood", "id": "m%d" % i, "body": body})
            # the sender reads its acks (and its own copies) last
            acks = 0
            while acks < n:
                m = sender.recv_json(timeout=scaled(60), auto_pong=True)
                if m["type"] == "ack":
                    acks += 1
                elif m["type"] != "message":
                    errors.append("sender got %r" % m)
                    return
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append("sender: %r" % e)

    t = threading.Thread(target=send_all)
    t.start()
    pings_sent, pongs, got, frames = [], [], [], 0
    deadline = time.monotonic() + scaled(120)
    while len(got) < n and time.monotonic() < deadline and not errors:
        if frames % 3 == 0:
            p = b"p%d" % len(pings_sent)
            pings_sent.append(p)
            reader.send_frame(OP_PING, p)
        op, payload, fin = reader.recv_frame(timeout=scaled(30))
        frames += 1
        assert fin, "fragmented frame from the server: opcode %d" % op
        if op == OP_PONG:
            pongs.append(payload)
        elif op == OP_PING:
            reader.send_frame(OP_PONG, payload)
        else:
            assert op == OP_TEXT, "unexpected opcode %d (%r)" % (op, payload[:40])
            m = json.loads(payload.decode("utf-8"))
            if m["type"] == "message":
                got.append(m)
            else:
                assert m["type"] == "presence", m.text[-2000:]
        if frames % 50 == 0:
            time.sleep(0.005)          # a slow reader: the server's writes stay partial
    t.join(scaled(60))
    assert not errors, errors
    assert len(got) == n, "reader got %d of %d messages" % (len(got), n)
    for i, m in enumerate(got):
        assert m["id"] == "m%d" % i and m["body"] == texts[i], \
            "message %d out of order or altered: id %r, %d bytes" % (i, m["id"], len(m["body"]))
    assert [m["seq"] for m in got] == list(range(got[0]["seq"], got[0]["seq"] + n))
    # Pongs carry ping payloads, in order. A ping that arrives while the pong
    # of an earlier one is still waiting for the socket is dropped by
    # libwebsockets 4.1 (it keeps the first; RFC 6455 5.5.3 would keep the
    # latest), so the flood's last ping may go unanswered. Once the flood is
    # read, a new ping must get its pong: nothing of lws' may be stuck
    # behind chatd's frames.
    deadline = time.monotonic() + scaled(10)
    final = []
    while not (pongs and pongs[-1].startswith(b"final")):
        assert time.monotonic() < deadline, "no pong after the flood; last pongs %r" % pongs[-3:]
        if not final or time.monotonic() - final[-1][1] > 0.5:
            final.append((b"final%d" % len(final), time.monotonic()))
            reader.send_frame(OP_PING, final[-1][0])
        try:
            op, payload, fin = reader.recv_frame(timeout=0.5)
        except TimeoutError:
            continue
        if op == OP_PONG:
            pongs.append(payload)
    pings_sent += [p for p, _ in final]
    idx = [pings_sent.index(p) for p in pongs]
    assert idx == sorted(set(idx)), "pongs out of order or repeated: %r" % pongs
    return len(pings_sent)


def test_flood_with_pings_under_partial_writes(chatd):
    server = chatd(BIG)
    pings = flood_with_pings(server)
    assert pings > 50
    m = server.metrics()
    # the test means something only if the kernel refused part of writes
    assert m.value("chatd_partial_writes_total") > 0, m.text[-2000:]
    assert m.value("chatd_socket_writes_total") > 0, m.text[-2000:]


def test_flood_with_pings_over_tls(chatd, tmp_path):
    cert, key = make_cert(tmp_path)
    server = chatd(dict(BIG, tls={"cert": cert, "key": key}))
    flood_with_pings(server, n=120, seed=11)
    m = server.metrics()
    assert m.value("chatd_partial_writes_total") > 0, m.text[-2000:]


def test_a_burst_is_read_and_answered_at_once(chatd):
    """A burst of commands is read in one go, and the replies it causes
    leave together, in far fewer writes than frames."""
    server = chatd({"limits": {"rate": 100000, "burst": 100000}})
    r = server.raw()
    r.hello("alice")
    r.join("r")
    before = server.metrics()
    # 200 sends in one TCP write: chatd handles them in one or a few reads,
    # and the replies go out together
    burst = b"".join(__import__("chatd_helpers").encode_frame(
        OP_TEXT, json.dumps({"type": "send", "room": "r", "id": "b%d" % i, "body": "x"}).encode())
        for i in range(200))
    r.send_raw(burst)
    acks = msgs = 0
    while acks < 200 or msgs < 200:
        m = r.recv_json(auto_pong=True)
        acks += m["type"] == "ack"
        msgs += m["type"] == "message"
    after = server.metrics()
    frames = after.value("chatd_frames_out_total") - before.value("chatd_frames_out_total")
    writes = after.value("chatd_socket_writes_total") - before.value("chatd_socket_writes_total")
    assert frames >= 400, (frames, writes)
    # the 16 KiB burst is read within one or two loop iterations (not 256
    # bytes per iteration), so its replies leave in a handful of writes
    assert writes <= 8, "400 frames in %d writes: the burst was read over many iterations" % writes


@pytest.mark.parametrize("size", [4096, 65536])
def test_socket_send_buffer_is_applied(chatd, size):
    """server.socket_send_buffer sets SO_SNDBUF (the kernel doubles it)."""
    server = chatd({"server": {"socket_send_buffer": size}})
    r = server.raw()
    r.hello("alice")
    out = subprocess.run(["ss", "-tmn", "state", "established", "( sport = :%d )" % server.port],
                         capture_output=True, text=True).stdout
    # skmem:(r0,rb...,t0,tb<sndbuf>,...)
    tbs = [int(part[2:]) for part in out.replace("(", ",").replace(")", ",").split(",")
           if part.startswith("tb")]
    assert tbs and all(tb == 2 * size for tb in tbs), out
