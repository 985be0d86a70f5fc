#!/usr/bin/python3
"""chatd soak and chaos run: a mixed workload under scheduled faults, recorded.

    tools/soak/soak.py --chatd build/chatd --mode single --duration 60 --seed 1 --out /tmp/soak

runs chatd (one node with SQLite storage, or --mode cluster: three nodes and a
real redis-server) on loopback, drives a seeded workload against it (fan-out
rooms, many small rooms, DMs, churn, resumes after cut sockets, slow
consumers, clients that never answer pings, oversized and malformed frames),
injects faults on a seeded schedule (kill -9 + restart, SIGTERM + restart,
SIGHUP, a full disk for the SQLite file, CPU starvation, Redis stopped /
killed / paused / wiped) and writes every operation and its outcome to
OUT/history.jsonl. It judges nothing: tools/soak/check.py reads the history
afterwards and applies the rules; tools/soak/report.py writes the report.

Bounded: a fixed number of clients, a fixed duration, then a drain (every
client reconnects and resumes, unacked sends are retried), an audit of every
room's history, a clean stop of every process. Only 127.0.0.1.
"""

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

import websockets
import websockets.exceptions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsraw  # noqa: E402

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: AddressSanitizer", "ERROR: UndefinedBehaviorSanitizer")

SINGLE_FAULTS = ["kill9", "term", "hup", "diskfull", "cpu"]
CLUSTER_FAULTS = ["kill9", "term", "hup", "cpu", "redis_stop", "redis_kill", "redis_pause", "redis_wipe"]

MAX_MESSAGE = 4096
MAX_FRAME = 65536


def crc(s):
    return zlib.crc32(s.encode()) & 0xFFFFFFFF


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---------------------------------------------------------------------------
# the history


class History:
    """JSONL, one record per operation or outcome, in the order the soak saw
    them. t is seconds since the start of the run (wall clock)."""

    def __init__(self, path):
        self.f = open(path, "w", buffering=1 << 16)
        self.t0 = time.time()
        self.lock = threading.Lock()     # hostile clients record from threads
        self.last_recv = time.monotonic()

    def now(self):
        return round(time.time() - self.t0, 4)

    def rec(self, ev, **kw):
        kw["t"] = self.now()
        kw["ev"] = ev
        line = json.dumps(kw, separators=(",", ":")) + "\n"
        with self.lock:
            self.f.write(line)

    def close(self):
        with self.lock:
            self.f.close()


# ---------------------------------------------------------------------------
# processes: chatd nodes and redis


