"""Asymmetric tokens (issue 15): RS256 and ES256 verified with a PEM public
key or a JWKS file (kid selects), the algorithm pinned by the config, alg
confusion refused, and a SIGHUP that rotates the keys. Keys are real: made
here with python3-cryptography, tokens signed with python3-jwt."""

import asyncio
import base64
import hashlib
import hmac
import json
import signal
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chatd_helpers import Client, run, scaled, wait_until
from conftest import run_cli


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk(key, kid, alg):
    cls = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    d = json.loads(cls.to_jwk(key.public_key()))
    d.update({"kid": kid, "use": "sig", "alg": alg})
    return d


def sign(key, alg, sub="alice", kid=None, ttl=300, **claims):
    c = {"sub": sub, "exp": int(time.time()) + ttl}
    c.update(claims)
    return jwt.encode(c, key, algorithm=alg, headers={"kid": kid} if kid else None)


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def hello(srv, tok):
    c = await Client.connect(srv.port)
    await c.send({"type": "hello", "token": tok, "ref": "h"})
    r = await c.recv()
    await c.close()
    return r


def accepted(srv, tok):
    r = run(hello(srv, tok))
    assert r["type"] == "welcome", r
    return r


def refused(srv, tok, why=""):
    r = run(hello(srv, tok))
    assert r["type"] == "error" and r["code"] == "not_authenticated", r
    assert why in r["message"], r
    return r


@pytest.mark.parametrize("alg,make", [("RS256", rsa_key), ("ES256", ec_key)])
def test_pem_public_key(chatd, tmp_path, alg, make):
    key, other = make(), make()
    (tmp_path / "pub.pem").write_bytes(pem(key))
    srv = chatd({"auth": {"mode": "jwt", "algorithm": alg, "public_key_file": str(tmp_path / "pub.pem")}})
    assert accepted(srv, sign(key, alg))["name"] == "alice"
    refused(srv, sign(other, alg), "bad signature")          # another key
    refused(srv, sign(key, alg, ttl=-100), "expired")
    # The other asymmetric algorithm is not the configured one.
    wrong = ec_key() if alg == "RS256" else rsa_key()
    refused(srv, sign(wrong, "ES256" if alg == "RS256" else "RS256"), "alg must be " + alg)


def test_alg_confusion_and_none_are_refused(chatd, tmp_path):
    key = rsa_key()
    pub = pem(key)
    (tmp_path / "pub.pem").write_bytes(pub)
    srv = chatd({"auth": {"mode": "jwt", "algorithm": "RS256", "public_key_file": str(tmp_path / "pub.pem")}})
    # HS256 "signed" with the RSA public key (the PEM text) as the HMAC secret.
    payload = b64(json.dumps({"sub": "mallory", "exp": int(time.time()) + 300}).encode())
    for header in ({"alg": "HS256", "typ": "JWT"}, {"alg": "hs256"}, {"alg": "RS256 "}):
        signing = b64(json.dumps(header).encode()) + "." + payload
        forged = signing + "." + b64(hmac.new(pub, signing.encode(), hashlib.sha256).digest())
        refused(srv, forged, "alg must be RS256")
    # alg none, with and without a signature part.
    signing = b64(b'{"alg":"none"}') + "." + payload
    refused(srv, signing + ".", "alg must be RS256")
    refused(srv, signing, "malformed")
    # A valid RS256 token whose signature was stripped.
    tok = sign(key, "RS256")
    refused(srv, tok.rsplit(".", 1)[0] + ".", "bad signature")
    assert "hello name=mallory" not in srv.log_text()


def test_hs256_server_refuses_rs256_tokens(chatd):
    srv = chatd({"auth": {"mode": "jwt", "jwt_secret": "s" * 40}})
    refused(srv, sign(rsa_key(), "RS256"), "alg must be HS256")


