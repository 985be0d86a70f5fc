#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets: tests/fuzz/corpus/<target>/.

The seeds are committed; rerun this after changing it (it rewrites the
three directories). Small on purpose: valid input of every kind plus the
edges, for libFuzzer to mutate from.

    /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import hashlib
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(HERE, "corpus")


def write(target, items):
    d = os.path.join(OUT, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    seen = set()
    for name, data in items:
        if isinstance(data, str):
            data = data.encode()
        h = hashlib.sha1(data).hexdigest()[:8]
        if h in seen:
            continue
        seen.add(h)
        with open(os.path.join(d, "%s-%s" % (name, h)), "wb") as f:
            f.write(data)
    return len(seen)


def j(obj):
    return json.dumps(obj, separators=(",", ":"))


# ---- fuzz_proto: one text frame each ------------------------------------
proto = [
    ("hello", j({"type": "hello", "name": "alice"})),
    ("hello-ref", j({"type": "hello", "name": "a.b-c_9", "ref": "r1"})),
    ("hello-token", j({"type": "hello", "token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.x"})),
    ("join", j({"type": "join", "room": "lobby"})),
    ("join-since", j({"type": "join", "room": "team:1", "since": 42, "epoch": "0123456789abcdef"})),
    ("leave", j({"type": "leave", "room": "lobby", "ref": "x"})),
    ("send", j({"type": "send", "room": "lobby", "id": "m1", "body": "hi \u00e9\u4e2d\U0001f600"})),
    ("send-escapes", '{"type":"send","room":"r","id":"1","body":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00"}'),
    ("dm", j({"type": "dm", "to": "bob", "id": "d1", "body": "psst"})),
    ("history", j({"type": "history", "room": "lobby", "limit": 10})),
    ("history-before", j({"type": "history", "room": "lobby", "before": 9007199254740992})),
    ("history-after", j({"type": "history", "room": "lobby", "after": 0, "limit": 500})),
    ("members", j({"type": "members", "room": "lobby"})),
    ("ping", j({"type": "ping", "ref": "p"})),
    ("edit", j({"type": "edit", "room": "lobby", "seq": 1, "body": "fixed", "id": "e1"})),
    ("delete", j({"type": "delete", "room": "lobby", "seq": 1})),
    ("react", j({"type": "react", "room": "lobby", "seq": 1, "reaction": "\U0001f44d", "on": False})),
    ("typing", j({"type": "typing", "room": "lobby", "on": True})),
    ("read", j({"type": "read", "room": "lobby", "seq": 3})),
    ("history-state", j({"type": "history", "room": "lobby", "state": True})),
    ("conversations", j({"type": "conversations", "ref": "c"})),
    ("join-dm", j({"type": "join", "room": "@alice:bob"})),
    ("ws-around", ' \t\r\n{"type":"ping"}\n '),
    ("nul-escape", '{"type":"send","room":"r","id":"1","body":"a\\u0000b"}'),
    ("nul-escape-even", '{"type":"send","room":"r","id":"1","body":"a\\\\u0000b"}'),
    # Not RFC 8259: cJSON took these, and the bad \u hex cut the body short.
    ("bad-hex-escape", '{"type":"send","room":"r","id":"1","body":"ab\\uZZZZcd"}'),
    ("bad-escape", '{"type":"send","room":"r","id":"1","body":"a\\x41"}'),
    ("raw-control", '{"type":"send","room":"r","id":"1","body":"a\tb"}'),
    ("lone-surrogate", '{"type":"send","room":"r","id":"1","body":"\\ud800x"}'),
    ("plus-number", '{"type":"join","room":"r","since":+1}'),
    ("leading-zero", '{"type":"join","room":"r","since":01}'),
    ("trailing", '{"type":"ping"}{"type":"ping"}'),
    ("array", '[{"type":"ping"}]'),
    ("dup-keys", '{"type":"ping","type":"hello","name":"x"}'),
    ("unknown-type", j({"type": "shout"})),
    ("type-number", '{"type":1}'),
    ("huge-number", '{"type":"history","room":"r","limit":1e309,"before":-0}'),
    ("float", '{"type":"join","room":"r","since":1.5}'),
    ("deep", '{"a":' * 64 + '1' + '}' * 64),
    ("deep-array", '{"type":"ping","x":' + '[' * 200 + ']' * 200 + '}'),
    ("long-id", j({"type": "send", "room": "r", "id": "i" * 65, "body": ""})),
    ("long-room", j({"type": "join", "room": "r" * 65})),
    ("long-ref", j({"type": "ping", "ref": "x" * 65})),
    ("bad-utf8", b'{"type":"send","room":"r","id":"1","body":"\xc3\x28\xed\xa0\x80\xf4\x90\x80\x80"}'),
    ("utf8-edges", "\u007f\u0080\u07ff\u0800\uffff\U00010000\U0010ffff".encode()),
    ("overlong", b"\xc0\xaf\xe0\x80\xaf\xf0\x80\x80\xaf"),
    ("truncated", '{"type":"send","room":"lobby","id":"m1","bo'),
    ("empty", ""),
    ("literals", '{"type":"ping","a":true,"b":false,"c":null,"d":[1,-2.5e-3,"s",{}]}'),
]
# ---- fuzz_config: TOML files --------------------------------------------
with open(os.path.join(REPO, "conf", "chatd.toml"), "rb") as f:
    sample = f.read()
config = [
    ("sample", sample),
    ("empty", ""),
    ("server", '[server]\nlisten = "0.0.0.0"\nport = 0\nnode_id = "chat-1"\nhandshake_timeout = 0.5\n'
               'allowed_origins = ["https://a.example", "http://b"]\nmax_connections_per_ip = 4\n'),
    ("limits", '[limits]\nmax_message_bytes = 1\nmax_frame_bytes = 257\nslow_consumer = "drop_oldest"\n'
               'rate = 0.5\nburst = 1\nsend_queue_messages = 2147483647\ntotal_queue_bytes = 9223372036854775807\n'),
    ("heartbeat", '[heartbeat]\ninterval = 1e-3\ntimeout = 2.5\n'),
    ("history", '[history]\nmessages_per_room = 0\ndedup_window = 0\n'),
    ("storage", '[storage]\npath = ""\nsync = "always"\nretention_messages = 10\nretention_days = 0.5\n'),
    ("auth-jwt", '[auth]\nmode = "jwt"\njwt_secret = "s3cret"\nleeway = 0\n'),
    ("auth-file", '[auth]\nmode = "jwt"\njwt_secret_file = "/run/credentials/chatd/jwt"\n'),
    ("tls", '[tls]\ncert = "/etc/chatd/cert.pem"\nkey = "/etc/chatd/key.pem"\nca = "/etc/chatd/ca.pem"\n'),
    ("log", '[log]\nlevel = "debug"\nformat = "json"\n'),
    ("dotted", 'server.port = 8081\nlimits.rate = 5\n"log".level = \'warn\'\n'),
    ("inline", 'server = { listen = "::1", port = 1 }\n'),
    ("err-unknown-key", '[server]\nprot = 1\n'),
    ("err-unknown-table", '[sever]\nport = 1\n'),
    ("err-type", '[server]\nport = "8080"\n'),
    ("err-range", '[server]\nport = 65536\n[limits]\nrate = -1\nburst = nan\n'),
    ("err-cross", '[heartbeat]\ninterval = 60\n[limits]\nmax_message_bytes = 65536\n'),
    ("err-both-secrets", '[auth]\njwt_secret = "a"\njwt_secret_file = "b"\n'),
    ("err-tls-half", '[tls]\ncert = "c.pem"\n'),
    ("err-array-of-tables", '[[server]]\nport = 1\n'),
    ("err-syntax", '[server\nport = = 1\n'),
    ("err-nul", b'[server]\nnode_id = "a\x00b"\n'),
    ("err-dup", '[server]\nport = 1\nport = 2\n'),
    ("strings", '[server]\nnode_id = """\nmulti"""\nlisten = \'\'\'lit\'\'\'\n'
                'allowed_origins = ["\\u00e9", \'x\', """y"""]\n'),
    ("datetime", '[server]\nport = 1979-05-27T07:32:00Z\n'),
    ("ints", '[limits]\nmax_frame_bytes = 0x10000\nsend_queue_bytes = 0o777\nrate = 1_000\nburst = +inf\n'),
]

# ---- fuzz_hub: programs (see the op table at the top of fuzz_hub.c) -------
CONNECT, INPUT, DRAIN, POP, RELEASE, TICK, COMMIT, FAIL, TOKEN, RECONF, DRAINING, TEMPLATE, CLOSE = range(13)


def op(kind, slot=0):
    # kind = op % 13 and slot = (op >> 4) & 7: search a byte with both.
    for b in range(256):
        if b % 13 == kind and (b >> 4) & 7 == slot:
            return bytes([b])
    raise ValueError((kind, slot))


def inp(slot, text):
    data = text.encode() if isinstance(text, str) else text
    return op(INPUT, slot) + struct.pack("<H", len(data)) + data


def tmpl(slot, which, arg=0):
    return op(TEMPLATE, slot) + bytes([which, arg])


def token(slot, claims, alg=0):
    data = j(claims).encode()
    return op(TOKEN, slot) + bytes([alg]) + struct.pack("<H", len(data)) + data


def header(flags=0, qmsgs=15, qbytes=255, total=255, maxmsg=255, rate=0xff, spn=0xfc, dedup=15):
    return bytes([flags, qmsgs, qbytes, total, maxmsg, rate, spn, dedup])


def drain_all():
    return b"".join(op(DRAIN, s) for s in range(4))


chat = (b"".join(op(CONNECT, s) for s in range(3))
        + inp(0, j({"type": "hello", "name": "n0"})) + inp(1, j({"type": "hello", "name": "n1"}))
        + tmpl(2, 0, 2)
        + b"".join(tmpl(s, 1, 0) for s in range(3))
        + inp(0, j({"type": "send", "room": "r0", "id": "a", "body": "hello", "ref": "x"}))
        + inp(0, j({"type": "send", "room": "r0", "id": "a", "body": "hello"}))
        + tmpl(1, 5, 0) + tmpl(2, 6, 4) + tmpl(1, 9, 0) + tmpl(0, 10, 7) + drain_all()
        + tmpl(1, 3, 0) + op(RELEASE, 2) + drain_all())
hub = [
    ("chat", header() + chat),
    ("chat-deferred", header(flags=2) + chat + op(COMMIT) + b"\x01" + op(FAIL) + op(COMMIT) + b"\xff" + drain_all()),
    ("chat-drop-oldest-small", header(flags=1, qmsgs=2, qbytes=2, total=4) + chat),
    ("chat-close-small", header(flags=0, qmsgs=1, qbytes=1, total=0) + chat),
    ("rate-limited", header(rate=0x00) + op(CONNECT) + b"".join(tmpl(0, 10, i) for i in range(5))
     + op(TICK) + b"\x14" + tmpl(0, 10, 9) + op(DRAIN)),
    ("replay", header() + op(CONNECT) + tmpl(0, 0, 0) + tmpl(0, 1, 0)
     + b"".join(tmpl(0, 4, i << 2) for i in range(6)) + op(DRAIN) + op(CONNECT, 1) + tmpl(1, 0, 1)
     + tmpl(1, 2, 1 << 2) + tmpl(1, 7, 3 << 2) + tmpl(1, 8, 1 << 2) + op(DRAIN, 1)),
    ("conflict", header(spn=0) + op(CONNECT) + op(CONNECT, 1) + tmpl(0, 0, 0) + tmpl(1, 0, 0)
     + op(DRAIN, 1) + op(RELEASE) + tmpl(1, 0, 0) + op(DRAIN, 1)),
    ("reconf-draining", header() + chat + op(RECONF) + b"\x00" + tmpl(0, 4, 8) + op(DRAINING)
     + op(RELEASE, 1) + op(CLOSE) + b"\x01" + drain_all()),
    ("auth", header(flags=4) + op(CONNECT) + op(CONNECT, 1)
     + token(0, {"sub": "n0", "rooms": ["r0", "r1*"], "exp": 4102444800, "nbf": 0}) + tmpl(0, 1, 0)
     + tmpl(0, 1, 2) + inp(0, j({"type": "join", "room": "r1-x"}))
     + token(1, {"sub": "n1"}, alg=3) + token(1, {"sub": "n1", "exp": 1}) + token(1, {"sub": "bad name"})
     + token(1, {"sub": "n1", "rooms": "r0"}) + inp(1, j({"type": "hello", "name": "n1"})) + drain_all()),
    # A slow, unreliable engine: loads wait, rooms complete out of order,
    # at most 2 rooms in memory (evicted and reloaded), then failing reads.
    ("async-engine", header(flags=2 | 8, dedup=0x2f) + op(CONNECT) + op(CONNECT, 1)
     + tmpl(0, 0, 0) + tmpl(1, 0, 1) + tmpl(0, 1, 0) + tmpl(1, 1, 1) + op(COMMIT) + b"\xc0"
     + op(COMMIT) + b"\xc0" + tmpl(0, 4, 0) + tmpl(1, 4, 1) + tmpl(1, 4, 5) + op(COMMIT) + b"\x81"
     + op(COMMIT) + b"\x80" + op(COMMIT) + b"\x81" + tmpl(0, 3, 0) + tmpl(1, 3, 1) + tmpl(0, 1, 2)
     + op(COMMIT) + b"\xc0" + tmpl(0, 1, 0) + op(COMMIT) + b"\xc1" + tmpl(1, 1, 0) + op(COMMIT) + b"\xc0"
     + tmpl(1, 2, 0) + tmpl(1, 6, 0) + tmpl(1, 7, 2 << 2) + drain_all()),
    ("async-engine-failing-reads", header(flags=2 | 16, dedup=0x1f, spn=0x04) + op(CONNECT) + tmpl(0, 0, 0)
     + tmpl(0, 1, 0) + b"".join(tmpl(0, 4, i << 2) for i in range(4)) + op(COMMIT) + b"\x7f"
     + tmpl(0, 3, 0) + tmpl(0, 1, 1) + tmpl(0, 2, 0) + tmpl(0, 6, 4) + tmpl(0, 8, 0) + op(DRAIN)),
    ("bad-utf8", header() + op(CONNECT) + inp(0, b'{"type":"hello","name":"\xff"}') + op(DRAIN)),
    ("garbage", header() + op(CONNECT) + inp(0, "{" * 300) + inp(0, '{"type":"send"}') + inp(0, "") + op(DRAIN)),
]

if __name__ == "__main__":
    for target, items in (("fuzz_proto", proto), ("fuzz_config", config), ("fuzz_hub", hub)):
        print("%s: %d seeds" % (target, write(target, items)))
