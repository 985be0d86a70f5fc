"""The server API in cluster mode: two real chatd nodes and a real redis-server.
An API call on any node acts on the whole cluster."""

import asyncio
import os

import pytest

from api_helpers import KEY, api, api_config, write_keys
from chatd_helpers import run, scaled, wait_until
from test_cluster import REDIS, Redis, node_cfg, recv_until

pytestmark = pytest.mark.skipif(not os.path.exists(REDIS), reason="redis-server is not installed")


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


def api_nodes(chatd, redis, tmp_path, n=2):
    keys = write_keys(tmp_path, [KEY])
    nodes = []
    for i in range(n):
        cfg = node_cfg(redis, i + 1)
        cfg.update(api_config(keys))
        nodes.append(chatd(cfg))
    return nodes


def test_publish_gets_the_global_seq_on_any_node(chatd, redis, tmp_path):
    n1, n2 = api_nodes(chatd, redis, tmp_path)

    async def go():
        a = await n1.client("alice")
        b = await n2.client("bob")
        await a.join("r")
        await b.join("r")
        await asyncio.sleep(scaled(0.3))
        await a.send({"type": "send", "room": "r", "id": "c1", "body": "from alice"})
        await recv_until(a, lambda m: m["type"] == "ack")
        # Publish on the node where the room has no member and on the other one.
        st, body = api(n2, "POST", "/api/publish", obj={"room": "r", "body": "sys on n2", "id": "k"})
        assert (st, body) == (200, {"room": "r", "seq": 2})
        st, body = api(n1, "POST", "/api/publish", obj={"room": "r", "body": "sys on n1"})
        assert (st, body) == (200, {"room": "r", "seq": 3})
        # A retry on the other node: the same seq (dedup in Redis).
        assert api(n1, "POST", "/api/publish", obj={"room": "r", "body": "sys on n2", "id": "k"}) \
            == (200, {"room": "r", "seq": 2})
        for c in (a, b):
            got = await recv_until(c, lambda m: m["type"] == "message" and m["seq"] == 3)
            msgs = [(m["seq"], m["body"]) for m in got if m["type"] == "message"]
            assert msgs[-2:] == [(2, "sys on n2"), (3, "sys on n1")], msgs
            await c.expect_silence(0.3)
        # A room no node holds yet: published through Redis all the same.
        st, body = api(n2, "POST", "/api/publish", obj={"room": "fresh", "body": "x"})
        assert (st, body) == (200, {"room": "fresh", "seq": 1})
        await a.close()
        await b.close()
    run(go())

    def hist():
        st, body = api(n2, "GET", "/api/history?room=r&limit=10")
        return [m["seq"] for m in body["messages"]] if st == 200 else None
    wait_until(lambda: hist() == [1, 2, 3], scaled(5), what="history through n2")


def test_kick_reaches_the_other_node(chatd, redis, tmp_path):
    n1, n2 = api_nodes(chatd, redis, tmp_path)

    async def go():
        a = await n2.client("alice")
        b = await n1.client("bob")
        await asyncio.sleep(scaled(0.3))
        st, body = api(n1, "POST", "/api/disconnect", obj={"name": "alice", "code": 4003, "reason": "kicked"})
        assert (st, body) == (200, {"name": "alice", "closed": 0})
        assert await a.expect_closed() == (4003, "kicked")
        await b.ping_pong()
        await b.close()
    run(go())


def test_dm_reaches_a_user_on_the_other_node(chatd, redis, tmp_path):
    n1, n2 = api_nodes(chatd, redis, tmp_path)

    async def go():
        a = await n2.client("alice")
        await asyncio.sleep(scaled(0.3))
        assert api(n1, "POST", "/api/dm", obj={"to": "alice", "body": "hi from n1"}) == (200, {"ok": True})
        await a.expect("direct", body="hi from n1", **{"from": "$system"})
        st, body = api(n1, "POST", "/api/dm", obj={"to": "nobody", "body": "x"})
        assert st == 404 and body["error"] == "not_found"
        await a.close()
    run(go())


def test_online_and_members_are_cluster_wide(chatd, redis, tmp_path):
    n1, n2 = api_nodes(chatd, redis, tmp_path)

    async def go():
        a = await n1.client("alice")
        b = await n2.client("bob")
        await a.join("r")
        await b.join("r")

        def online(node):
            return sorted(api(node, "GET", "/api/online")[1]["names"])
        wait_until(lambda: online(n1) == online(n2) == ["alice", "bob"], scaled(5), what="both online")
        for node in (n1, n2):
            st, body = api(node, "GET", "/api/members?room=r")
            assert st == 200 and sorted(body["names"]) == ["alice", "bob"]
        await b.close()
        wait_until(lambda: online(n1) == ["alice"], scaled(5), what="bob gone on n1")
        await a.close()
    run(go())


def test_redis_down_is_503_unavailable(chatd, redis, tmp_path):
    n1, = api_nodes(chatd, redis, tmp_path, n=1)
    redis.stop()
    wait_until(lambda: n1.http("/healthz")[0] == 503 if not n1.api_port else
               __import__("chatd_helpers").http_get(n1.api_port, "/healthz")[0] == 503,
               scaled(5), what="node sees Redis down")
    st, body = api(n1, "POST", "/api/publish", obj={"room": "r", "body": "x"})
    assert st == 503 and body["error"] == "unavailable", body
    st, body = api(n1, "POST", "/api/disconnect", obj={"name": "alice"})
    assert st == 503 and body["error"] == "unavailable", body
    n1.expected_rc = 0
