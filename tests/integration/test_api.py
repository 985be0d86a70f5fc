"""The server HTTP API (docs/api.md) against the real binary: real HTTP requests
on the [api] listener, real WebSocket clients that see what the API did."""

import asyncio
import http.client
import json
import os
import resource
import signal
import threading

import pytest

from api_helpers import KEY, OTHER_KEY, api, api_config, api_raw, write_keys
from chatd_helpers import run, scaled, wait_until
from conftest import run_cli


@pytest.fixture
def apisrv(chatd, tmp_path):
    return chatd(api_config(write_keys(tmp_path, [KEY])))


# ---- authentication ----------------------------------------------------------

def test_missing_or_wrong_key_is_401_with_json(apisrv):
    for key in (None, "wrong-key-0123456789abcdef", KEY + "x", KEY[:-1]):
        status, body = api(apisrv, "GET", "/api/stats", key=key)
        assert status == 401, (key, body)
        assert body["error"] == "not_authenticated" and body["message"]
    status, hdrs, _ = api_raw(apisrv.api_port, "GET", "/api/stats", {"Authorization": "Basic " + KEY})
    assert status == 401 and hdrs.get("www-authenticate") == "Bearer"
    assert api(apisrv, "GET", "/api/stats")[0] == 200
    m = apisrv.metrics()
    assert m.value("chatd_api_requests_total", endpoint="stats", status="401") == 5
    assert m.value("chatd_api_requests_total", endpoint="stats", status="200") == 1
    # The keys never reach the log.
    assert KEY not in apisrv.log_text() and "wrong-key" not in apisrv.log_text()


def test_reload_removes_and_adds_keys(chatd, tmp_path):
    path = write_keys(tmp_path, [KEY])
    srv = chatd(api_config(path))
    assert api(srv, "GET", "/api/online")[0] == 200
    assert api(srv, "GET", "/api/online", key=OTHER_KEY)[0] == 401
    write_keys(tmp_path, [OTHER_KEY])
    srv.signal(signal.SIGHUP)
    wait_until(lambda: api(srv, "GET", "/api/online")[0] == 401, scaled(5), what="old key refused")
    assert api(srv, "GET", "/api/online", key=OTHER_KEY)[0] == 200
    # A keys file that became readable by others fails the reload: the
    # running keys stay.
    os.chmod(path, 0o644)
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in srv.log_text(), scaled(5), what="reload refused")
    assert api(srv, "GET", "/api/online", key=OTHER_KEY)[0] == 200


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_refuses_to_start_with_a_readable_keys_file(chatd, tmp_path, mode):
    path = write_keys(tmp_path, [KEY], mode=mode)
    srv = chatd(api_config(path), start=False)
    r = run_cli(["-c", srv.config_path])
    assert r.returncode == 2, r
    assert "api.keys_file" in r.stderr and "chmod 600" in r.stderr, r.stderr
    assert KEY not in r.stderr


def test_bad_keys_files_are_refused(chatd, tmp_path):
    for keys, why in ((["short"], "a key is"), ([], "no keys")):
        path = write_keys(tmp_path, keys, name="k%d" % len(keys))
        srv = chatd(api_config(path), start=False)
        r = run_cli(["-c", srv.config_path, "--check-config"])
        assert r.returncode == 2 and why in r.stderr, r
    srv = chatd({"api": {"keys_file": write_keys(tmp_path, [KEY], name="x")}}, start=False)
    r = run_cli(["-c", srv.config_path, "--check-config"])
    assert r.returncode == 2 and "api.listen" in r.stderr, r


# ---- HTTP errors -------------------------------------------------------------

def test_bad_input_gets_400_with_a_reason(apisrv):
    cases = [
        (b"not json", "JSON"),
        (b"[1,2]", "JSON object"),
        ({"body": "x"}, "room must be a string"),
        ({"room": "bad room!", "body": "x"}, "room must be"),
        ({"room": "r", "body": 5}, "body must be a string"),
        ({"room": "r", "body": "x", "from": "$system2"}, "from must be"),
        ({"room": "r", "body": "x", "id": ""}, "id must be"),
        ({"room": "r", "body": "x", "id": "i" * 65}, "id must be"),
        ({"room": "r", "body": "x" * 5000}, "max_message_bytes"),
    ]
    for obj, why in cases:
        status, body = api(apisrv, "POST", "/api/publish", obj=obj)
        assert status == 400, (obj, body)
        assert body["error"] == "bad_request" and why in body["message"], (obj, body)
    status, body = api(apisrv, "GET", "/api/history?room=r&limit=0")
    assert status == 400 and "limit" in body["message"]
    status, body = api(apisrv, "GET", "/api/history?room=r&after=x")
    assert status == 400 and "after" in body["message"]
    status, body = api(apisrv, "GET", "/api/members")
    assert status == 400 and "room" in body["message"]
    status, body = api(apisrv, "POST", "/api/disconnect", obj={"name": "a", "code": 999})
    assert status == 400 and "code" in body["message"]
    status, body = api(apisrv, "POST", "/api/disconnect", obj={"name": "a", "reason": "r" * 64})
    assert status == 400 and "reason" in body["message"]
    assert api(apisrv, "POST", "/api/disconnect", obj={"name": "a", "reason": "r" * 63})[0] == 200
    # Still serving.
    assert api(apisrv, "GET", "/api/stats")[0] == 200