class Node:
    """One chatd process (restartable). Its output goes through a pipe to the
    log file, so a file-size limit on chatd never hits its own log."""

    def __init__(self, soak, idx, cfg):
        self.soak = soak
        self.idx = idx
        self.port = free_port()
        cfg["server"]["port"] = self.port
        cfg["server"]["node_id"] = "n%d" % idx
        self.dir = os.path.join(soak.out, "node%d" % idx)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "chatd.toml")
        self.log = os.path.join(self.dir, "chatd.log")
        with open(self.conf, "w") as f:
            f.write(toml(cfg))
        self.proc = None
        self.incarnation = 0
        self.up = False            # accepting clients, as far as the soak knows
        self.paused = False

    def start(self):
        self.incarnation += 1
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        supp = os.path.join(self.soak.repo, "tests", "lsan.supp")
        env.setdefault("LSAN_OPTIONS", "exitcode=23:suppressions=%s" % supp)
        self.proc = subprocess.Popen([self.soak.chatd, "-c", self.conf], cwd=self.dir, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        threading.Thread(target=self._copy_log, args=(self.proc,), daemon=True).start()
        self.soak.h.rec("node_start", node=self.idx, pid=self.proc.pid, inc=self.incarnation,
                        port=self.port)

    def _copy_log(self, proc):
        with open(self.log, "ab") as f:
            for line in proc.stdout:
                f.write(line)
                f.flush()

    async def wait_healthy(self, timeout, any_answer=False):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("node %d exited with %s at start" % (self.idx, self.proc.returncode))
            st = await http_status(self.port, "/healthz")
            if st == 200 or (any_answer and st):
                self.up = True
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("node %d: /healthz not 200 within %ds" % (self.idx, timeout))

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    async def wait_exit(self, timeout):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.soak.h.rec("node_hang", node=self.idx, pid=self.proc.pid)
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        rc = self.proc.returncode
        self.soak.h.rec("node_exit", node=self.idx, pid=self.proc.pid, rc=rc)
        self.up = False
        return rc

    def sample(self):
        if not self.proc or self.proc.poll() is not None:
            return None
        pid = self.proc.pid
        try:
            with open("/proc/%d/status" % pid) as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            fds = len(os.listdir("/proc/%d/fd" % pid))
        except (OSError, StopIteration):
            return None
        return rss, fds


class Redis:
    def __init__(self, soak):
        self.soak = soak
        self.port = free_port()
        self.dir = os.path.join(soak.out, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.paused = False

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    async def start(self):
        # AOF fsynced on every write: a restart keeps every acked message, so
        # an epoch change after a plain restart would be a real loss.
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log"),
                "--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.write(b"PING\r\n")
                ok = (await asyncio.wait_for(r.read(16), 2)).startswith(b"+PONG")
                w.close()
                if ok:
                    self.soak.h.rec("redis_start", pid=self.proc.pid)
                    return
            except (OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    async def stop(self, sig=signal.SIGTERM):
        if self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            await asyncio.to_thread(self.proc.wait)
            self.soak.h.rec("redis_exit", rc=self.proc.returncode)

    def wipe(self):
        for name in os.listdir(self.dir):
            if name != "redis.log":
                p = os.path.join(self.dir, name)
                shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)


async def http_status(port, path):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        w.write(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        line = await asyncio.wait_for(r.readline(), 2)
        w.close()
        return int(line.split()[1])
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return None


def toml(cfg):
    out = []
    for sec, keys in cfg.items():
        out.append("[%s]" % sec)
        for k, v in keys.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, str):
                v = json.dumps(v)
            out.append("%s = %s" % (k, v))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# well-behaved clients (python3-websockets)


class RoomState:
    """What a client holds for one room: the epoch and the highest seq up to
    which it has every message (plus seqs received above a hole, while a
    truncated replay is being filled from history)."""

    def __init__(self, epoch, seq):
        self.epoch = epoch
        self.last = seq
        self.ahead = set()

    def add(self, seq):
        if seq == self.last + 1:
            self.last = seq
            while self.last + 1 in self.ahead:
                self.ahead.discard(self.last + 1)
                self.last += 1
        elif seq > self.last + 1:
            self.ahead.add(seq)


class Gone(Exception):
    """The connection is gone (or a reply did not come): reconnect and resume."""


class Actor:
    """One logical chat user: a fixed name, rooms it is a member of across
    reconnects, sends it keeps retrying with the same id until acked."""

    def __init__(self, soak, name, role, rooms):
        self.s = soak
        self.h = soak.h
        self.name = name
        self.role = role
        self.want = list(rooms)
        self.rooms = {}            # room -> RoomState, while a member
        self.joining = set()       # rooms with a join in flight (replays arrive)
        self.replayed = {}         # room -> seqs replayed by the join in flight
        self.ws = None
        self.c = None
        self.reader = None
        self.waiters = {}
        self.pending = {}          # id -> (room, body): sent, not acked
        self.nid = 0
        self.nref = 0
        self.stall_until = 0.0
        self.closing = False
        self.rng = random.Random("%s/%s" % (soak.seed, name))

    # -- connection

    async def connect(self):
        delay = 0.1
        for _ in range(200):
            if self.s.hard_stop:
                raise Gone("stopping")
            node = self.s.pick_node(self.rng)
            self.c = self.s.next_c()
            self.h.rec("connect", c=self.c, n=self.name, node=node.idx)
            try:
                await self._open(node)
                return
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException, Gone) as e:
                self.h.rec("connect_fail", c=self.c, n=self.name, err=type(e).__name__ + ": " + str(e)[:80])
                if self.ws is not None:
                    self.ws.transport.abort()
                    self.ws = None
            await asyncio.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, 2.0)
        raise Gone("could not connect")

    async def _open(self, node):
        kw = {}
        if self.role == "slow":
            # A small receive window: a stalled reader backs up into chatd's
            # queue after a few KB instead of megabytes of kernel buffers.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.port)), 5)
            kw["sock"] = sock
        ws = await websockets.connect("ws://127.0.0.1:%d/ws" % node.port, subprotocols=["chat.v1"],
                                      open_timeout=10, ping_interval=None, close_timeout=2,
                                      compression=None, max_size=1 << 20,
                                      max_queue=4 if self.role == "slow" else 4096,
                                      read_limit=4096 if self.role == "slow" else 1 << 16, **kw)
        self.ws = ws
        await ws.send(json.dumps({"type": "hello", "name": self.name, "ref": "h"}))
        m = json.loads(await asyncio.wait_for(ws.recv(), self.s.reply_timeout))
        if m.get("type") == "welcome":
            self.h.rec("welcome", c=self.c, n=self.name, session=m["session"], node=m.get("node"))
        else:
            self.h.rec("err", c=self.c, n=self.name, code=m.get("code"), ref=m.get("ref"),
                       msg=str(m.get("message"))[:100], cmd="hello")
            await ws.close()
            raise Gone("hello refused: %s" % m.get("code"))
        self.closing = False
        self.reader = asyncio.create_task(self.read_loop(ws, self.c))

    async def read_loop(self, ws, c):
        try:
            while True:
                while self.stall_until > time.monotonic():
                    await asyncio.sleep(min(0.2, self.stall_until - time.monotonic() + 0.001))
                raw = await ws.recv()
                self.h.last_recv = time.monotonic()
                self.on_frame(json.loads(raw), c)
        except websockets.exceptions.ConnectionClosed as e:
            code, reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd else (1006, "")
            self.h.rec("close", c=c, n=self.name, code=code, reason=reason,
                       by="client" if self.closing else "server", role=self.role)
        except asyncio.CancelledError:
            raise
        finally:
            if self.ws is ws:
                self.ws = None
            self.joining.clear()
            for fut in self.waiters.values():
                if not fut.done():
                    fut.set_exception(Gone("connection closed"))
            self.waiters.clear()

    def on_frame(self, m, c):
        t = m.get("type")
        ref = m.get("ref")
        h = self.h
        if t == "message":
            room = m["room"]
            st = self.rooms.get(room)
            h.rec("recv", c=c, n=self.name, r=room, s=m["seq"], f=m["from"], i=m["id"],
                  k=crc(m["body"]), rp=1 if room in self.joining else 0)
            if st is not None and room not in self.joining:
                st.add(m["seq"])
            elif room in self.joining:
                self.replayed.setdefault(room, []).append(m["seq"])
        elif t == "ack":
            if "room" in m:
                h.rec("ack", c=c, n=self.name, r=m["room"], i=m["id"], s=m["seq"])
            else:
                h.rec("dm_ack", c=c, n=self.name, i=m["id"])
            self.pending.pop(m["id"], None)
        elif t == "error":
            h.rec("err", c=c, n=self.name, code=m.get("code"), ref=ref, msg=str(m.get("message"))[:100])
        elif t == "joined":
            room = m["room"]
            h.rec("joined", c=c, n=self.name, r=room, s=m["seq"], e=m["epoch"],
                  rcv=m.get("recovered"), tr=m.get("truncated"))
            # Here, not in join(): live messages may follow at once, and they
            # must find the room state in place.
            st = self.rooms.get(room)
            if st is None or st.epoch != m["epoch"]:
                st = RoomState(m["epoch"], m["seq"])
            else:
                for s in self.replayed.get(room, []):
                    st.add(s)
            self.rooms[room] = st
            self.joining.discard(room)
        elif t == "left":
            h.rec("left", c=c, n=self.name, r=m["room"])
            self.rooms.pop(m["room"], None)
        elif t == "history":
            h.rec("hist", c=c, n=self.name, r=m["room"],
                  m=[[x["seq"], x["from"], x["id"], crc(x["body"])] for x in m["messages"]])
            st = self.rooms.get(m["room"])
            if st is not None:
                for x in m["messages"]:
                    st.add(x["seq"])
        elif t == "reset":
            h.rec("reset", c=c, n=self.name, r=m["room"], e=m["epoch"], s=m["seq"])
            if m["room"] in self.rooms:
                self.rooms[m["room"]] = RoomState(m["epoch"], m["seq"])
        elif t == "direct":
            h.rec("drecv", c=c, n=self.name, f=m["from"], i=m["id"], k=crc(m["body"]))
        elif t in ("presence", "pong", "members"):
            pass
        else:
            h.rec("unknown_frame", c=c, n=self.name, frame=str(m)[:200])
        if ref is not None and ref in self.waiters:
            fut = self.waiters.pop(ref)
            if not fut.done():
                fut.set_result(m)

    def next_ref(self):
        self.nref += 1
        return "%s#%d" % (self.name, self.nref)

    async def request(self, obj, timeout=None):
        ws = self.ws
        if ws is None:
            raise Gone("not connected")
        ref = obj.get("ref") or self.next_ref()
        obj["ref"] = ref
        fut = asyncio.get_running_loop().create_future()
        self.waiters[ref] = fut
        try:
            await ws.send(json.dumps(obj))
            return await asyncio.wait_for(fut, timeout or self.s.reply_timeout)
        except asyncio.TimeoutError:
            self.h.rec("timeout", c=self.c, n=self.name, cmd=obj["type"], ref=ref)
            self.cut("reply timeout")
            raise Gone("timeout")
        except websockets.exceptions.ConnectionClosed:
            raise Gone("closed")
        finally:
            self.waiters.pop(ref, None)

    def cut(self, why):
        """Drop the TCP connection without a close frame (a cut socket)."""
        if self.ws is not None:
            self.h.rec("cut", c=self.c, n=self.name, why=why)
            self.closing = True
            self.ws.transport.abort()

    async def ensure(self):
        """Connected, every room resumed, unacked sends retried."""
        if self.ws is not None and self.reader is not None and not self.reader.done():
            return
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)
        await self.connect()
        for room in list(self.rooms):
            await self.join(room, resume=True)
        for mid in list(self.pending):
            await self.send_id(mid)

    # -- commands

    async def join(self, room, resume=False):
        st = self.rooms.get(room) if resume else None
        obj = {"type": "join", "room": room}
        if st is not None:
            obj["since"] = st.last
            obj["epoch"] = st.epoch
        self.h.rec("join", c=self.c, n=self.name, r=room, since=obj.get("since"), epoch=obj.get("epoch"))
        self.replayed[room] = []
        self.joining.add(room)
        try:
            m = await self.request(obj)
        finally:
            self.joining.discard(room)
        if m["type"] != "joined":
            return False
        st = self.rooms[room]
        if m.get("truncated"):
            for _ in range(200):
                if st.last >= m["seq"]:
                    break
                r = await self.request({"type": "history", "room": room, "after": st.last, "limit": 500})
                if r["type"] != "history" or not r["messages"]:
                    break
        return True

    async def leave(self, room):
        self.h.rec("leave", c=self.c, n=self.name, r=room)
        m = await self.request({"type": "leave", "room": room})
        if m["type"] == "error" and m.get("code") == "not_found":
            self.rooms.pop(room, None)

    def new_body(self, big=False):
        if big:     # ASCII, so the byte length is the length: up to the limit, not over it
            return "".join(self.rng.choice("abcdefghij ") for _ in range(self.rng.randint(3000, MAX_MESSAGE - 100)))
        n = self.rng.choice((8, 30, 120, 400))
        return "".join(self.rng.choice("abcdefghij\u00e9\"\\ \n") for _ in range(n))

    async def send(self, room, big=False):
        self.nid += 1
        mid = "%s.%d" % (self.name, self.nid)
        body = mid + "|" + self.new_body(big)
        self.pending[mid] = (room, body)
        await self.send_id(mid)

    async def send_id(self, mid):
        room, body = self.pending[mid]
        if room not in self.rooms:
            self.pending.pop(mid, None)
            self.h.rec("give_up", c=self.c, n=self.name, i=mid, r=room, why="not a member")
            return
        ref = self.next_ref()
        self.h.rec("send", c=self.c, n=self.name, r=room, i=mid, k=crc(body), len=len(body), ref=ref)
        m = await self.request({"type": "send", "room": room, "id": mid, "body": body, "ref": ref})
        if m["type"] == "error" and m.get("code") not in ("unavailable", "rate_limited", "internal", "forbidden"):
            self.pending.pop(mid, None)
            self.h.rec("give_up", c=self.c, n=self.name, i=mid, r=room, why=m.get("code"))

    async def dm(self, to):
        self.nid += 1
        mid = "%s.d%d" % (self.name, self.nid)
        body = mid + "|" + self.new_body()
        self.h.rec("dm", c=self.c, n=self.name, to=to, i=mid, k=crc(body))
        await self.request({"type": "dm", "to": to, "id": mid, "body": body})

    async def close(self):
        if self.ws is not None:
            self.h.rec("client_close", c=self.c, n=self.name)
            self.closing = True
            await self.ws.close()
            await asyncio.gather(self.reader, return_exceptions=True)

    # -- workload

    async def run(self):
        while not self.s.stop_load:
            try:
                await self.ensure()
                for room in self.want:
                    if room not in self.rooms:
                        await self.join(room)
                await self.step()
            except Gone:
                await asyncio.sleep(0.2 + self.rng.random() * 0.5)

    async def step(self):
        rng = self.rng
        await asyncio.sleep(rng.uniform(0.4, 2.4) / self.s.load)
        if self.s.stop_load:
            return
        x = rng.random()
        if self.role == "firehose":
            # A burst of big messages into slow-0 while a slow consumer there
            # stalls: more than its queue (256 KB) and its small socket
            # buffers hold, so chatd must close it (1008) and it resumes.
            try:
                await asyncio.wait_for(self.s.flood.wait(), 2)
            except asyncio.TimeoutError:
                return
            self.s.flood.clear()
            self.h.rec("flood", c=self.c, n=self.name)
            # pipelined, not one ack at a time: the burst must land within
            # the stall. About 4.5 MB: loopback's 64 KB MSS lets the kernel
            # autotune chatd's socket send buffer to megabytes, which fill
            # before chatd's own queue does.
            await asyncio.gather(*(self.send("slow-0", big=True) for _ in range(1200)))
            return
        if self.role == "slow" and x < 0.15:
            flood = time.monotonic() - self.s.last_flood > 45
            self.h.rec("stall", c=self.c, n=self.name, flood=flood)
            if flood:
                # just under the heartbeat timeout: evicted for its queue
                self.s.last_flood = time.monotonic()
                self.stall_until = time.monotonic() + self.s.hb_timeout - 1.5
                self.s.flood.set()
            else:
                self.stall_until = time.monotonic() + rng.uniform(2.0, 5.0)
            return
        if x < 0.01:
            self.cut("chaos")
            return
        if x < 0.08:
            await self.dm(rng.choice(self.s.names))
            return
        if self.role == "churn" and x < 0.30:
            await self.churn()
            return
        if self.pending and x < 0.12:
            # retry the oldest unacked send (refused with unavailable, say)
            await self.send_id(next(iter(self.pending)))
            return
        if self.rooms:
            await self.send(rng.choice(sorted(self.rooms)), big=rng.random() < 0.02)

    async def churn(self):
        rng = self.rng
        y = rng.random()
        if y < 0.35 and self.rooms:
            # leave a room for good and take another one
            room = rng.choice(sorted(self.rooms))
            await self.leave(room)
            self.want = [r for r in self.want if r != room]
            self.want.append(rng.choice(self.s.small_rooms))
        elif y < 0.7:
            # close cleanly, stay away a while, come back with since
            await self.close()
            await asyncio.sleep(rng.uniform(0.5, 3.0))
        else:
            # leave everything, close, come back as a new member
            for room in sorted(self.rooms):
                await self.leave(room)
            await self.close()
            await asyncio.sleep(rng.uniform(0.2, 2.0))

    async def drain(self):
        """After the load: connected, resumed, every unacked send retried."""
        for _ in range(10):
            try:
                await self.ensure()
                for room in self.want:
                    if room not in self.rooms:
                        await self.join(room)
                for mid in list(self.pending):
                    await self.send_id(mid)
                if not self.pending:
                    return
            except Gone:
                await asyncio.sleep(0.5)


