"""JWT strictness (issue 17, point 3): time claims are read with their JSON
type (NumericDate may be fractional, nothing else is a date), alg must be
exactly "HS256", an unknown "crit" header is refused, and so is any member
that appears twice. Tokens are built by hand so that they can be wrong in
ways a JWT library would not produce."""

import base64
import hashlib
import hmac
import json
import time

import pytest

from chatd_helpers import Client, run

SECRET = b"jwt-claims-test-secret-0123456789abcdef"


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign(header_json, payload_json, secret=SECRET):
    """header/payload given as JSON text, so duplicates and odd types survive."""
    signing = b64(header_json.encode()) + "." + b64(payload_json.encode())
    return signing + "." + b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())


HDR = '{"alg":"HS256","typ":"JWT"}'


def payload(**claims):
    c = {"sub": "alice"}
    c.update(claims)
    return json.dumps(c, separators=(",", ":"))


@pytest.fixture
def server(chatd):
    # leeway 0: the float tests are about fractions of an hour, not skew
    return chatd({"auth": {"mode": "jwt", "jwt_secret": SECRET.decode(), "leeway": 0}})


def hello(srv, tok):
    async def go():
        c = await Client.connect(srv.port)
        await c.send({"type": "hello", "token": tok, "ref": "h"})
        r = await c.recv()
        await c.close()
        return r
    return run(go())


def refused(srv, tok, reason):
    r = hello(srv, tok)
    assert r["type"] == "error" and r["code"] == "not_authenticated", r
    assert reason in r["message"], r
    assert [l for l in srv.log_text().splitlines() if "hello refused: " in l and reason in l]


def accepted(srv, tok):
    r = hello(srv, tok)
    assert r["type"] == "welcome" and r["name"] == "alice", r


def test_fractional_exp_is_a_valid_numeric_date(server):
    now = time.time()
    accepted(server, sign(HDR, payload(exp=now + 300.5, iat=now - 0.25, nbf=now - 10.75)))
    refused(server, sign(HDR, payload(exp=now - 60.5)), "token expired")


def test_fractional_nbf_in_the_future_is_not_valid_yet(server):
    refused(server, sign(HDR, payload(nbf=time.time() + 3600.5, exp=time.time() + 7200)),
            "token not valid yet")


@pytest.mark.parametrize("claim", ["nbf", "exp", "iat"])
@pytest.mark.parametrize("value", ['"%d"', "null", "true", "[%d]", '{"t":%d}'])
def test_time_claim_of_another_json_type_is_refused(server, claim, value):
    t = int(time.time()) + 3600
    claims = {"sub": "alice"}
    if claim != "exp":
        claims["exp"] = t
    body = json.dumps(claims, separators=(",", ":"))[:-1] + ',"%s":%s}' % (
        claim, value % t if "%d" in value else value)
    refused(server, sign(HDR, body), "claim %s must be a number" % claim)


@pytest.mark.parametrize("alg,reason", [("hs256", "alg must be HS256"), ("Hs256", "alg must be HS256"),
                                        ("HS256 ", "invalid token")])
def test_alg_must_match_exactly(server, alg, reason):
    refused(server, sign('{"alg":"%s","typ":"JWT"}' % alg, payload(exp=time.time() + 300)), reason)


@pytest.mark.parametrize("crit", ['["exp"]', '["b64"]', "[]", '"x"'])
def test_unknown_crit_header_is_refused(server, crit):
    hdr = '{"alg":"HS256","typ":"JWT","crit":%s,"b64":true,"exp":1}' % crit
    refused(server, sign(hdr, payload(exp=time.time() + 300)), "unsupported critical header")


@pytest.mark.parametrize("body,what", [
    ('{"sub":"alice","exp":%(exp)d,"sub":"mallory"}', "claim sub appears twice"),
    ('{"sub":"alice","exp":%(past)d,"exp":%(exp)d}', "claim exp appears twice"),
    ('{"sub":"alice","exp":%(exp)d,"nbf":%(future)d,"nbf":0}', "claim nbf appears twice"),
])
def test_duplicated_claim_is_refused(server, body, what):
    now = int(time.time())
    refused(server, sign(HDR, body % {"exp": now + 300, "past": now - 300, "future": now + 3000}),
            "invalid token: " + what)


def test_duplicated_header_parameter_is_refused(server):
    refused(server, sign('{"alg":"none","typ":"JWT","alg":"HS256"}', payload(exp=time.time() + 300)),
            "header parameter alg appears twice")
