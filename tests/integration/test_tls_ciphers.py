"""[tls] ciphers / ciphersuites: TLS 1.2 offers ECDHE with AEAD only by
default (forward secrecy, no CBC), operators can change both lists, and a
list OpenSSL cannot use is a configuration error (issue 17, point 5).
Probed with the real openssl s_client."""

import subprocess

import pytest

from certs import Certs
from chatd_helpers import scaled
from conftest import run_cli


def s_client(port, *args):
    """openssl s_client against chatd -> (handshake ok, negotiated cipher, output)."""
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-servername", "localhost", "-brief"] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=scaled(10))
    out = r.stdout + r.stderr
    cipher = None
    for line in out.splitlines():
        if line.startswith("Ciphersuite:"):
            cipher = line.split(":", 1)[1].strip()
    return r.returncode == 0 and cipher is not None, cipher, out


@pytest.fixture
def tls_server(chatd, tmp_path):
    def make(**tls):
        cert, key = Certs(tmp_path).server("rsa")
        return chatd({"tls": dict({"cert": cert, "key": key}, **tls)})
    return make


@pytest.mark.parametrize("cipher", [
    "AES128-SHA256",            # static RSA key exchange: no forward secrecy
    "AES256-GCM-SHA384",        # static RSA, even with AEAD
    "ECDHE-RSA-AES128-SHA",     # CBC with SHA-1
    "ECDHE-RSA-AES256-SHA384",  # CBC
])
def test_tls12_refuses_static_rsa_and_cbc(tls_server, cipher):
    srv = tls_server()
    ok, got, out = s_client(srv.port, "-tls1_2", "-cipher", cipher)
    assert not ok, "chatd negotiated %s:\n%s" % (got, out)


@pytest.mark.parametrize("cipher", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                                    "ECDHE-RSA-CHACHA20-POLY1305"])
def test_tls12_ecdhe_aead_is_accepted(tls_server, cipher):
    srv = tls_server()
    ok, got, out = s_client(srv.port, "-tls1_2", "-cipher", cipher)
    assert ok and got == cipher, out


def test_tls13_default_suites(tls_server):
    srv = tls_server()
    ok, got, out = s_client(srv.port, "-tls1_3")
    assert ok and got in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"), out
    ok, got, out = s_client(srv.port, "-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256")
    assert ok and got == "TLS_CHACHA20_POLY1305_SHA256", out


def test_operator_lists_replace_the_defaults(tls_server):
    srv = tls_server(ciphers="ECDHE-RSA-AES256-GCM-SHA384", ciphersuites="TLS_AES_128_GCM_SHA256")
    assert not s_client(srv.port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")[0]
    ok, got, out = s_client(srv.port, "-tls1_2")
    assert ok and got == "ECDHE-RSA-AES256-GCM-SHA384", out
    assert not s_client(srv.port, "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384")[0]
    ok, got, out = s_client(srv.port, "-tls1_3")
    assert ok and got == "TLS_AES_128_GCM_SHA256", out


def test_empty_ciphersuites_turns_tls13_off(tls_server):
    srv = tls_server(ciphersuites="")
    assert not s_client(srv.port, "-tls1_3")[0]
    ok, got, out = s_client(srv.port)
    assert ok and got.startswith("ECDHE-"), out


@pytest.mark.parametrize("key,value,what", [
    ("ciphers", "NO-SUCH-CIPHER", "selects no cipher"),
    ("ciphersuites", "TLS_NO_SUCH_SUITE", "rejects it"),
])
def test_unusable_cipher_list_is_a_config_error(tmp_path, key, value, what):
    cert, tkey = Certs(tmp_path).server("ec")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tls]\ncert = "%s"\nkey = "%s"\n%s = "%s"\n' % (cert, tkey, key, value))
    for args in (["--check-config"], []):
        r = run_cli(["-c", str(cfg)] + args)
        assert r.returncode == 2, r
        assert ("tls.%s" % key) in r.stderr and value in r.stderr and what in r.stderr, r.stderr