# ---------------------------------------------------------------------------
# hostile clients (raw sockets, in threads)

HOSTILE = {
    # kind: (what it sends, the documented outcome)
    "oversize": "close 1009",
    "binary": "close 1003",
    "badutf8": "close 1007",
    "badjson": "error bad_request",
    "unknown": "error bad_request",
    "prehello": "error not_authenticated",
    "toolarge": "error too_large",
    "nopong": "close 1001",
}


def hostile_one(soak, kind, node, c):
    h = soak.h
    name = "h%d" % c
    h.rec("hostile", c=c, kind=kind, node=node.idx, expect=HOSTILE[kind])
    got = None
    try:
        ws = wsraw.RawWS("127.0.0.1", node.port, timeout=5)
    except (OSError, ConnectionError) as e:
        h.rec("hostile_fail", c=c, kind=kind, err=str(e)[:80])
        return
    try:
        deadline = time.monotonic() + soak.reply_timeout
        if kind == "oversize":
            ws.send_frame(wsraw.OP_TEXT, b"x" * 1000, announce=MAX_FRAME + 4096)
            got = "close %d" % ws.wait_close(soak.reply_timeout)[0]
        elif kind == "binary":
            ws.send_frame(wsraw.OP_BINARY, b"\x00\x01")
            got = "close %d" % ws.wait_close(soak.reply_timeout)[0]
        elif kind == "badutf8":
            ws.send_frame(wsraw.OP_TEXT, b'{"type":"ping","x":"\xff\xfe"}')
            got = "close %d" % ws.wait_close(soak.reply_timeout)[0]
        elif kind in ("badjson", "unknown", "prehello"):
            payload = {"badjson": b'{"type":"ping",', "unknown": b'{"type":"bogus"}',
                       "prehello": b'{"type":"join","room":"fan-0"}'}[kind]
            ws.send_frame(wsraw.OP_TEXT, payload)
            m = ws.recv_json(deadline)
            got = "error %s" % m.get("code") if m.get("type") == "error" else "frame %s" % m.get("type")
        elif kind == "toolarge":
            ws.send_json({"type": "hello", "name": name})
            ws.recv_json(deadline)
            ws.send_json({"type": "dm", "to": name, "id": "x", "body": "y" * (MAX_MESSAGE + 1)})
            m = ws.recv_json(deadline)
            got = "error %s" % m.get("code") if m.get("type") == "error" else "frame %s" % m.get("type")
        elif kind == "nopong":
            ws.send_json({"type": "hello", "name": name})
            ws.send_json({"type": "join", "room": "fan-0"})
            code, reason, frames = ws.wait_close(soak.hb_timeout + soak.reply_timeout + 10)
            got = "close %d" % code
            h.rec("hostile_detail", c=c, reason=reason, frames=frames, pings=ws.pings)
    except TimeoutError:
        got = "timeout"
    except wsraw.Closed as e:
        got = "close %d" % e.code
    except (OSError, ValueError) as e:
        got = "oserror %s" % e
    finally:
        ws.close()
    h.rec("hostile_done", c=c, kind=kind, got=got)


