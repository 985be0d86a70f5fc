"""[tls] ca: only client certificates that chain to the CA and are meant for
TLS clients get in (issue 17, point 1). Each refusal is logged with OpenSSL's
reason."""

import re
import socket
import ssl
import subprocess
import time

import pytest
import websockets

from certs import Certs
from chatd_helpers import Client, run, scaled, wait_until
from conftest import chatd_bin, chatd_env


def client_ctx(pair=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if pair:
        ctx.load_cert_chain(*pair)
    return ctx


def https_get(port, ctx, path="/metrics", timeout=5.0):
    """GET over TLS -> the raw response bytes; raises on a refused handshake.
    With TLS 1.3 the server's verdict on the client certificate arrives after
    the client's handshake is done, so it shows at the first read."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data
                data += chunk


def start_tls(srv, ctx):
    """Start chatd and wait until a client holding ctx gets /healthz 200 (the
    fixture's own probe has no client certificate)."""
    srv.logf = open(srv.log_path, "ab")
    srv.proc = subprocess.Popen([chatd_bin(), "-c", srv.config_path], stdout=srv.logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=chatd_env(), cwd=str(srv.dir))
    deadline = time.monotonic() + scaled(10)
    while True:
        assert srv.proc.poll() is None, "chatd exited during startup\n" + srv.log_tail()
        try:
            if https_get(srv.port, ctx, "/healthz", timeout=1).startswith(b"HTTP/1.1 200"):
                return srv
        except (OSError, ssl.SSLError):
            pass
        assert time.monotonic() < deadline, "chatd did not come up\n" + srv.log_tail()
        time.sleep(0.05)


@pytest.fixture
def mtls(chatd, tmp_path):
    certs = Certs(tmp_path)
    cert, key = certs.server()
    srv = chatd({"tls": {"cert": cert, "key": key, "ca": certs.ca}}, start=False)
    good = client_ctx(certs.client())
    start_tls(srv, good)
    return srv, certs, good


def refused(port, ctx):
    """True when the server refuses this client: no HTTP answer at all."""
    try:
        data = https_get(port, ctx)
    except (OSError, ssl.SSLError):
        return True
    return not data.startswith(b"HTTP/")


def test_client_certificate_from_the_ca_gets_in(mtls):
    srv, certs, good = mtls
    data = https_get(srv.port, good)
    assert data.startswith(b"HTTP/1.1 200") and b"chatd_" in data, data[:200]

    async def go():
        ws = await websockets.connect("wss://127.0.0.1:%d/ws" % srv.port, ssl=good,
                                      subprotocols=["chat.v1"])
        c = Client(ws)
        await c.hello("alice")
        await c.close()
    run(go())
    assert "client certificate refused" not in srv.log_text()


@pytest.mark.parametrize("bad,reason", [
    ("rogue", r"self.signed certificate"),
    ("expired", r"certificate has expired"),
    ("server_only", r"(unsuitable|unsupported) certificate purpose"),
    ("no_signature_usage", r"(unsuitable|unsupported) certificate purpose"),
])
def test_bad_client_certificates_are_refused_and_logged(mtls, bad, reason):
    srv, certs, good = mtls
    ctx = client_ctx(getattr(certs, bad)())
    assert refused(srv.port, ctx), "a %s client certificate was accepted" % bad

    async def go():
        with pytest.raises((OSError, ssl.SSLError, websockets.exceptions.WebSocketException)):
            ws = await websockets.connect("wss://127.0.0.1:%d/ws" % srv.port, ssl=ctx,
                                          subprotocols=["chat.v1"], open_timeout=scaled(5))
            # TLS 1.3: a refusal can surface only once the server speaks.
            await ws.recv()
    run(go())
    line = wait_until(lambda: [l for l in srv.log_text().splitlines()
                               if "client certificate refused" in l], scaled(5), what="refusal logged")
    assert re.search(reason, line[0]), line
    assert "CN=alice" in line[0] and "127.0.0.1" in line[0], line
    # the server is still fine for a good client
    assert https_get(srv.port, good).startswith(b"HTTP/1.1 200")


def test_no_client_certificate_is_refused(mtls):
    srv, certs, good = mtls
    assert refused(srv.port, client_ctx(None))
    assert https_get(srv.port, good).startswith(b"HTTP/1.1 200")
    wait_until(lambda: "refused: certificate required" in srv.log_text(), scaled(5),
               what="the missing certificate logged")


def test_ca_file_without_a_certificate_is_a_config_error(tmp_path):
    """lws only logs a CA file it cannot load (and then refuses every client);
    chatd says so before it starts."""
    from conftest import run_cli
    cert, key = Certs(tmp_path).server("ec")
    bad_ca = tmp_path / "not-a-ca.pem"
    bad_ca.write_text("this is not PEM\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tls]\ncert = "%s"\nkey = "%s"\nca = "%s"\n' % (cert, key, bad_ca))
    for args in (["--check-config"], []):
        r = run_cli(["-c", str(cfg)] + args)
        assert r.returncode == 2, r
        assert "tls.ca" in r.stderr and "no CA certificate could be loaded" in r.stderr, r.stderr
