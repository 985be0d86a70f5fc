"""Helpers for the chatd integration tests.

Everything here talks to a real chatd process over real sockets on 127.0.0.1:

* ``Client``: an asyncio WebSocket client (python3-websockets 10.4) that
  speaks the chat.v1 JSON protocol and never skips a frame silently.
* ``RawWS``: a hand-rolled, blocking RFC 6455 client for the tests that need
  to misbehave (never answer pings, stop reading, binary / invalid UTF-8 /
  oversized / fragmented frames) and to read the close frame's code.
* ``http_get`` / ``raw_upgrade``: plain HTTP requests.
* ``parse_metrics``: the Prometheus text exposition format.
* ``toml_dumps``: enough of TOML to write chatd configs.
"""

import asyncio
import base64
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import struct
import time

import websockets
import websockets.exceptions

# ---------------------------------------------------------------------------
# timing

SANITIZE = os.environ.get("CHATD_SANITIZE", "") not in ("", "0", "OFF", "off", "false", "FALSE")
SCALE = 3.0 if SANITIZE else 1.0


def scaled(seconds):
    """A timeout, stretched for the (slower) ASan+UBSan build."""
    return seconds * SCALE


# Default time to wait for a frame that must arrive.
RECV_TIMEOUT = scaled(5.0)


def run(coro, timeout=60.0):
    """Run an async test body with an overall (scaled) time bound."""

    async def bounded():
        return await asyncio.wait_for(coro, scaled(timeout))

    return asyncio.run(bounded())


def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Poll pred() until it returns a truthy value; return it, or fail."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))
        time.sleep(interval)