def test_body_cap_413_method_405_unknown_404(chatd, tmp_path):
    srv = chatd(api_config(write_keys(tmp_path, [KEY]), max_body_bytes=1024))
    status, body = api(srv, "POST", "/api/publish", obj={"room": "r", "body": "x" * 2000})
    assert status == 413 and body["error"] == "too_large"
    status, hdrs, data = api_raw(srv.api_port, "GET", "/api/publish", {"Authorization": "Bearer " + KEY})
    assert status == 405 and hdrs.get("allow") == "POST" and json.loads(data)["error"]
    status, hdrs, data = api_raw(srv.api_port, "POST", "/api/stats", {"Authorization": "Bearer " + KEY},
                                 body=b"{}")
    assert status == 405 and hdrs.get("allow") == "GET"
    status, body = api(srv, "GET", "/api/nothing")
    assert status == 404 and body["error"] == "not_found"
    # The API is on its own listener only: the chat port does not serve it.
    assert srv.http("/api/stats", headers={"Authorization": "Bearer " + KEY})[0] == 404
    m = srv.metrics()
    assert m.value("chatd_api_requests_total", endpoint="publish", status="413") == 1
    assert m.value("chatd_api_requests_total", endpoint="publish", status="405") == 1


def test_post_without_content_length_is_refused(apisrv):
    import socket
    s = socket.create_connection(("127.0.0.1", apisrv.api_port), timeout=scaled(5))
    s.sendall(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
              b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), data
    assert b"Content-Length" in body
    assert api(apisrv, "GET", "/api/stats")[0] == 200