# ---------------------------------------------------------------------------
# the run


class Soak:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.rng = random.Random(args.seed)
        self.out = os.path.abspath(args.out)
        self.repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
        self.chatd = os.path.abspath(args.chatd)
        self.load = args.load
        self.slow_build = args.sanitize
        scale = 3.0 if args.sanitize else 1.0
        self.reply_timeout = 15.0 * scale
        self.hb_interval = 2 * (2 if args.sanitize else 1)
        self.hb_timeout = 4 * self.hb_interval
        self.stop_load = False
        self.hard_stop = False
        self.cnum = 0
        self.nodes = []
        self.redis = None
        self.flood = asyncio.Event()
        self.last_flood = 0.0
        if os.path.exists(self.out):
            shutil.rmtree(self.out)
        os.makedirs(self.out)
        self.h = History(os.path.join(self.out, "history.jsonl"))

    def next_c(self):
        self.cnum += 1
        return self.cnum

    def pick_node(self, rng):
        up = [n for n in self.nodes if n.up] or self.nodes
        return rng.choice(up)

    def node_config(self):
        a = self.args
        cfg = {
            "server": {"listen": "127.0.0.1", "handshake_timeout": 5, "shutdown_timeout": 2,
                       "max_connections": 2000, "max_connections_per_ip": 0, "max_pending_per_ip": 0},
            "heartbeat": {"interval": self.hb_interval, "timeout": self.hb_timeout},
            "limits": {"rate": 2000, "burst": 2000, "max_message_bytes": MAX_MESSAGE,
                       "max_frame_bytes": MAX_FRAME, "send_queue_messages": 128,
                       "send_queue_bytes": 262144, "slow_consumer": "close"},
            "history": {"messages_per_room": 5000, "dedup_window": 5000},
            "log": {"level": "warn", "format": "text"},
        }
        if a.mode == "single":
            cfg["storage"] = {"path": "chat.db", "sync": "batch"}
        else:
            cfg["storage"] = {"path": ""}
            cfg["cluster"] = {"redis": self.redis.url, "node_ttl": 3}
        return cfg

    def schedule(self):
        kinds = SINGLE_FAULTS if self.args.mode == "single" else CLUSTER_FAULTS
        d = self.args.duration
        if self.args.faults == "each":
            order = list(kinds)
            self.rng.shuffle(order)
            step = (d - 10) / len(order)
            return [(5 + i * step + self.rng.uniform(0, step * 0.3), k) for i, k in enumerate(order)]
        if self.args.faults == "none":
            return []
        out, t = [], 5.0
        while True:
            t += self.rng.uniform(12, 30)
            if t > d - 10:
                return out
            out.append((t, self.rng.choice(kinds)))

    # -- faults

    async def fault(self, kind):
        h = self.h
        node = self.rng.choice(self.nodes)
        h.rec("fault", kind=kind, node=node.idx, phase="start")
        try:
            await self._fault(kind, node)
        finally:
            h.rec("fault", kind=kind, node=node.idx, phase="end")

    async def _fault(self, kind, node):
        rng = self.rng
        if kind == "kill9":
            node.up = False
            node.signal(signal.SIGKILL)
            await node.wait_exit(10)
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            await self.restart(node)
        elif kind == "term":
            node.up = False
            node.signal(signal.SIGTERM)
            rc = await node.wait_exit(20 if self.slow_build else 8)
            if rc != 0:
                self.h.rec("bad_exit", node=node.idx, rc=rc, after="SIGTERM")
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            await self.restart(node)
        elif kind == "hup":
            node.signal(signal.SIGHUP)
            await asyncio.sleep(1)
        elif kind == "diskfull":
            # The storage tests' technique: RLIMIT_FSIZE, here lowered on the
            # running process (prlimit), so every write past 4 KB into the
            # SQLite file or its WAL fails (EFBIG) until it is lifted.
            soft, hard = resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE, (4096, hard))
            await asyncio.sleep(rng.uniform(3, 6))
            resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
        elif kind == "cpu":
            node.signal(signal.SIGSTOP)
            node.paused = True
            await asyncio.sleep(rng.uniform(1.5, 3.0))
            node.signal(signal.SIGCONT)
            node.paused = False
        elif kind == "redis_stop":
            await self.redis.stop()
            await asyncio.sleep(rng.uniform(2, 5))
            await self.redis.start()
        elif kind == "redis_kill":
            await self.redis.stop(signal.SIGKILL)
            await self.redis.start()
        elif kind == "redis_pause":
            self.redis.proc.send_signal(signal.SIGSTOP)
            self.redis.paused = True
            await asyncio.sleep(rng.uniform(2, 4))
            self.redis.proc.send_signal(signal.SIGCONT)
            self.redis.paused = False
        elif kind == "redis_wipe":
            # Redis loses everything: the one fault after which a reset (new
            # epoch) is the documented outcome.
            await self.redis.stop(signal.SIGKILL)
            self.redis.wipe()
            self.h.rec("redis_wiped")
            await self.redis.start()
        await asyncio.sleep(1)

    async def restart(self, node):
        node.start()
        await node.wait_healthy(60 if self.slow_build else 20, any_answer=True)

    async def fault_loop(self, sched):
        t0 = time.monotonic()
        for at, kind in sched:
            await asyncio.sleep(max(0, t0 + at - time.monotonic()))
            if self.stop_load:
                return
            await self.fault(kind)

    async def hostile_loop(self):
        sem = asyncio.Semaphore(4)
        kinds = sorted(HOSTILE)
        tasks = []
        i = 0
        while not self.stop_load:
            await asyncio.sleep(self.rng.uniform(1.0, 3.0) / self.load)
            if self.stop_load:
                break
            kind = kinds[i % len(kinds)] if i < len(kinds) else self.rng.choice(kinds)
            i += 1
            node = self.pick_node(self.rng)
            c = self.next_c()

            async def one(kind=kind, node=node, c=c):
                async with sem:
                    await asyncio.to_thread(hostile_one, self, kind, node, c)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks, return_exceptions=True)

    async def sample_loop(self):
        while not self.hard_stop:
            for n in self.nodes:
                s = n.sample()
                if s:
                    self.h.rec("sample", node=n.idx, inc=n.incarnation, rss=s[0], fds=s[1])
            await asyncio.sleep(1)

    async def idle_sample(self, what):
        await asyncio.sleep(2)
        for n in self.nodes:
            s = n.sample()
            if s:
                self.h.rec(what, node=n.idx, inc=n.incarnation, rss=s[0], fds=s[1])

    # -- main

    def actors(self):
        rng = self.rng
        L = self.args.clients
        self.small_rooms = ["r-%d" % i for i in range(max(4, L // 3))]
        spec = []
        spec += [("fan", ["fan-0"])] * max(3, L // 3)
        spec += [("small", rng.sample(self.small_rooms, 2)) for _ in range(max(3, L // 3))]
        spec += [("churn", rng.sample(self.small_rooms, 2) + ["fan-0"]) for _ in range(max(2, L // 6))]
        spec += [("slow", ["fan-0", "slow-0"])] * 2
        spec += [("firehose", ["slow-0"])]
        out = []
        for i, (role, rooms) in enumerate(spec):
            out.append(Actor(self, "%s%d" % (role, i), role, rooms))
        self.names = [a.name for a in out] + ["nobody"]
        return out

    async def run(self):
        a = self.args
        h = self.h
        h.rec("run", seed=a.seed, mode=a.mode, duration=a.duration, faults=a.faults, load=a.load,
              clients=a.clients, chatd=self.chatd, sanitize=a.sanitize, cmd=" ".join(sys.argv),
              rss_bound_kb=a.rss_bound_mb * 1024, fd_bound=a.fd_bound,
              heartbeat=[self.hb_interval, self.hb_timeout])
        if a.mode == "cluster":
            self.redis = Redis(self)
            await self.redis.start()
        n_nodes = 1 if a.mode == "single" else 3
        for i in range(n_nodes):
            self.nodes.append(Node(self, i, self.node_config()))
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            await n.wait_healthy(60)
        sampler = asyncio.create_task(self.sample_loop())
        await self.idle_sample("baseline")

        actors = self.actors()
        sched = self.schedule()
        h.rec("schedule", faults=[[round(t, 2), k] for t, k in sched])
        tasks = [asyncio.create_task(x.run()) for x in actors]
        faults = asyncio.create_task(self.fault_loop(sched))
        hostile = asyncio.create_task(self.hostile_loop())
        await asyncio.sleep(a.duration)
        if a.faults == "each":
            # every kind must have run: let a late schedule finish (under load)
            await asyncio.wait([faults], timeout=120)

        h.rec("load_stop")
        self.stop_load = True
        await faults
        await hostile
        await asyncio.wait(tasks, timeout=self.reply_timeout * 3)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for x in actors:
            x.stall_until = 0
        for n in self.nodes:
            if n.proc.poll() is not None:
                await self.restart(n)

        h.rec("drain_start")
        await asyncio.gather(*(x.drain() for x in actors), return_exceptions=True)
        await self.quiesce(actors)
        h.rec("drain", state={x.name: {r: [s.epoch, s.last] for r, s in x.rooms.items()} for x in actors},
              pending={x.name: sorted(x.pending) for x in actors if x.pending},
              connected=[x.name for x in actors if x.ws is not None])
        await self.audit(sorted({r for x in actors for r in x.rooms} | set(self.small_rooms) | {"fan-0", "slow-0"}))
        for x in actors:
            try:
                for room in sorted(x.rooms):
                    await x.leave(room)
            except Gone:
                pass
            await x.close()
        h.rec("load_end")
        await asyncio.sleep(3)
        await self.idle_sample("final")
        self.hard_stop = True
        await sampler
        for n in self.nodes:
            n.signal(signal.SIGTERM)
        for n in self.nodes:
            rc = await n.wait_exit(30)
            if rc != 0:
                h.rec("bad_exit", node=n.idx, rc=rc, after="final SIGTERM")
        await asyncio.sleep(0.3)
        for n in self.nodes:
            with open(n.log, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            found = [m for m in SANITIZER_MARKERS if m in text]
            i = min((text.find(m) for m in found), default=-1)
            h.rec("sanitizer", node=n.idx, markers=found, excerpt=text[i:i + 3000] if found else "",
                  log=os.path.relpath(n.log, self.out))
        if self.redis:
            await self.redis.stop()
        h.rec("end")
        h.close()

    async def quiesce(self, actors):
        """Until no frame arrived for 2 s (at most 30 s)."""
        deadline = time.monotonic() + 30
        await asyncio.sleep(1)       # stalled readers wake up (they poll every 0.2 s)
        while time.monotonic() < deadline:
            if time.monotonic() - self.h.last_recv > 2.0:
                return
            await asyncio.sleep(0.2)

    async def audit(self, rooms):
        """A fresh client reads back every room's whole held history."""
        aud = Actor(self, "auditor", "audit", [])
        await aud.ensure()
        for room in rooms:
            for _ in range(3):
                try:
                    if not await aud.join(room):
                        await asyncio.sleep(1)
                        continue
                    st = aud.rooms[room]
                    msgs, after = [], 0
                    joined_seq = st.last
                    for _ in range(1000):
                        r = await aud.request({"type": "history", "room": room, "after": after, "limit": 500})
                        if r["type"] != "history" or not r["messages"]:
                            break
                        msgs += [[x["seq"], x["from"], x["id"], crc(x["body"])] for x in r["messages"]]
                        after = r["messages"][-1]["seq"]
                        if after >= joined_seq:
                            break
                    self.h.rec("audit", r=room, e=st.epoch, s=joined_seq, m=msgs)
                    await aud.leave(room)
                    break
                except Gone:
                    await aud.ensure()
        await aud.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chatd", default="build/chatd")
    ap.add_argument("--mode", choices=("single", "cluster"), default="single")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faults", choices=("each", "random", "none"), default="random",
                    help="each: one fault of each kind, spread over the run; random: one every 12-30 s")
    ap.add_argument("--clients", type=int, default=24, help="well-behaved clients (about)")
    ap.add_argument("--load", type=float, default=1.0, help="multiplies every client's pace")
    ap.add_argument("--sanitize", action="store_true", help="the chatd is an ASan build: longer timeouts")
    ap.add_argument("--rss-bound-mb", type=float, default=32,
                    help="RSS after the load may exceed the idle baseline by this much")
    ap.add_argument("--fd-bound", type=int, default=4)
    ap.add_argument("--out", default="soak-out")
    args = ap.parse_args()
    soak = Soak(args)
    asyncio.run(soak.run())
    print("soak: history in %s" % os.path.join(soak.out, "history.jsonl"))


if __name__ == "__main__":
    main()