async def async_wait_until(pred, timeout, interval=0.02, what="condition"):
    """Like wait_until, for use inside a running event loop.

    pred is a plain (blocking but quick) callable; it is called in a worker
    thread so websockets clients in this loop keep answering pings."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = await asyncio.to_thread(pred)
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------
# TOML

def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError("cannot write %r as TOML" % (v,))


def toml_dumps(cfg):
    """cfg: {"section": {"key": value}}. Returns TOML text, one key a line."""
    out = []
    for section, keys in cfg.items():
        out.append("[%s]" % section)
        for k, v in keys.items():
            out.append("%s = %s" % (k, _toml_value(v)))
        out.append("")
    return "\n".join(out)


def merge_config(base, overrides):
    """Deep-merge {"section": {"key": v}} dicts; a value of None deletes a key."""
    merged = {s: dict(k) for s, k in base.items()}
    for section, keys in (overrides or {}).items():
        tgt = merged.setdefault(section, {})
        for k, v in keys.items():
            if v is None:
                tgt.pop(k, None)
            else:
                tgt[k] = v
    return merged


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


# ---------------------------------------------------------------------------
# HTTP

def http_get(port, path, headers=None, timeout=5.0, tls=False, source=None):
    """GET http(s)://127.0.0.1:port/path -> (status, {lower-case header: value}, body bytes).
    tls=True: https without certificate checks (tests' self-signed certificates).
    source: the local address to connect from (any of 127.0.0.0/8), default 127.0.0.1."""
    src = (source, 0) if source else None
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, source_address=src,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=src)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, hdrs, body
    finally:
        conn.close()


def _read_http_head(sock, timeout):
    """Read an HTTP response head. Returns (status, headers, leftover bytes)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("EOF before the end of the HTTP response head: %r" % buf)
        buf += chunk
        if len(buf) > 65536:
            raise AssertionError("HTTP response head too long")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    assert m, "bad status line %r" % lines[0]
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(m.group(1)), hdrs, rest


def _ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def _ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


def _upgrade_request(port, path, key, subprotocols, origin, extra_headers):
    lines = [
        "GET %s HTTP/1.1" % path,
        "Host: 127.0.0.1:%d" % port,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: %s" % key,
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocols:
        lines.append("Sec-WebSocket-Protocol: %s" % ", ".join(subprotocols))
    if origin is not None:
        lines.append("Origin: %s" % origin)
    for k, v in (extra_headers or {}).items():
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def raw_upgrade(port, path="/ws", origin=None, subprotocols=("chat.v1",), timeout=5.0):
    """Attempt a WebSocket upgrade and report the HTTP outcome without speaking WebSocket.

    Returns (status, headers, body). The socket is closed afterwards."""
    key = _ws_key()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(_upgrade_request(port, path, key, subprotocols, origin, None))
        status, hdrs, rest = _read_http_head(sock, timeout)
        body = rest
        if status != 101:
            n = int(hdrs.get("content-length", "0") or 0)
            sock.settimeout(timeout)
            while len(body) < n:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                body += chunk
        return status, hdrs, body
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# metrics

_METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


class Metrics:
    """Parsed Prometheus text: samples, and the # TYPE of each family."""

    def __init__(self, text):
        self.text = text
        self.samples = {}   # (name, frozenset(labels.items())) -> float
        self.types = {}     # family name -> type
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                continue
            m = _METRIC_RE.match(line)
            assert m, "unparsable metrics line: %r" % line
            name, labels_s, value = m.groups()
            labels = {}
            if labels_s:
                pos = 0
                while pos < len(labels_s):
                    lm = _LABEL_RE.match(labels_s, pos)
                    assert lm, "bad labels in metrics line %r" % line
                    labels[lm.group(1)] = lm.group(2)
                    pos = lm.end()
            key = (name, frozenset(labels.items()))
            assert key not in self.samples, "duplicate sample %r" % line
            self.samples[key] = float(value)

    def names(self):
        return {n for n, _ in self.samples}

    def get(self, name, default=None, **labels):
        return self.samples.get((name, frozenset(labels.items())), default)

    def value(self, name, **labels):
        """The sample's value; a missing sample fails the test."""
        v = self.get(name, **labels)
        assert v is not None, "metric %s%r missing from /metrics:\n%s" % (name, labels, self.text)
        return v

    def sum(self, name):
        return sum(v for (n, _), v in self.samples.items() if n == name)


def parse_metrics(text):
    return Metrics(text)


# ---------------------------------------------------------------------------
# asyncio client

class Closed(Exception):
    """The server closed the connection while a frame was expected."""

    def __init__(self, code, reason):
        super().__init__("connection closed: code=%r reason=%r" % (code, reason))
        self.code = code
        self.reason = reason


class Client:
    """A chat.v1 client over python3-websockets (which answers pings itself)."""

    def __init__(self, ws, label=""):
        self.ws = ws
        self.label = label
        self.name = None
        self.session = None

    @classmethod
    async def connect(cls, port, path="/ws", subprotocols=("chat.v1",), origin=None,
                      max_size=1 << 24, label="", timeout=None, **kw):
        kwargs = dict(
            subprotocols=list(subprotocols) if subprotocols else None,
            max_size=max_size,
            ping_interval=None,       # only the server pings
            close_timeout=scaled(2.0),
            open_timeout=timeout or scaled(5.0),
            max_queue=None,           # never stall the TCP stream because the test reads late
        )
        if origin is not None:
            kwargs["origin"] = origin
        kwargs.update(kw)
        ws = await websockets.connect("ws://127.0.0.1:%d%s" % (port, path), **kwargs)
        return cls(ws, label)

    # -- sending

    async def send(self, obj):
        await self.ws.send(json.dumps(obj))

    async def send_text(self, text):
        await self.ws.send(text)

    # -- receiving

    async def recv(self, timeout=None):
        """The next frame as a dict; fails on timeout; raises Closed on close."""
        timeout = RECV_TIMEOUT if timeout is None else timeout
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("%s: no frame within %.1fs" % (self.label or self.name, timeout)) from None
        except websockets.exceptions.ConnectionClosed as e:
            raise Closed(self.ws.close_code, self.ws.close_reason) from e
        assert isinstance(raw, str), "%s: server sent a binary frame: %r" % (self.label or self.name, raw[:100])
        obj = json.loads(raw)
        assert isinstance(obj, dict), "server frame is not a JSON object: %r" % raw
        assert isinstance(obj.get("type"), str), "server frame has no string type: %r" % raw
        return obj

    async def expect(self, type_, timeout=None, **fields):
        """The very next frame must have this type (and these field values)."""
        msg = await self.recv(timeout)
        assert msg["type"] == type_, "%s: expected %r, got %r" % (self.label or self.name, type_, msg)
        for k, v in fields.items():
            assert msg.get(k) == v, "%s: expected %s=%r in %r" % (self.label or self.name, k, v, msg)
        return msg

    async def expect_error(self, code, ref=None, timeout=None):
        msg = await self.expect("error", timeout)
        assert msg.get("code") == code, "expected error %r, got %r" % (code, msg)
        assert isinstance(msg.get("message"), str), "error without a message string: %r" % msg
        if ref is not None:
            assert msg.get("ref") == ref, "error does not echo ref %r: %r" % (ref, msg)
        return msg

    async def request(self, obj, type_, timeout=None):
        await self.send(obj)
        return await self.expect(type_, timeout)

    async def recv_n(self, n, timeout=None):
        return [await self.recv(timeout) for _ in range(n)]

    async def expect_unordered(self, types, timeout=None):
        """The next len(types) frames have exactly these types in some order.

        Returns {type: frame}. Only for places where the contract leaves the
        order open (e.g. a sender's ack vs its own message event)."""
        frames = await self.recv_n(len(types), timeout)
        got = sorted(f["type"] for f in frames)
        assert got == sorted(types), "expected frames %r, got %r" % (sorted(types), frames)
        return {f["type"]: f for f in frames}

    async def expect_silence(self, duration):
        """No frame arrives within duration (use short durations)."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), duration)
        except asyncio.TimeoutError:
            return
        except websockets.exceptions.ConnectionClosed:
            raise Closed(self.ws.close_code, self.ws.close_reason) from None
        raise AssertionError("%s: unexpected frame %r" % (self.label or self.name, raw))

    async def expect_closed(self, timeout=None):
        """The server closes the connection (with no other frame first). Returns (code, reason)."""
        timeout = RECV_TIMEOUT if timeout is None else timeout
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("%s: connection still open after %.1fs" % (self.label or self.name, timeout)) from None
        except websockets.exceptions.ConnectionClosed:
            return self.ws.close_code, self.ws.close_reason
        raise AssertionError("%s: expected close, got frame %r" % (self.label or self.name, raw))

    # -- protocol shortcuts

    async def hello(self, name, **extra):
        await self.send(dict({"type": "hello", "name": name}, **extra))
        w = await self.expect("welcome")
        assert w.get("name") == name, w
        self.name = name
        self.session = w.get("session")
        if not self.label:
            self.label = name
        return w

    async def join(self, room, **extra):
        await self.send(dict({"type": "join", "room": room}, **extra))
        j = await self.expect("joined")
        assert j.get("room") == room, j
        return j

    async def ping_pong(self, timeout=None):
        """Prove the connection is alive and nothing else is queued before the pong."""
        await self.send({"type": "ping", "ref": "alive?"})
        await self.expect("pong", timeout, ref="alive?")

    async def close(self):
        try:
            await self.ws.close()
        except Exception:
            pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


# ---------------------------------------------------------------------------
# raw RFC 6455 client

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def encode_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
    """One WebSocket frame. length overrides the declared payload length (to lie)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        head += key
        payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return head + payload


class RawWS:
    """A blocking WebSocket client that does exactly what the test says.

    It never answers pings unless auto_pong=True (it records them in .pings),
    and it never replies to a close frame."""

    def __init__(self, sock, leftover, subprotocol, headers):
        self.sock = sock
        self.buf = bytearray(leftover)
        self.subprotocol = subprotocol
        self.headers = headers
        self.pings = 0
        self.closed = False

    @classmethod
    def connect(cls, port, path="/ws", subprotocols=("chat.v1",), origin=None, rcvbuf=None, timeout=5.0,
                ssl_context=None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # must be set before connect() for the window scale to honour it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname="127.0.0.1")
        key = _ws_key()
        sock.sendall(_upgrade_request(port, path, key, subprotocols, origin, None))
        status, hdrs, rest = _read_http_head(sock, timeout)
        if status != 101:
            sock.close()
            raise AssertionError("WebSocket upgrade refused: HTTP %d %r" % (status, hdrs))
        assert hdrs.get("sec-websocket-accept") == _ws_accept(key), "bad Sec-WebSocket-Accept: %r" % hdrs
        return cls(sock, rest, hdrs.get("sec-websocket-protocol"), hdrs)

    # -- sending

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0):
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, mask=mask, rsv=rsv))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def send_close(self, code=1000, reason=b""):
        self.send_frame(OP_CLOSE, struct.pack("!H", code) + reason)

    # -- receiving

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("raw client: no data before the deadline")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("raw client: no data before the deadline") from None
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                raise EOFError("raw client: connection closed by the server")
            self.buf += chunk

    def _take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def recv_frame(self, timeout=None):
        """Next frame -> (opcode, payload bytes, fin). Raises TimeoutError / EOFError."""
        deadline = time.monotonic() + (RECV_TIMEOUT if timeout is None else timeout)
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        hl = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", bytes(self.buf[2:4]))[0]
            hl = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", bytes(self.buf[2:10]))[0]
            hl = 10
        assert not (b1 & 0x80), "server frame is masked"
        assert not (b0 & 0x70), "server frame has RSV bits set"
        self._fill(hl + n, deadline)
        self._take(hl)
        return b0 & 0x0F, self._take(n), bool(b0 & 0x80)

    def recv_msg(self, timeout=None, auto_pong=False):
        """Next data or close frame, handling pings. Returns (opcode, payload)."""
        deadline = time.monotonic() + (RECV_TIMEOUT if timeout is None else timeout)
        while True:
            op, payload, fin = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if op == OP_PING:
                self.pings += 1
                if auto_pong:
                    self.send_frame(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            assert fin, "server sent a fragmented message; the raw client does not reassemble"
            return op, payload

    def recv_json(self, timeout=None, auto_pong=False):
        op, payload = self.recv_msg(timeout, auto_pong)
        if op == OP_CLOSE:
            raise Closed(*parse_close(payload))
        assert op == OP_TEXT, "expected a text frame, got opcode %d %r" % (op, payload[:100])
        obj = json.loads(payload.decode("utf-8"))
        assert isinstance(obj, dict) and isinstance(obj.get("type"), str), obj
        return obj

    def expect(self, type_, timeout=None, auto_pong=False, **fields):
        msg = self.recv_json(timeout, auto_pong)
        assert msg["type"] == type_, "raw: expected %r, got %r" % (type_, msg)
        for k, v in fields.items():
            assert msg.get(k) == v, "raw: expected %s=%r in %r" % (k, v, msg)
        return msg

    def hello(self, name):
        self.send_json({"type": "hello", "name": name})
        return self.expect("welcome", name=name)

    def join(self, room):
        self.send_json({"type": "join", "room": room})
        return self.expect("joined", room=room)

    def wait_closed(self, timeout=None, auto_pong=False, collect=None, reply=False):
        """Read until the server closes. Returns ("close", code, reason) when a
        close frame arrives, or ("eof", None, None) when the TCP stream ends
        (or is reset) first. Data frames are appended to collect (if a list).
        reply=True answers the close frame like a well-behaved client."""
        deadline = time.monotonic() + (RECV_TIMEOUT if timeout is None else timeout)
        while True:
            try:
                op, payload = self.recv_msg(max(0.0, deadline - time.monotonic()), auto_pong)
            except EOFError:
                return ("eof", None, None)
            except TimeoutError:
                raise AssertionError("raw client: connection still open after %.1fs" % (
                    RECV_TIMEOUT if timeout is None else timeout)) from None
            if op == OP_CLOSE:
                code, reason = parse_close(payload)
                if reply:
                    try:
                        self.send_frame(OP_CLOSE, payload[:2])
                    except OSError:
                        pass
                return ("close", code, reason)
            if collect is not None:
                collect.append((op, payload))

    def expect_close_code(self, code, timeout=None, reply=False):
        kind, got, reason = self.wait_closed(timeout, reply=reply)
        assert kind == "close", "expected a close frame with code %d, the connection just ended" % code
        assert got == code, "expected close code %d, got %r (%r)" % (code, got, reason)
        return reason

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_close(payload):
    if len(payload) >= 2:
        return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")
    return None, ""
