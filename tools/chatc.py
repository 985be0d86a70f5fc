#!/usr/bin/python3
"""chatc - a minimal terminal client for chatd (chat.v1).

    /usr/bin/python3 tools/chatc.py --name alice --room lobby [--url ws://127.0.0.1:8080/ws]

Type a line and press Enter to send it to the room. Commands:
  /dm NAME TEXT   direct message      /join ROOM   switch room
  /members        who is in the room  /history     last 20 messages
  /quit           leave
Uses Debian's python3-websockets (installed by scripts/setup.sh).
"""
import argparse
import asyncio
import datetime
import itertools
import json
import uuid
import sys

import websockets


def show(ev):
    t = ev.get("type")
    ts = datetime.datetime.fromtimestamp(ev.get("ts", 0) / 1000).strftime("%H:%M:%S") if "ts" in ev else ""
    if t == "message":
        print(f"[{ts}] #{ev['room']} <{ev['from']}> {ev['body']}")
    elif t == "direct":
        print(f"[{ts}] (dm) <{ev['from']}> {ev['body']}")
    elif t == "presence":
        print(f"* {ev['name']} {'joined' if ev['state'] == 'join' else 'left'} #{ev['room']}")
    elif t == "joined":
        print(f"* joined #{ev['room']} (seq {ev['seq']}), members: {', '.join(ev['members'])}")
    elif t == "members":
        print(f"* members of #{ev['room']}: {', '.join(ev['names'])}")
    elif t == "history":
        for m in ev["messages"]:
            show(m)
    elif t == "error":
        print(f"! {ev['code']}: {ev['message']}")
    elif t == "welcome":
        print(f"* connected as {ev['name']} to node {ev['node']}")


async def reader(ws):
    async for raw in ws:
        show(json.loads(raw))


async def main():
    ap = argparse.ArgumentParser(description="terminal client for chatd")
    ap.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    ap.add_argument("--name", required=True)
    ap.add_argument("--room", default="lobby")
    a = ap.parse_args()
    ids = itertools.count(1)
    tag = uuid.uuid4().hex[:8]  # ids must not repeat across runs: chatd de-duplicates them
    room = a.room
    async with websockets.connect(a.url, subprotocols=["chat.v1"]) as ws:
        await ws.send(json.dumps({"type": "hello", "name": a.name}))
        await ws.send(json.dumps({"type": "join", "room": room}))
        task = asyncio.create_task(reader(ws))
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "/quit":
                break
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("/dm "):
                _, to, body = (line.split(" ", 2) + [""])[:3]
                cmd = {"type": "dm", "to": to, "id": f"{a.name}-{tag}-{next(ids)}", "body": body}
            elif line.startswith("/join "):
                room = line.split(" ", 1)[1].strip()
                cmd = {"type": "join", "room": room}
            elif line == "/members":
                cmd = {"type": "members", "room": room}
            elif line == "/history":
                cmd = {"type": "history", "room": room, "limit": 20}
            else:
                cmd = {"type": "send", "room": room, "id": f"{a.name}-{tag}-{next(ids)}", "body": line}
            await ws.send(json.dumps(cmd))
        task.cancel()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (KeyboardInterrupt, websockets.ConnectionClosed, OSError) as e:
        if not isinstance(e, KeyboardInterrupt):
            print(f"! connection ended: {e}", file=sys.stderr)
