"""Webhooks against a real HTTP receiver in the test: delivery, batching, the
HMAC signature, filtering, retry after a 500, the queue bound while the
receiver is down, and chat latency while the receiver hangs."""

import asyncio
import hashlib
import hmac
import http.server
import json
import os
import signal
import threading
import time

import pytest

from api_helpers import KEY, api, api_config, write_keys
from chatd_helpers import SANITIZE, free_port, run, scaled, wait_until

SECRET = "webhook-secret-0123456789abcdef"


class Receiver:
    """An HTTP server that records POSTs; mode: ok, fail (500), hang."""

    def __init__(self):
        self.posts = []               # (headers dict, body bytes)
        self.mode = "ok"
        self.fail_next = 0            # answer 500 to this many POSTs, then ok
        self.release = threading.Event()
        self.lock = threading.Lock()
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with recv.lock:
                    recv.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    fail = recv.fail_next > 0 or recv.mode == "fail"
                    if recv.fail_next > 0:
                        recv.fail_next -= 1
                if recv.mode == "hang":
                    recv.release.wait(60)
                    return
                self.send_response(500 if fail else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d/hook" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def events(self):
        with self.lock:
            return [e for _, b in self.posts for e in json.loads(b)["events"]]

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def hook_config(tmp_path, urls, **extra):
    path = os.path.join(str(tmp_path), "hook.secret")
    with open(path, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(path, 0o600)
    wh = {"urls": urls, "secret_file": path, "batch_interval": 0.05, "retry_backoff": 0.1}
    wh.update(extra)
    cfg = api_config(write_keys(tmp_path, [KEY]))
    cfg["webhooks"] = wh
    return cfg


def check_signature(headers, body):
    want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers.get("x-chatd-signature") == want, (headers, body[:200])


def test_events_are_delivered_signed_and_in_order(chatd, tmp_path, receiver):
    srv = chatd(dict(hook_config(tmp_path, [receiver.url]), limits={"sessions_per_name": 2}))

    async def go():
        a = await srv.client("alice")
        a2 = await srv.client("alice")        # a second session: no second user.online
        b = await srv.client("bob")
        await a.join("lobby")
        await a.send({"type": "send", "room": "lobby", "id": "m1", "body": "hello"})
        await a.expect_unordered(["ack", "message"])
        await a.request({"type": "dm", "to": "bob", "id": "d1", "body": "psst"}, "ack")
        await a.request({"type": "leave", "room": "lobby"}, "left")
        await a.close()
        await a2.close()
        await b.close()
    run(go())
    api(srv, "POST", "/api/publish", obj={"room": "lobby", "body": "sys", "id": "s1"})
    want = [("user.online", "alice"), ("user.online", "bob"), ("room.join", "alice"),
            ("message", "hello"), ("direct", "psst"), ("room.leave", "alice"),
            ("user.offline", "alice"), ("user.offline", "bob"), ("message", "sys")]

    def got():
        return [(e["type"], e.get("name") or e.get("body")) for e in receiver.events()]
    wait_until(lambda: len(got()) >= len(want), scaled(5), what="all events delivered")
    time.sleep(0.2)
    assert got() == want
    ev = receiver.events()
    assert ev[3] == dict(ev[3], room="lobby", seq=1, id="m1", **{"from": "alice"})
    assert ev[4] == dict(ev[4], to="bob", id="d1", **{"from": "alice"})
    assert ev[8]["from"] == "$system" and ev[8]["seq"] == 2
    assert all(isinstance(e["ts"], int) for e in ev)
    for headers, body in receiver.posts:
        check_signature(headers, body)
        assert json.loads(body)["node"] == "test-node"
        assert headers["content-type"] == "application/json"
    m = srv.metrics()
    assert m.value("chatd_webhook_sent_total") == len(want)
    assert m.value("chatd_webhook_delivery_seconds_count") == len(want)
    assert m.value("chatd_webhook_dropped_total") == 0


def test_batching_and_filtering(chatd, tmp_path, receiver):
    srv = chatd(hook_config(tmp_path, [receiver.url], batch_max=4, batch_interval=0.3,
                            events=["message"]))
    for i in range(10):
        assert api(srv, "POST", "/api/publish", obj={"room": "r", "body": "b%d" % i})[0] == 200
    wait_until(lambda: len(receiver.events()) >= 10, scaled(5), what="10 events")
    time.sleep(0.2)
    ev = receiver.events()
    assert [e["body"] for e in ev] == ["b%d" % i for i in range(10)]
    assert all(e["type"] == "message" for e in ev)       # no user/join events
    sizes = [len(json.loads(b)["events"]) for _, b in receiver.posts]
    assert max(sizes) == 4 and len(sizes) < 10, sizes     # batched, never above batch_max
    for headers, body in receiver.posts:
        check_signature(headers, body)


def test_retry_after_500(chatd, tmp_path, receiver):
    receiver.fail_next = 2
    srv = chatd(hook_config(tmp_path, [receiver.url], events=["message"]))
    assert api(srv, "POST", "/api/publish", obj={"room": "r", "body": "retry me"})[0] == 200
    wait_until(lambda: len(receiver.posts) >= 3, scaled(5), what="two failures and a success")
    time.sleep(0.2)
    assert len(receiver.posts) == 3
    bodies = [b for _, b in receiver.posts]
    assert bodies[0] == bodies[1] == bodies[2]           # the same batch, the same signature
    m = srv.metrics()
    assert m.value("chatd_webhook_failures_total") == 2
    assert m.value("chatd_webhook_retries_total") == 2
    assert m.value("chatd_webhook_sent_total") == 1


def test_retries_exhausted_are_dropped_and_counted(chatd, tmp_path, receiver):
    receiver.mode = "fail"
    url = "http://hookuser:s3cret@127.0.0.1:%d/hook?token=t0ken" % receiver.port
    srv = chatd(hook_config(tmp_path, [url], events=["message"], max_retries=2))
    assert api(srv, "POST", "/api/publish", obj={"room": "r", "body": "lost"})[0] == 200
    wait_until(lambda: srv.metrics().value("chatd_webhook_dropped_total") == 1, scaled(5),
               what="the batch dropped")
    assert len(receiver.posts) == 3
    log = srv.log_text()
    assert "webhook http://127.0.0.1:%d/hook: dropping 1 events" % receiver.port in log, log
    assert "s3cret" not in log and "t0ken" not in log      # credentials stay out of the log
    assert receiver.posts[0][0]["authorization"].startswith("Basic ")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def test_queue_is_bounded_while_the_receiver_is_down(chatd, tmp_path):
    down = "http://127.0.0.1:%d/hook" % free_port()       # nothing listens there
    srv = chatd(dict(hook_config(tmp_path, [down], events=["message"], queue_max=50,
                                 retry_backoff=5), history={"messages_per_room": 10}))
    body = "x" * 2000

    async def flood(n, prefix):
        a = await srv.client("alice")
        await a.join("r")
        for i in range(n):
            await a.send({"type": "send", "room": "r", "id": "%s%d" % (prefix, i), "body": body})
            if i % 50 == 49:
                await a.expect_unordered(["ack", "message"] * 50)
        await a.close()
    run(flood(500, "w"))            # warm up: allocator pools, rings, the queue at its bound
    before = rss_kib(srv.pid)
    run(flood(3000, "m"), timeout=120)   # 6 MB of events: an unbounded queue would keep them
    after = rss_kib(srv.pid)
    m = srv.metrics()
    assert m.value("chatd_webhook_queued_events") <= 50
    assert m.value("chatd_webhook_dropped_total") >= 3000
    # ASan keeps freed memory in quarantine: RSS says nothing there.
    if not SANITIZE:
        assert after - before < 3 * 1024, (before, after)


def test_chat_latency_unaffected_while_the_receiver_hangs(chatd, tmp_path, receiver):
    receiver.mode = "hang"
    srv = chatd(hook_config(tmp_path, [receiver.url], timeout=30))

    async def go():
        a = await srv.client("alice")
        b = await srv.client("bob")
        await a.join("r")
        await b.join("r")
        await a.expect("presence")
        # The first batch (online, join) is posted within batch_interval:
        # wait until that POST is hanging in the receiver, then measure.
        deadline = time.monotonic() + scaled(5)
        while not receiver.posts and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(receiver.posts) >= 1          # a POST is hanging in the receiver
        worst = 0.0
        for i in range(100):
            t0 = time.monotonic()
            await a.send({"type": "send", "room": "r", "id": "m%d" % i, "body": "x"})
            await b.expect("message", id="m%d" % i)
            worst = max(worst, time.monotonic() - t0)
            await a.expect_unordered(["ack", "message"])
        await a.close()
        await b.close()
        return worst
    worst = run(go())
    # A POST blocking the loop would stall a round trip for the 30 s
    # timeout; 2 s tells that apart from a busy test machine's scheduling.
    assert worst < scaled(2.0), worst
    assert srv.metrics().value("chatd_webhook_sent_total") == 0


def test_secret_file_must_be_private(chatd, tmp_path):
    from conftest import run_cli
    cfg = hook_config(tmp_path, ["http://127.0.0.1:1/x"])
    os.chmod(cfg["webhooks"]["secret_file"], 0o644)
    srv = chatd(cfg, start=False)
    for extra in ([], ["--check-config"]):
        r = run_cli(["-c", srv.config_path] + extra)
        assert r.returncode == 2 and "webhooks.secret_file" in r.stderr and "chmod 600" in r.stderr, r
        assert SECRET not in r.stderr
    cfg["webhooks"].pop("secret_file")
    srv.write_config(dict(srv.config, webhooks=cfg["webhooks"]))
    r = run_cli(["-c", srv.config_path, "--check-config"])
    assert r.returncode == 2 and "webhooks.urls" in r.stderr and "secret_file" in r.stderr, r


def test_shutdown_delivers_the_users_going_offline(chatd, tmp_path, receiver):
    srv = chatd(hook_config(tmp_path, [receiver.url], events=["user.offline"], batch_interval=5))

    async def go():
        clients = [await srv.client("u%d" % i) for i in range(3)]
        srv.signal(signal.SIGTERM)
        for c in clients:
            await c.expect_closed()
    run(go())
    assert srv.wait_exit(scaled(10)) == 0
    assert sorted(e["name"] for e in receiver.events()) == ["u0", "u1", "u2"]
    assert all(e["type"] == "user.offline" for e in receiver.events())
    assert "delivering 3 queued events before stopping" in srv.log_text()


def test_shutdown_does_not_wait_past_shutdown_timeout_for_a_hanging_receiver(chatd, tmp_path, receiver):
    receiver.mode = "hang"
    srv = chatd(dict(hook_config(tmp_path, [receiver.url], timeout=60), server={"shutdown_timeout": 1}))

    async def go():
        c = await srv.client("alice")
        await c.close()
    run(go())
    wait_until(lambda: len(receiver.posts) >= 1, scaled(5), what="a POST hanging")
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(scaled(10)) == 0
    assert time.monotonic() - t0 < scaled(3)
