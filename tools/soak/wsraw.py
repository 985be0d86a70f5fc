"""A minimal raw RFC 6455 client on plain sockets, for the soak's misbehaving clients.

python3-websockets answers pings and refuses to send broken frames, which is
right for a well-behaved client and useless for the hostile ones. This client
does exactly what it is told: it sends oversized, binary, invalid UTF-8 or
malformed frames, and it never answers a ping (it reads them and drops them).

Everything is blocking with a deadline (the soak runs these in worker threads
via asyncio.to_thread); select() bounds every wait.
"""

import base64
import json
import os
import select
import socket
import struct
import time

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class Closed(Exception):
    """The connection ended: code is the close frame's code, or 1006 without one."""

    def __init__(self, code, reason=""):
        super().__init__("closed %s %s" % (code, reason))
        self.code = code
        self.reason = reason


class RawWS:
    def __init__(self, host, port, timeout=5.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # Before connect(), so the advertised window stays small: a slow
            # reader then backs up into the server's queue quickly.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""
        self.pings = 0
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: chat.v1\r\n\r\n" % (host, port, key))
        self.sock.sendall(req.encode())
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            self.sock.close()
            raise ConnectionError("upgrade refused: %r" % status)

    # -- low level

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("raw ws: timed out")
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            raise TimeoutError("raw ws: timed out")
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            raise Closed(1006, "reset")
        if not chunk:
            raise Closed(1006, "eof")
        self.buf += chunk

    def send_frame(self, opcode, payload, fin=True, announce=None):
        """One masked frame. announce: the length to put in the header (a lie
        for the oversized-frame test; only the first bytes are then sent)."""
        n = len(payload) if announce is None else announce
        b0 = (0x80 if fin else 0) | opcode
        if n < 126:
            head = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", b0, 0x80 | 127, n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        try:
            self.sock.sendall(head + mask + body)
        except (ConnectionResetError, BrokenPipeError):
            raise Closed(1006, "reset on send")

    def send_json(self, obj):
        self.send_frame(OP_TEXT, json.dumps(obj).encode())

    def read_frame(self, deadline):
        """Next data frame -> (opcode, payload). Pings are read and never
        answered; a close frame raises Closed with its code."""
        while True:
            while len(self.buf) < 2:
                self._fill(deadline)
            b0, b1 = self.buf[0], self.buf[1]
            n = b1 & 0x7F
            off = 2
            if n == 126:
                while len(self.buf) < 4:
                    self._fill(deadline)
                n = struct.unpack("!H", self.buf[2:4])[0]
                off = 4
            elif n == 127:
                while len(self.buf) < 10:
                    self._fill(deadline)
                n = struct.unpack("!Q", self.buf[2:10])[0]
                off = 10
            while len(self.buf) < off + n:
                self._fill(deadline)
            payload = self.buf[off:off + n]
            self.buf = self.buf[off + n:]
            op = b0 & 0x0F
            if op == OP_PING:
                self.pings += 1
                continue                      # never answered, on purpose
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise Closed(code, payload[2:].decode("utf-8", "replace"))
            return op, payload

    def recv_json(self, deadline):
        op, payload = self.read_frame(deadline)
        return json.loads(payload)

    def wait_close(self, timeout):
        """Read (and drop) frames until the close -> (code, reason, frames read)."""
        deadline = time.monotonic() + timeout
        frames = 0
        try:
            while True:
                self.read_frame(deadline)
                frames += 1
        except Closed as e:
            return e.code, e.reason, frames

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