@pytest.mark.parametrize("alg,make", [("RS256", rsa_key), ("ES256", ec_key)])
def test_jwks_kid_selects_the_key(chatd, tmp_path, alg, make):
    k1, k2, stranger = make(), make(), make()
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk(k1, "one", alg), jwk(k2, "two", alg)]}))
    srv = chatd({"auth": {"mode": "jwt", "algorithm": alg, "jwks_file": str(tmp_path / "jwks.json")}})
    accepted(srv, sign(k1, alg, kid="one"))
    accepted(srv, sign(k2, alg, kid="two"))
    refused(srv, sign(k1, alg, kid="two"), "bad signature")
    refused(srv, sign(stranger, alg, kid="three"), "unknown kid")
    refused(srv, sign(k1, alg), "kid required")


def test_jwks_rotation_by_sighup(chatd, tmp_path):
    old, new = ec_key(), ec_key()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(old, "old", "ES256")]}))
    srv = chatd({"auth": {"mode": "jwt", "algorithm": "ES256", "jwks_file": str(jwks),
                          "refresh_window": 2}})

    async def go():
        live = await Client.connect(srv.port)
        await live.send({"type": "hello", "token": sign(old, "ES256", kid="old"), "ref": "h"})
        await live.expect("welcome")
        jwks.write_text(json.dumps({"keys": [jwk(new, "new", "ES256")]}))
        srv.signal(signal.SIGHUP)
        e = await live.expect("token_expiring", timeout=scaled(5))
        assert e["reason"] == "key_rotated"
        assert (await hello(srv, sign(old, "ES256", sub="bob", kid="old")))["type"] == "error"
        r = await hello(srv, sign(new, "ES256", sub="bob", kid="new"))
        assert r["type"] == "welcome", r
        await live.send({"type": "refresh", "token": sign(new, "ES256", kid="new"), "ref": "r"})
        await live.expect("refreshed")
        await asyncio.sleep(2.5)                  # past the rotation deadline
        await live.ping_pong()
        await live.close()
    run(go())


def test_reload_with_a_broken_jwks_keeps_the_old_keys(chatd, tmp_path):
    key = rsa_key()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(key, "k", "RS256")]}))
    srv = chatd({"auth": {"mode": "jwt", "algorithm": "RS256", "jwks_file": str(jwks)}})
    jwks.write_text('{"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}')
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in srv.log_text(), scaled(5), what="reload refused")
    assert "not a valid RS256 public key" in srv.log_text()
    accepted(srv, sign(key, "RS256", kid="k"))


@pytest.mark.parametrize("auth,msg", [
    ({"algorithm": "RS256"}, "need auth.public_key_file or auth.jwks_file"),
    ({"algorithm": "RS256", "public_key_file": "x.pem", "jwks_file": "y.json"}, "not both"),
    ({"algorithm": "RS256", "public_key_file": "x.pem", "jwt_secret": "s" * 40},
     "only for auth.algorithm"),
    ({"algorithm": "HS256", "jwt_secret": "s" * 40, "public_key_file": "x.pem"},
     "public keys need"),
    ({"algorithm": "PS256"}, "expected one of"),
])
def test_key_config_errors(tmp_path, auth, msg):
    cfg = tmp_path / "c.toml"
    lines = ['mode = "jwt"'] + ['%s = "%s"' % kv for kv in auth.items()]
    cfg.write_text("[auth]\n" + "\n".join(lines) + "\n")
    r = run_cli(["-c", str(cfg), "--check-config"])
    assert r.returncode == 2 and msg in r.stderr, r


def test_key_file_of_the_wrong_type_is_refused(tmp_path):
    (tmp_path / "pub.pem").write_bytes(pem(ec_key()))
    cfg = tmp_path / "c.toml"
    cfg.write_text('[auth]\nmode = "jwt"\nalgorithm = "RS256"\npublic_key_file = "%s"\n' % (tmp_path / "pub.pem"))
    r = run_cli(["-c", str(cfg), "--check-config"])
    assert r.returncode == 2 and "not an RSA key" in r.stderr, r
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "pub.pem").write_bytes(pem(small))
    r = run_cli(["-c", str(cfg), "--check-config"])
    assert r.returncode == 2 and "shorter than 2048" in r.stderr, r
