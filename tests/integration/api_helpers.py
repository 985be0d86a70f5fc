"""The server HTTP API from tests: a keys file, a config with the API on, requests.

    keys = write_keys(tmp_path, ["k" * 32])
    srv = chatd(api_config(keys))
    status, body = api(srv, "POST", "/api/publish", KEY, {"room": "lobby", "body": "hi"})
"""

import http.client
import json
import os

from chatd_helpers import free_port, scaled

KEY = "test-key-0123456789abcdef0123456789"
OTHER_KEY = "other-key-0123456789abcdef012345678"


def write_keys(tmp_path, keys, name="api.keys", mode=0o600):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write("# chatd API keys\n\n" + "".join(k + "\n" for k in keys))
    os.chmod(path, mode)
    return path


def api_config(keys_path, **api_extra):
    api = {"listen": "127.0.0.1", "port": free_port(), "keys_file": keys_path}
    api.update(api_extra)
    return {"api": api}


def api_raw(port, method, path, headers=None, body=None, timeout=10.0):
    """One request on a fresh connection -> (status, headers dict, raw body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(timeout))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def api(srv, method, path, key=KEY, obj=None, timeout=10.0):
    """A JSON request to srv's API -> (status, parsed JSON body)."""
    headers = {}
    if key is not None:
        headers["Authorization"] = "Bearer " + key
    body = None
    if obj is not None:
        body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        headers["Content-Type"] = "application/json"
    status, hdrs, data = api_raw(srv.api_port, method, path, headers, body, timeout)
    assert hdrs.get("content-type", "").startswith("application/json"), (status, hdrs, data)
    return status, json.loads(data)
