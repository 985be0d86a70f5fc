#!/usr/bin/python3
"""Mint an HS256 JWT for chatd's [auth] mode = "jwt" (standard library only).

    /usr/bin/python3 tools/mint_token.py --secret-file /etc/chatd/jwt.secret --sub alice \\
        [--ttl 3600] [--rooms 'lobby,team-*'] [--owner 'team-*'] [--moderator 'lobby']
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys
import time


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(secret, claims, alg="HS256"):
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64(json.dumps(claims, separators=(",", ":")).encode())
    signing = ("%s.%s" % (header, payload)).encode()
    sig = b64(hmac.new(secret, signing, hashlib.sha256).digest()) if alg == "HS256" else ""
    return "%s.%s.%s" % (header, payload, sig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--secret")
    g.add_argument("--secret-file")
    ap.add_argument("--sub", required=True, help="the user name")
    ap.add_argument("--ttl", type=int, default=3600, help="seconds until exp (default 3600)")
    ap.add_argument("--rooms", help="comma-separated room names or prefix globs (team-*)")
    ap.add_argument("--owner", help="rooms (names or prefix globs) where the user is an owner")
    ap.add_argument("--moderator", help="rooms (names or prefix globs) where the user is a moderator")
    a = ap.parse_args()
    if a.secret_file:
        with open(a.secret_file, "rb") as f:
            secret = f.read().rstrip(b"\r\n")
    else:
        secret = a.secret.encode()
    now = int(time.time())
    claims = {"sub": a.sub, "iat": now, "exp": now + a.ttl}
    if a.rooms:
        claims["rooms"] = [r for r in a.rooms.split(",") if r]
    roles = {k: [r for r in v.split(",") if r] for k, v in (("owner", a.owner), ("moderator", a.moderator)) if v}
    if roles:
        claims["roles"] = roles
    sys.stdout.write(mint(secret, claims) + "\n")


if __name__ == "__main__":
    main()