def test_keep_alive_carries_several_requests(apisrv):
    conn = http.client.HTTPConnection("127.0.0.1", apisrv.api_port, timeout=scaled(5))
    hdrs = {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"}
    for i in range(3):
        conn.request("POST", "/api/publish", body=json.dumps({"room": "ka", "body": "m%d" % i}), headers=hdrs)
        r = conn.getresponse()
        assert r.status == 200
        assert json.loads(r.read()) == {"room": "ka", "seq": i + 1}
        conn.request("GET", "/api/stats", headers=hdrs)
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["rooms"] >= 1
    conn.close()


# ---- publish -----------------------------------------------------------------

def test_publish_as_system_and_as_a_named_sender(apisrv):
    async def go():
        a = await apisrv.client("alice")
        await a.join("lobby")
        status, body = api(apisrv, "POST", "/api/publish", obj={"room": "lobby", "body": "maintenance"})
        assert (status, body) == (200, {"room": "lobby", "seq": 1})
        m = await a.expect("message", room="lobby", seq=1, body="maintenance", **{"from": "$system"})
        assert m["id"].startswith("api-")
        status, body = api(apisrv, "POST", "/api/publish",
                           obj={"room": "lobby", "body": "hi", "from": "bob", "id": "b1"})
        assert (status, body) == (200, {"room": "lobby", "seq": 2})
        await a.expect("message", seq=2, body="hi", id="b1", **{"from": "bob"})
        # No client can say hello as the system sender.
        c = await apisrv.client()
        await c.send({"type": "hello", "name": "$system"})
        await c.expect_error("bad_request")
        await a.close()
        await c.close()
    run(go())


def test_publish_retry_with_the_same_id_gets_the_same_seq(apisrv):
    async def go():
        a = await apisrv.client("alice")
        await a.join("r")
        first = api(apisrv, "POST", "/api/publish", obj={"room": "r", "body": "once", "id": "k1"})
        again = api(apisrv, "POST", "/api/publish", obj={"room": "r", "body": "once", "id": "k1"})
        assert first == again == (200, {"room": "r", "seq": 1})
        await a.expect("message", seq=1, body="once")
        await a.expect_silence(0.3)      # one message, not two
        # The key is per sender: the same id from another sender is new.
        assert api(apisrv, "POST", "/api/publish",
                   obj={"room": "r", "body": "x", "id": "k1", "from": "zed"}) == (200, {"room": "r", "seq": 2})
        await a.close()
    run(go())


def test_publish_orders_with_concurrent_client_sends(apisrv):
    n = 40

    async def go():
        watcher = await apisrv.client("watcher")
        await watcher.join("busy")
        sender = await apisrv.client("sender")
        await sender.join("busy")
        results = []

        def publish_all():
            for i in range(n):
                results.append(api(apisrv, "POST", "/api/publish",
                                   obj={"room": "busy", "body": "api-%d" % i, "id": "a%d" % i}))
        t = threading.Thread(target=publish_all)
        t.start()
        for i in range(n):
            await sender.send({"type": "send", "room": "busy", "id": "c%d" % i, "body": "client-%d" % i})
            await asyncio.sleep(0.002)
        got = []
        while len(got) < 2 * n:
            f = await watcher.recv()
            if f["type"] == "message":
                got.append(f)
        await asyncio.get_running_loop().run_in_executor(None, t.join)
        assert [f["seq"] for f in got] == list(range(1, 2 * n + 1))
        by_body = {f["body"]: f["seq"] for f in got}
        assert all(st == 200 for st, _ in results)
        for i, (_, body) in enumerate(results):
            assert body["seq"] == by_body["api-%d" % i]
        # Each source's messages stay in their own order.
        api_seqs = [by_body["api-%d" % i] for i in range(n)]
        assert api_seqs == sorted(api_seqs)
        await watcher.close()
        await sender.close()
    run(go(), timeout=120)


def test_publish_with_storage_survives_a_restart(chatd, tmp_path):
    cfg = api_config(write_keys(tmp_path, [KEY]))
    cfg["storage"] = {"path": str(tmp_path / "chat.db"), "sync": "always"}
    srv = chatd(cfg)
    for i in range(5):
        assert api(srv, "POST", "/api/publish", obj={"room": "keep", "body": "m%d" % i, "id": "p%d" % i}) \
            == (200, {"room": "keep", "seq": i + 1})
    assert srv.stop() == 0
    srv.stopped = False
    srv.start()
    status, body = api(srv, "GET", "/api/history?room=keep&limit=10")
    assert status == 200
    assert [(m["seq"], m["body"], m["from"]) for m in body["messages"]] == \
        [(i + 1, "m%d" % i, "$system") for i in range(5)]
    # The idempotency key outlives the restart too.
    assert api(srv, "POST", "/api/publish", obj={"room": "keep", "body": "m2", "id": "p2"}) \
        == (200, {"room": "keep", "seq": 3})
    assert api(srv, "POST", "/api/publish", obj={"room": "keep", "body": "new"}) == (200, {"room": "keep", "seq": 6})


def test_storage_failure_is_503_unavailable(chatd, tmp_path):
    cfg = api_config(write_keys(tmp_path, [KEY]))
    cfg["storage"] = {"path": str(tmp_path / "chat.db"), "sync": "always"}
    srv = chatd(cfg, start=False)
    limit = 96 * 1024

    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    srv.preexec = preexec
    srv.start()
    statuses = []
    for i in range(200):
        status, body = api(srv, "POST", "/api/publish", obj={"room": "full", "body": "y" * 3000})
        statuses.append(status)
        if status != 200:
            assert status == 503 and body["error"] == "unavailable", body
            break
    assert statuses[-1] == 503, "the file-size limit never caused a write error"
    assert api(srv, "GET", "/api/stats")[0] == 200


# ---- dm, disconnect, members, online, history, stats -------------------------

def test_dm_reaches_the_user_and_404_when_offline(apisrv):
    async def go():
        a = await apisrv.client("alice")
        assert api(apisrv, "POST", "/api/dm", obj={"to": "alice", "body": "psst", "id": "d1"}) \
            == (200, {"ok": True})
        await a.expect("direct", body="psst", id="d1", **{"from": "$system"})
        status, body = api(apisrv, "POST", "/api/dm", obj={"to": "nobody", "body": "x"})
        assert status == 404 and body["error"] == "not_found"
        await a.close()
    run(go())


def test_disconnect_closes_every_session_with_code_and_reason(chatd, tmp_path):
    srv = chatd(dict(api_config(write_keys(tmp_path, [KEY])), limits={"sessions_per_name": 3}))

    async def go():
        a1 = await srv.client("alice")
        a2 = await srv.client("alice")
        b = await srv.client("bob")
        await b.join("r")
        await a1.join("r")
        await b.expect("presence", name="alice", state="join")
        status, body = api(srv, "POST", "/api/disconnect",
                           obj={"name": "alice", "code": 4001, "reason": "banned for spam"})
        assert (status, body) == (200, {"name": "alice", "closed": 2})
        assert await a1.expect_closed() == (4001, "banned for spam")
        assert await a2.expect_closed() == (4001, "banned for spam")
        await b.expect("presence", name="alice", state="leave")
        await b.ping_pong()
        assert api(srv, "POST", "/api/disconnect", obj={"name": "alice"}) == (200, {"name": "alice", "closed": 0})
        assert api(srv, "GET", "/api/online")[1] == {"names": ["bob"], "count": 1}
        await b.close()
    run(go())


def test_members_online_history_stats(apisrv):
    async def go():
        a = await apisrv.client("alice")
        b = await apisrv.client("bob")
        await a.join("r")
        await b.join("r")
        await a.expect("presence", name="bob")
        for i in range(7):
            await a.send({"type": "send", "room": "r", "id": "m%d" % i, "body": "b%d" % i})
            await a.expect_unordered(["ack", "message"])
        status, body = api(apisrv, "GET", "/api/members?room=r")
        assert status == 200 and body["room"] == "r" and sorted(body["names"]) == ["alice", "bob"]
        assert api(apisrv, "GET", "/api/members?room=empty") == (200, {"room": "empty", "names": []})
        status, body = api(apisrv, "GET", "/api/online")
        assert status == 200 and sorted(body["names"]) == ["alice", "bob"] and body["count"] == 2

        def seqs(q):
            status, body = api(apisrv, "GET", "/api/history?room=r" + q)
            assert status == 200 and body["room"] == "r", body
            assert all(m["type"] == "message" and m["room"] == "r" for m in body["messages"])
            return [m["seq"] for m in body["messages"]]
        assert seqs("") == [1, 2, 3, 4, 5, 6, 7]
        assert seqs("&limit=3") == [5, 6, 7]
        assert seqs("&limit=3&before=5") == [2, 3, 4]
        assert seqs("&limit=2&after=2") == [3, 4]
        assert seqs("&after=7") == []
        assert api(apisrv, "GET", "/api/history?room=r&limit=2&after=1&before=3")[0] == 400
        status, body = api(apisrv, "GET", "/api/stats")
        assert status == 200
        assert body["connections"] == 2 and body["sessions"] == 2 and body["rooms"] == 1
        assert body["node"] == "test-node" and "queue_bytes" in body and "queued_messages" in body
        await a.close()
        await b.close()
    run(go())


def test_client_gone_before_the_answer(chatd, tmp_path):
    """A request whose client hangs up while the engine commits is dropped cleanly."""
    cfg = api_config(write_keys(tmp_path, [KEY]))
    cfg["storage"] = {"path": str(tmp_path / "chat.db"), "sync": "batch"}
    srv = chatd(cfg)
    import socket
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", srv.api_port))
        body = json.dumps({"room": "gone", "body": "m%d" % i}).encode()
        s.sendall(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        s.close()
    # Whatever got in is stored in order, and the server goes on serving.
    def stored():
        return [m["seq"] for m in api(srv, "GET", "/api/history?room=gone&limit=50")[1]["messages"]]
    wait_until(lambda: len(stored()) == len(set(stored())), scaled(5), what="history readable")
    seqs = stored()
    assert seqs == list(range(1, len(seqs) + 1))
    assert api(srv, "POST", "/api/publish", obj={"room": "gone", "body": "last"})[1]["seq"] == len(seqs) + 1


def test_api_load_tool_smoke(apisrv, tmp_path):
    """tools/api_load.py runs against the real API (1 s, 2 connections, 3 subscribers)."""
    import subprocess
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "api_load.py")
    r = subprocess.run(["/usr/bin/python3", tool, "--url", "http://127.0.0.1:%d" % apisrv.api_port,
                        "--key-file", write_keys(tmp_path, [KEY], name="load.keys"),
                        "--connections", "2", "--duration", "1",
                        "--ws", "ws://127.0.0.1:%d/ws" % apisrv.port, "--subscribers", "3"],
                       capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 0, r
    res = json.loads(r.stdout)
    assert res["requests"] > 0 and res["errors"] == 0 and res["subscribers"] == 3
    assert res["fanout_events"] > 0
    status, body = api(apisrv, "GET", "/api/history?room=apiload&limit=1")
    assert body["messages"][0]["seq"] == res["requests"]
