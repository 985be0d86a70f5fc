"""The soak checker must fail: doctored histories of a real soak run.

A short soak against the real chatd gives a real history, which the checker
must pass. Each test then plants one violation in a copy of it (a dropped
delivery, a duplicate, a seq gap, an undocumented error code, ...) and the
checker must report it under the right rule. A checker that cannot fail
proves nothing.
"""

import copy
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SOAK = os.path.join(REPO, "tools", "soak")
sys.path.insert(0, SOAK)
import check  # noqa: E402

PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real 12 s soak (one node, storage, no faults): its records."""
    chatd = os.environ.get("CHATD_BIN") or os.path.join(REPO, "build", "chatd")
    out = tmp_path_factory.mktemp("soak")
    args = [PY, os.path.join(SOAK, "soak.py"), "--chatd", chatd, "--mode", "single", "--duration", "12",
            "--seed", "3", "--faults", "none", "--clients", "12", "--out", str(out)]
    if os.environ.get("CHATD_SANITIZE", "") not in ("", "0", "OFF", "off", "false", "FALSE"):
        args.append("--sanitize")
    subprocess.run(args, check=True, timeout=300)
    return out, check.load(str(out / "history.jsonl"))


def verdict(recs):
    ck = check.Checker(recs, *check.documented_codes(check.DEFAULT_PROTOCOL))
    ck.check()
    return ck.violations


def rules(recs):
    return {v["rule"] for v in verdict(recs)}


def live_recvs(recs):
    """Indexes of live deliveries that have a later live delivery on the same
    connection and room (so dropping one leaves a hole, not a shorter tail)."""
    last = {}
    out = []
    for i, r in enumerate(recs):
        if r["ev"] == "recv" and not r["rp"]:
            key = (r["c"], r["r"])
            if key in last:
                out.append(last[key])
            last[key] = i
    return out


def test_documented_codes_are_read_from_the_protocol():
    errors, closes, http = check.documented_codes(check.DEFAULT_PROTOCOL)
    assert {404, 403, 503} == http
    assert {"bad_request", "not_authenticated", "forbidden", "not_found", "conflict", "rate_limited",
            "too_large", "unavailable", "internal"} == errors
    assert {1001, 1003, 1007, 1008, 1009, 1011} <= closes


def test_the_real_history_passes(run):
    out, recs = run
    assert verdict(recs) == []
    kinds = {r["ev"] for r in recs}
    # the workload really did what the checker judges
    assert {"send", "ack", "recv", "join", "joined", "left", "audit", "hostile_done", "drecv"} <= kinds
    assert sum(1 for r in recs if r["ev"] == "recv") > 200


def test_a_dropped_delivery_is_caught(run):
    recs = copy.deepcopy(run[1])
    i = live_recvs(recs)[len(live_recvs(recs)) // 2]
    victim = recs.pop(i)
    v = verdict(recs)
    assert any(x["rule"] == "R1" and victim["n"] in x["msg"] for x in v), v


def test_a_duplicate_delivery_is_caught(run):
    recs = copy.deepcopy(run[1])
    i = live_recvs(recs)[len(live_recvs(recs)) // 3]
    recs.insert(i + 1, dict(recs[i]))
    v = verdict(recs)
    assert any(x["rule"] == "R1" and "twice" in x["msg"] for x in v), v


def test_a_repeated_replay_is_caught(run):
    recs = copy.deepcopy(run[1])
    i = next(i for i, r in enumerate(recs) if r["ev"] == "recv" and r["rp"])
    recs.insert(i + 1, dict(recs[i]))
    v = verdict(recs)
    assert any(x["rule"] == "R1" and "replay" in x["msg"] for x in v), v


def test_a_seq_gap_is_caught(run):
    """A message vanishes from every record: deliveries, its ack, the stored history."""
    recs = copy.deepcopy(run[1])
    audit = max((r for r in recs if r["ev"] == "audit"), key=lambda r: len(r["m"]))
    assert len(audit["m"]) > 3
    seq = audit["m"][len(audit["m"]) // 2][0]
    room = audit["r"]
    recs = [r for r in recs if not (r["ev"] in ("recv", "ack") and r.get("r") == room and r.get("s") == seq)]
    for r in recs:
        if r["ev"] in ("audit", "hist") and r["r"] == room:
            r["m"] = [m for m in r["m"] if m[0] != seq]
    v = verdict(recs)
    assert any(x["rule"] == "R2" and "gap" in x["msg"] for x in v), v


def test_an_undocumented_error_code_is_caught(run):
    recs = copy.deepcopy(run[1])
    i = next(i for i, r in enumerate(recs) if r["ev"] == "send")
    recs.insert(i + 1, {"t": recs[i]["t"], "ev": "err", "c": recs[i]["c"], "n": recs[i]["n"],
                        "code": "kaboom", "ref": "x", "msg": "planted"})
    v = verdict(recs)
    assert any(x["rule"] == "R4" and "kaboom" in x["msg"] for x in v), v


def test_an_undocumented_close_code_is_caught(run):
    recs = copy.deepcopy(run[1])
    r = next(r for r in recs if r["ev"] == "close")
    r.update(code=4321, by="server", reason="planted")
    v = verdict(recs)
    assert any(x["rule"] == "R4" and "4321" in x["msg"] for x in v), v


def test_an_undocumented_http_refusal_is_caught(run):
    recs = copy.deepcopy(run[1])
    i = next(i for i, r in enumerate(recs) if r["ev"] == "connect")
    recs.insert(i + 1, {"t": recs[i]["t"], "ev": "connect_fail", "c": recs[i]["c"], "n": recs[i]["n"],
                        "err": "InvalidStatusCode: server rejected WebSocket connection: HTTP 429"})
    v = verdict(recs)
    assert any(x["rule"] == "R4" and "HTTP 429" in x["msg"] for x in v), v


def test_a_hostile_client_with_the_wrong_outcome_is_caught(run):
    recs = copy.deepcopy(run[1])
    r = next(r for r in recs if r["ev"] == "hostile_done" and r["got"] and r["got"].startswith("close"))
    r["got"] = "close 1011"      # documented, but not the outcome of what it sent
    v = verdict(recs)
    assert any(x["rule"] == "R4" and r["kind"] in x["msg"] and "1011" in x["msg"] for x in v), v


def test_a_delivered_message_never_acked_is_caught(run):
    recs = copy.deepcopy(run[1])
    # an ack whose sender's connection stayed up: drop the ack
    closed = {r["c"] for r in recs if (r["ev"] == "close" and r["by"] != "client") or r["ev"] == "cut"}
    i = next(i for i, r in enumerate(recs) if r["ev"] == "ack" and r["c"] not in closed)
    ack = recs.pop(i)
    v = verdict(recs)
    assert any(x["rule"] == "R3" and ack["i"] in x["msg"] for x in v), v


def test_a_message_nobody_sent_is_caught(run):
    recs = copy.deepcopy(run[1])
    audit = next(r for r in recs if r["ev"] == "audit" and r["m"])
    last = audit["m"][-1]
    audit["m"].append([last[0] + 1, last[1], "ghost.1", last[3]])
    v = verdict(recs)
    assert any(x["rule"] == "R3" and "ghost.1" in x["msg"] for x in v), v


def test_a_duplicate_or_forged_direct_message_is_caught(run):
    recs = copy.deepcopy(run[1])
    i = next(i for i, r in enumerate(recs) if r["ev"] == "drecv")
    recs.insert(i + 1, dict(recs[i]))
    recs.insert(i + 2, dict(recs[i], i="forged.9"))
    v = verdict(recs)
    assert any(x["rule"] == "R1" and "twice" in x["msg"] for x in v), v
    assert any(x["rule"] == "R3" and "forged.9" in x["msg"] for x in v), v


def test_an_altered_body_is_caught(run):
    recs = copy.deepcopy(run[1])
    i = live_recvs(recs)[5]
    recs[i]["k"] ^= 1
    assert "R2" in rules(recs)      # the same (room, epoch, seq) now names two bodies


def test_an_unexplained_epoch_change_is_caught(run):
    recs = copy.deepcopy(run[1])
    i = live_recvs(recs)[len(live_recvs(recs)) // 2]
    r = recs[i]
    recs.insert(i + 1, {"t": r["t"], "ev": "reset", "c": r["c"], "n": r["n"], "r": r["r"],
                        "e": "00000000deadbeef", "s": 0})
    v = verdict(recs)
    assert any(x["rule"] == "R2" and "changed epoch" in x["msg"] for x in v), v


def test_a_member_that_misses_the_end_is_caught(run):
    """The last deliveries of a room to one member vanish: it left short."""
    recs = copy.deepcopy(run[1])
    last = {}
    for i, r in enumerate(recs):
        if r["ev"] == "recv":
            last[(r["n"], r["r"])] = i
    i = max(last.values())
    victim = recs.pop(i)
    v = verdict(recs)
    assert any(x["rule"] == "R1" and victim["n"] in x["msg"] for x in v), v


def test_memory_and_fds_over_the_bound_are_caught(run):
    recs = copy.deepcopy(run[1])
    f = next(r for r in recs if r["ev"] == "final")
    f["rss"] += 200 * 1024
    f["fds"] += 50
    v = [x for x in verdict(recs) if x["rule"] == "R5"]
    assert any("open fds" in x["msg"] for x in v), v
    # RSS is judged, except for an ASan build (its quarantine keeps freed memory)
    assert any("RSS" in x["msg"] for x in v) == (not recs[0]["sanitize"]), v


def test_a_sanitizer_report_is_caught(run):
    recs = copy.deepcopy(run[1])
    s = next(r for r in recs if r["ev"] == "sanitizer")
    s.update(markers=["ERROR: AddressSanitizer"], excerpt="==1==ERROR: AddressSanitizer: heap-use-after-free")
    assert "R6" in rules(recs)


def test_the_cli_exits_1_on_a_violation(run, tmp_path):
    out, recs = run
    recs = copy.deepcopy(recs)
    recs.pop(live_recvs(recs)[10])
    p = tmp_path / "history.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    bad = subprocess.run([PY, os.path.join(SOAK, "check.py"), str(p)], capture_output=True, text=True)
    assert bad.returncode == 1 and "VIOLATION R1" in bad.stdout, bad.stdout
    good = subprocess.run([PY, os.path.join(SOAK, "check.py"), str(out / "history.jsonl"),
                           ], capture_output=True, text=True)
    assert good.returncode == 0, good.stdout
    rep = subprocess.run([PY, os.path.join(SOAK, "report.py"), str(out)], capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    assert (out / "resources.png").stat().st_size > 10000
    assert "no violation" in (out / "report.md").read_text()
