#!/usr/bin/python3
"""api_load.py - publish-API throughput, and what it does to fan-out latency.

    /usr/bin/python3 tools/api_load.py --url http://127.0.0.1:9091 \\
        --key-file /etc/chatd/api.keys --connections 8 --duration 10 \\
        --ws ws://127.0.0.1:8080/ws --subscribers 20

N threads each keep one HTTP/1.1 connection and POST /api/publish into one
room as fast as the answers come (each answer waits for the commit, as
storage.sync says). With --ws, S WebSocket clients joined to the room
measure fan-out latency: from the moment a publish was sent to the moment
its message event arrived (both clocks on this machine; the body carries the
send time). Prints one JSON object (and a human summary on stderr).

Python standard library plus Debian's python3-websockets (only for --ws).
"""

import argparse
import asyncio
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def read_key(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                return line
    raise SystemExit("api_load: no key in %s" % path)


def publisher(u, key, room, stop_at, out, idx, body_bytes):
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
    headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
    lat, errors, n = [], 0, 0
    pad = "x" * max(0, body_bytes - 40)
    while time.monotonic() < stop_at:
        body = json.dumps({"room": room, "id": "L%d-%d" % (idx, n),
                           "body": "%.6f %s" % (time.time(), pad)})
        t0 = time.monotonic()
        try:
            conn.request("POST", "/api/publish", body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
        lat.append(time.monotonic() - t0)
        n += 1
    conn.close()
    out[idx] = (lat, errors)


async def subscribers(ws_url, room, count, ready, stop, fanout):
    import websockets

    async def one(i):
        async with websockets.connect(ws_url, subprotocols=["chat.v1"], max_size=1 << 24,
                                      ping_interval=None) as ws:
            await ws.send(json.dumps({"type": "hello", "name": "apiload%d" % i}))
            await ws.send(json.dumps({"type": "join", "room": room}))
            joined = False
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except asyncio.TimeoutError:
                    continue
                m = json.loads(raw)
                if m.get("type") == "joined":
                    joined = True
                    ready.append(i)
                elif m.get("type") == "message" and joined:
                    try:
                        fanout.append(time.time() - float(m["body"].split(" ", 1)[0]))
                    except ValueError:
                        pass
    await asyncio.gather(*(one(i) for i in range(count)))


def main():
    p = argparse.ArgumentParser(description="Measure chatd's publish-API throughput.")
    p.add_argument("--url", default=os.environ.get("CHATD_API_URL", "http://127.0.0.1:9091"))
    p.add_argument("--key-file", default=os.environ.get("CHATD_API_KEY_FILE"))
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--room", default="apiload")
    p.add_argument("--body-bytes", type=int, default=64)
    p.add_argument("--ws", help="chat WebSocket URL, to measure fan-out latency")
    p.add_argument("--subscribers", type=int, default=10)
    a = p.parse_args()
    if not a.key_file:
        raise SystemExit("api_load: give --key-file or CHATD_API_KEY_FILE")
    u = urllib.parse.urlsplit(a.url)
    key = read_key(a.key_file)

    fanout, ready, stop = [], [], threading.Event()
    sub_thread = None
    if a.ws:
        sub_thread = threading.Thread(target=lambda: asyncio.run(
            subscribers(a.ws, a.room, a.subscribers, ready, stop, fanout)), daemon=True)
        sub_thread.start()
        deadline = time.monotonic() + 10
        while len(ready) < a.subscribers and time.monotonic() < deadline:
            time.sleep(0.05)

    out = [None] * a.connections
    start = time.monotonic()
    threads = [threading.Thread(target=publisher, args=(u, key, a.room, start + a.duration, out, i,
                                                        a.body_bytes))
               for i in range(a.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    if sub_thread:
        time.sleep(0.5)           # the last messages in flight
        stop.set()
        sub_thread.join(5)
    lat = [x for o in out for x in o[0]]
    errors = sum(o[1] for o in out)
    res = {
        "connections": a.connections, "duration": round(elapsed, 3), "requests": len(lat),
        "errors": errors, "per_second": round(len(lat) / elapsed, 1),
        "latency_p50_ms": round(pct(lat, 50) * 1000, 3) if lat else None,
        "latency_p99_ms": round(pct(lat, 99) * 1000, 3) if lat else None,
    }
    if a.ws:
        res.update({"subscribers": len(ready), "fanout_events": len(fanout),
                    "fanout_p50_ms": round(pct(fanout, 50) * 1000, 3) if fanout else None,
                    "fanout_p99_ms": round(pct(fanout, 99) * 1000, 3) if fanout else None})
    print(json.dumps(res))
    print("%d publishes in %.1fs over %d connections: %.0f/s, p50 %.2f ms, p99 %.2f ms, %d errors"
          % (len(lat), elapsed, a.connections, res["per_second"], res["latency_p50_ms"] or 0,
             res["latency_p99_ms"] or 0, errors), file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
