#!/usr/bin/python3
"""The soak's independent checker: reads only a recorded history and judges it.

    tools/soak/check.py OUT/history.jsonl [--protocol docs/protocol.md] [--json OUT/check.json]

It never asks chatd anything (no metrics, no counters): every verdict comes
from what the clients saw, as recorded by tools/soak/soak.py. Rules (the
numbers are the rule names used in the output):

  R1 delivery   every acked message is delivered exactly once, in seq order,
                to every member for its whole membership (join .. left),
                counting resumes (join with since) and history fills;
  R2 seq        per room and epoch, seq is gap-free and a (room, epoch, seq)
                names one message only, across restarts; an epoch change
                (reset, or a joined with a new epoch) is reported and must be
                explained by a fault that loses data (Redis wiped);
  R3 unacked    nothing is delivered that was never acked, unless the
                sender's connection died or the send was refused with
                unavailable before its ack (reported separately);
  R4 refusals   every error code and close code is documented in
                docs/protocol.md, and each hostile client got the documented
                outcome;
                DMs: every direct received was sent to that name with that
                body, at most once per connection (acked means accepted,
                not delivered, so a missing direct is not judged);
  R5 resources  each node's RSS and open fds after the load are within the
                run's stated bound of their idle baseline (RSS is not judged
                for an ASan build: its quarantine keeps freed memory);
  R6 process    no sanitizer report in any node's log, every SIGTERM exits 0.

Exit status: 0 when there is no violation, 1 otherwise, 2 on a bad input.
"""

import argparse
import collections
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTOCOL = os.path.join(HERE, "..", "..", "docs", "protocol.md")

# Close codes a client sees without the server having sent them.
CLIENT_SIDE_CLOSES = {1000: "closed by the client", 1006: "no close frame (connection lost)"}
# Faults during which a node's clients may lose their connection.
CUTTING_FAULTS = {"kill9", "term", "cpu"}


def documented_codes(protocol_path):
    """Error codes and close codes from the tables in docs/protocol.md."""
    with open(protocol_path) as f:
        text = f.read()
    def section(title):
        m = re.search(r"^## %s\n(.*?)(?=^## )" % re.escape(title), text, re.M | re.S)
        if not m:
            raise SystemExit("check: no '## %s' section in %s" % (title, protocol_path))
        return m.group(1)
    http = {int(x) for x in re.findall(r"^\|[^|\n]*\| (\d{3})\b", section("Transport"), re.M)}
    errors = set(re.findall(r"^\| `([a-z_]+)` \|", section("Errors"), re.M))
    closes = {int(x) for x in re.findall(r"^\| (\d{4}) \|", section("Close codes"), re.M)}
    if not errors or not closes or not http:
        raise SystemExit("check: could not read the error/close/HTTP status tables of %s" % protocol_path)
    return errors, closes, http


class Seg:
    """One member's continuous membership of a room within one epoch."""

    def __init__(self, name, room, epoch, start, c, line):
        self.name, self.room, self.epoch, self.start = name, room, epoch, start
        self.got = set()
        self.live_prev = {c: start}
        self.open = True
        self.line = line

    def cmax(self):
        """Highest seq up to which every message since the start was received."""
        s = self.start
        while s + 1 in self.got:
            s += 1
        return s


class Checker:
    def __init__(self, records, errors_doc, closes_doc, http_doc=frozenset((404, 403, 503))):
        self.recs = records
        self.http_doc = http_doc
        self.errors_doc = errors_doc
        self.closes_doc = closes_doc
        self.violations = []
        self.notes = collections.defaultdict(list)
        self.stats = collections.Counter()
        self.run = {}
        self.fault_starts = []

    # -- reporting

    def violate(self, rule, msg, *lines):
        ctx = [dict(self.recs[i - 1], line=i) for i in sorted(set(lines)) if 0 < i <= len(self.recs)]
        self.violations.append({"rule": rule, "msg": msg, "history": ctx[:12]})

    def note(self, kind, msg, *lines):
        self.notes[kind].append({"msg": msg, "lines": sorted(set(lines))[:12]})

    # -- the pass

    def check(self):
        segs = {}                     # (name, room) -> Seg
        joinreq = {}                  # (c, room) -> {since, epoch, rp: [(seq, line)], line}
        conns = {}                    # c -> {n, node, role}
        msgs = {}                     # (room, epoch, seq) -> (from, id, crc, line)
        by_id = collections.defaultdict(set)   # (room, epoch, from, id) -> {seq}
        sends = collections.defaultdict(list)  # (name, id) -> [(c, ref, crc, line)]
        acks = []                     # (name, id, room, seq, epoch believed, c, line)
        acked = set()                 # (name, id)
        refused = {}                  # ref -> (code, line)
        died_conns = set()            # connections cut or closed by the server
        timeouts = set()              # refs that got no reply in time
        dms = {}                      # (from, id) -> (to, crc, line)
        drecv_seen = set()
        acked_max = collections.defaultdict(int)   # (room, epoch) -> max acked seq so far
        acked_max_room = collections.defaultdict(dict)  # room -> {epoch: max acked seq}
        leave_snap = {}               # (c, room) -> acked max when the leave was sent
        epochs_seen = collections.defaultdict(list)  # room -> [(epoch, line)]
        faults = []                   # [kind, node, t0, t1, line]
        open_fault = {}
        hostile = {}
        baseline, final = {}, {}
        drain_line = None
        drain_segs = []
        audits = {}
        cluster = False

        def epoch_obs(room, epoch, line):
            obs = epochs_seen[room]
            if not obs or obs[-1][0] != epoch:
                obs.append((epoch, line))

        def record_msg(room, epoch, seq, frm, mid, k, line):
            key = (room, epoch, seq)
            have = msgs.get(key)
            if have is None:
                msgs[key] = (frm, mid, k, line)
                by_id[(room, epoch, frm, mid)].add(seq)
            elif have[:3] != (frm, mid, k):
                self.violate("R2", "room %s epoch %s seq %d names two messages: %s/%s and %s/%s"
                             % (room, epoch, seq, have[0], have[1], frm, mid), have[3], line)

        for line, r in enumerate(self.recs, 1):
            ev = r["ev"]
            self.stats["ev_" + ev] += 1
            t = r["t"]
            if ev == "run":
                self.run = r
                cluster = r["mode"] == "cluster"
            elif ev == "connect":
                conns[r["c"]] = {"n": r["n"], "node": r["node"]}
            elif ev == "fault":
                key = (r["kind"], r["node"])
                if r["phase"] == "start":
                    open_fault[key] = [r["kind"], r["node"], t, None, line]
                    self.fault_starts.append(open_fault[key])
                else:
                    f = open_fault.pop(key)
                    f[3] = t
                    faults.append(f)
            elif ev == "join":
                # What was acked before the join was sent has a seq <= joined.seq
                # (records are written when read, so a stalled reader's joined
                # may be read long after later acks).
                joinreq[(r["c"], r["r"])] = {"since": r.get("since"), "epoch": r.get("epoch"), "rp": [],
                                             "line": line, "amax": dict(acked_max_room[r["r"]])}
            elif ev == "recv":
                self.stats["deliveries"] += 1
                room, seq = r["r"], r["s"]
                if r.get("rp"):
                    jr = joinreq.get((r["c"], room))
                    if jr is None:
                        self.violate("R1", "%s got a replayed message of %s with no join in flight"
                                     % (r["n"], room), line)
                    else:
                        jr["rp"].append((seq, line, r))
                    continue
                seg = segs.get((r["n"], room))
                if seg is None or not seg.open:
                    self.violate("R1", "%s got message seq %d of %s while not a member" % (r["n"], seq, room), line)
                    continue
                record_msg(room, seg.epoch, seq, r["f"], r["i"], r["k"], line)
                prev = seg.live_prev.get(r["c"])
                if prev is not None and seq != prev + 1:
                    what = "out of order or repeated" if seq <= prev else "a gap (%d..%d missing)" % (prev + 1, seq - 1)
                    self.violate("R1", "%s on connection %d in %s: seq %d after %d: %s"
                                 % (r["n"], r["c"], room, seq, prev, what), line)
                seg.live_prev[r["c"]] = seq
                if seq in seg.got:
                    self.violate("R1", "%s got seq %d of %s twice" % (r["n"], seq, room), line)
                seg.got.add(seq)
            elif ev == "joined":
                room, seq, epoch = r["r"], r["s"], r["e"]
                epoch_obs(room, epoch, line)
                jr = joinreq.pop((r["c"], room), None) or {"since": None, "rp": [], "line": line}
                key = (r["n"], room)
                seg = segs.get(key)
                resume = jr["since"] is not None and seg is not None and seg.open
                amax = jr.get("amax", {}).get(epoch, 0)
                if not cluster and seq < amax:
                    self.violate("R2", "joined %s says seq %d, but seq %d was acked in epoch %s before the join"
                                 % (room, seq, amax, epoch), jr["line"], line)
                if resume and seg.epoch == epoch:
                    self.stats["resumes"] += 1
                    since = jr["since"]
                    rp = [s for s, _, _ in jr["rp"]]
                    if rp != list(range(since + 1, since + 1 + len(rp))):
                        self.violate("R1", "%s resumed %s since %d: replay %s is not since+1.. in order"
                                     % (r["n"], room, since, rp[:20]), jr["line"], line, *[l for _, l, _ in jr["rp"][:8]])
                    for s, l, rr in jr["rp"]:
                        record_msg(room, epoch, s, rr["f"], rr["i"], rr["k"], l)
                        # A seq above `since` the client already had (live,
                        # while it was filling a truncated replay when the
                        # connection died) is sent again because the client
                        # asked for everything after since; protocol.md:
                        # "Ignore any message whose seq you already have".
                        # Replays at or below since are caught above.
                        if s in seg.got:
                            self.stats["replayed_again_above_since"] += 1
                        seg.got.add(s)
                    if r.get("rcv") is False and since < seq:
                        self.violate("R1", "%s resumed %s since %d: recovered false, messages %d..%d lost"
                                     % (r["n"], room, since, since + 1, seq), jr["line"], line)
                    elif r.get("rcv") and not r.get("tr") and since < seq and (not rp or rp[-1] != seq):
                        self.violate("R1", "%s resumed %s since %d: recovered, yet the replay ends at %s, not %d"
                                     % (r["n"], room, since, rp[-1] if rp else None, seq), jr["line"], line)
                    if r.get("tr"):
                        self.stats["truncated_replays"] += 1
                    seg.live_prev = {r["c"]: seq}
                else:
                    if resume:
                        empty = (seq == 0 and seg.start == 0 and not seg.got
                                 and acked_max[(room, seg.epoch)] == 0
                                 and not any(k[0] == room and k[1] == seg.epoch for k in msgs))
                        self.epoch_change(room, seg.epoch, epoch, line, faults, r["n"], empty)
                    if jr["rp"]:
                        self.violate("R1", "%s joined %s without a matching since but got a replay"
                                     % (r["n"], room), line)
                    segs[key] = Seg(r["n"], room, epoch, seq, r["c"], line)
            elif ev == "hist":
                seg = segs.get((r["n"], r["r"]))
                seqs = [m[0] for m in r["m"]]
                if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                    self.violate("R2", "history page of %s has a gap: %s" % (r["r"], seqs[:30]), line)
                if seg is not None and seg.open:
                    for s, frm, mid, k in r["m"]:
                        record_msg(r["r"], seg.epoch, s, frm, mid, k, line)
                        if s > seg.start:
                            seg.got.add(s)
            elif ev == "reset":
                room = r["r"]
                epoch_obs(room, r["e"], line)
                seg = segs.get((r["n"], room))
                if seg is not None and seg.open and seg.epoch != r["e"]:
                    self.epoch_change(room, seg.epoch, r["e"], line, faults, r["n"])
                    segs[(r["n"], room)] = Seg(r["n"], room, r["e"], r["s"], r["c"], line)
                self.stats["resets"] += 1
            elif ev == "leave":
                seg = segs.get((r["n"], r["r"]))
                if seg is not None:
                    leave_snap[(r["c"], r["r"])] = acked_max[(r["r"], seg.epoch)]
            elif ev == "left":
                seg = segs.get((r["n"], r["r"]))
                if seg is None or not seg.open:
                    continue
                self.close_seg(seg, line, leave_snap.pop((r["c"], r["r"]), 0) if not cluster else 0)
            elif ev == "send":
                sends[(r["n"], r["i"])].append((r["c"], r.get("ref"), r["k"], line))
                self.stats["sends"] += 1
            elif ev == "ack":
                seg = segs.get((r["n"], r["r"]))
                epoch = seg.epoch if seg is not None else None
                acks.append((r["n"], r["i"], r["r"], r["s"], epoch, r["c"], line))
                acked.add((r["n"], r["i"]))
                if epoch is not None:
                    acked_max[(r["r"], epoch)] = max(acked_max[(r["r"], epoch)], r["s"])
                    acked_max_room[r["r"]][epoch] = acked_max[(r["r"], epoch)]
                self.stats["acks"] += 1
            elif ev == "err":
                code = r.get("code")
                self.stats["error_" + str(code)] += 1
                if code not in self.errors_doc:
                    self.violate("R4", "error code %r is not documented in docs/protocol.md" % code, line)
                if r.get("ref"):
                    refused[r["ref"]] = (code, line)
            elif ev == "close":
                # A clean close by the client comes only when no reply is
                # outstanding; anything else may have eaten an ack.
                if r["by"] != "client":
                    died_conns.add(r["c"])
                self.classify_close(r, line, conns, faults, open_fault)
            elif ev == "dm":
                dms[(r["n"], r["i"])] = (r["to"], r["k"], line)
            elif ev == "drecv":
                self.stats["direct_deliveries"] += 1
                sent = dms.get((r["f"], r["i"]))
                if sent is None or sent[0] != r["n"]:
                    self.violate("R3", "%s got direct %s/%s that was never sent to it" % (r["n"], r["f"], r["i"]), line)
                elif sent[1] != r["k"]:
                    self.violate("R3", "%s got direct %s/%s with a body other than the one sent"
                                 % (r["n"], r["f"], r["i"]), sent[2], line)
                if (r["c"], r["f"], r["i"]) in drecv_seen:
                    self.violate("R1", "%s got direct %s/%s twice" % (r["n"], r["f"], r["i"]), line)
                drecv_seen.add((r["c"], r["f"], r["i"]))
            elif ev == "connect_fail":
                m = re.search(r"HTTP (\d{3})", r["err"])
                if m and int(m.group(1)) not in self.http_doc:
                    self.violate("R4", "an upgrade was refused with HTTP %s, not documented in protocol.md's "
                                 "admission table" % m.group(1), line)
                elif m:
                    self.stats["upgrade_refused_%s" % m.group(1)] += 1
            elif ev == "cut":
                self.stats["cuts"] += 1
                died_conns.add(r["c"])
            elif ev == "timeout":
                timeouts.add(r["ref"])
                self.stats["reply_timeouts"] += 1
                self.note("reply_timeouts", "%s: no reply to %s within the timeout (connection cut, resumed)"
                          % (r["n"], r["cmd"]), line)
            elif ev == "hostile":
                hostile[r["c"]] = (r, line)
            elif ev == "hostile_done":
                h, hl = hostile.pop(r["c"])
                self.stats["hostile_" + r["kind"]] += 1
                got = r.get("got") or ""
                m = re.match(r"(close|error) (\S+)", got)
                if m and m.group(1) == "close" and int(m.group(2)) not in self.closes_doc | set(CLIENT_SIDE_CLOSES):
                    self.violate("R4", "hostile %s: close code %s is not documented" % (r["kind"], m.group(2)), hl, line)
                if m and m.group(1) == "error" and m.group(2) not in self.errors_doc:
                    self.violate("R4", "hostile %s: error %s is not documented" % (r["kind"], m.group(2)), hl, line)
                if got != h["expect"]:
                    during = [f for f in faults + list(open_fault.values()) if f[2] <= t and (f[3] is None or f[3] >= h["t"] - 1)]
                    if during:
                        self.note("hostile_outcome_during_fault", "hostile %s got %r (expected %r) during fault %s"
                                  % (r["kind"], got, h["expect"], during[0][0]), hl, line)
                    else:
                        self.violate("R4", "hostile %s got %r, the documented outcome is %r"
                                     % (r["kind"], got, h["expect"]), hl, line)
            elif ev == "baseline":
                baseline[r["node"]] = r
            elif ev == "final":
                final[r["node"]] = r
            elif ev == "drain":
                drain_line = line
                for seg in segs.values():
                    if seg.open:
                        drain_segs.append((seg, seg.cmax()))
                for name, ids in r.get("pending", {}).items():
                    self.note("unacked_at_end", "%s still had %d unacked sends after the drain: %s"
                              % (name, len(ids), ids[:5]), line)
            elif ev == "audit":
                audits[r["r"]] = (r, line)
                epoch_obs(r["r"], r["e"], line)
                for s, frm, mid, k in r["m"]:
                    record_msg(r["r"], r["e"], s, frm, mid, k, line)
            elif ev == "bad_exit":
                self.violate("R6", "node %d exited with %s after %s" % (r["node"], r["rc"], r["after"]), line)
            elif ev == "node_hang":
                self.violate("R6", "node %d did not exit in time and was killed" % r["node"], line)
            elif ev == "sanitizer":
                if r["markers"]:
                    self.violate("R6", "sanitizer report in node %d's log (%s): %s"
                                 % (r["node"], r["log"], r["excerpt"][:1500]), line)
            elif ev == "unknown_frame":
                self.violate("R4", "a frame of an undocumented type: %s" % r["frame"], line)

        if not self.run:
            raise SystemExit("check: the history has no run record")
        if "end" not in {r["ev"] for r in self.recs[-3:]}:
            self.violate("R6", "the history does not end with an end record (the soak did not finish)",
                         len(self.recs))
        self.faults = faults
        sched = next((r for r in self.recs if r["ev"] == "schedule"), None)
        if sched is not None and self.run.get("faults") == "each":
            ran = collections.Counter(f[0] for f in faults)
            for _, kind in sched["faults"]:
                if ran[kind] > 0:
                    ran[kind] -= 1
                else:
                    self.violate("R6", "scheduled fault %s did not run to its end" % kind)
        self.check_end(drain_segs, audits, drain_line, faults)
        self.check_messages(msgs, by_id, sends, acks, acked, refused, died_conns, timeouts, audits, faults)
        self.check_resources(baseline, final)
        self.stats["faults"] = len(faults)
        return self.violations

    # -- pieces

    def epoch_change(self, room, old, new, line, faults, name, empty=False):
        t = self.recs[line - 1]["t"]
        wipes = [f for f in self.fault_starts if f[0] == "redis_wipe" and f[2] <= t]
        self.stats["epoch_changes"] += 1
        if empty:
            # protocol.md (join): a room in which no message was ever
            # accepted is forgotten when its last member leaves, and gets a
            # new epoch when it is created again. Nothing can be lost.
            self.stats["epoch_changes_of_empty_rooms"] += 1
            self.note("epoch_changes", "%s: room %s epoch %s -> %s: the room never had a message, "
                      "was forgotten and created again" % (name, room, old, new), line)
        elif wipes:
            self.note("epoch_changes", "%s: room %s epoch %s -> %s, explained by redis_wipe at t=%.1f"
                      % (name, room, old, new, wipes[-1][2]), line, wipes[-1][4])
        else:
            self.violate("R2", "room %s changed epoch %s -> %s (seen by %s) with no fault that loses data"
                         % (room, old, new, name), line)

    def close_seg(self, seg, line, acked_before):
        seg.open = False
        top = max(seg.got) if seg.got else seg.start
        missing = [s for s in range(seg.start + 1, top + 1) if s not in seg.got]
        if missing:
            self.violate("R1", "%s left %s missing seqs %s (received up to %d)"
                         % (seg.name, seg.room, missing[:20], top), seg.line, line)
        elif acked_before > top:
            self.violate("R1", "%s left %s having received up to seq %d, but seq %d was acked before it sent leave"
                         % (seg.name, seg.room, top, acked_before), seg.line, line)

    def classify_close(self, r, line, conns, faults, open_fault):
        code = r["code"]
        self.stats["close_%d" % code] += 1
        if r["by"] == "client":
            return
        if code not in self.closes_doc and code not in CLIENT_SIDE_CLOSES:
            self.violate("R4", "close code %d (%s) is not documented in docs/protocol.md" % (code, r["reason"]), line)
            return
        if code != 1006:
            if r["role"] != "slow" and code == 1008:
                self.note("slow_consumer_closes_of_readers", "%s (a reading client) closed 1008 %s"
                          % (r["n"], r["reason"]), line)
            return
        # 1006: the connection ended without a close frame.
        if r["role"] == "slow":
            # A stalled reader's 1008 sits behind the kernel's socket buffers
            # and chatd aborts the socket shortly after: the close frame is
            # usually never read. Expected; see docs/reliability.md.
            self.stats["slow_consumer_lost_close_frames"] += 1
            return
        node = conns.get(r["c"], {}).get("node")
        t = r["t"]
        for f in faults + list(open_fault.values()):
            if f[0] in CUTTING_FAULTS and f[1] == node and f[2] - 1 <= t <= (f[3] if f[3] is not None else t) + 3:
                return
        self.note("unexplained_disconnects", "%s (connection %d, node %s) lost its connection without a "
                  "close frame outside any fault" % (r["n"], r["c"], node), line)

    def check_end(self, drain_segs, audits, drain_line, faults):
        if drain_line is None:
            self.violate("R1", "no drain record: the run did not complete", len(self.recs))
            return
        for seg, cmax in drain_segs:
            a = audits.get(seg.room)
            if a is None:
                self.violate("R1", "room %s was never audited" % seg.room, drain_line)
                continue
            ar, al = a
            if ar["e"] != seg.epoch:
                self.epoch_change(seg.room, seg.epoch, ar["e"], al, faults, seg.name)
                continue
            if cmax < ar["s"]:
                self.violate("R1", "%s, a member of %s until the end, received up to seq %d of %d"
                             % (seg.name, seg.room, cmax, ar["s"]), seg.line, drain_line, al)
        for room, (ar, al) in audits.items():
            seqs = [m[0] for m in ar["m"]]
            if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                self.violate("R2", "audit of %s: the held history has a gap: %s"
                             % (room, [s for s in range(seqs[0], seqs[-1]) if s not in set(seqs)][:20]), al)
            if ar["s"] and (not seqs or seqs[-1] != ar["s"]):
                self.violate("R2", "audit of %s: joined says seq %d, the history ends at %s"
                             % (room, ar["s"], seqs[-1] if seqs else None), al)
            if self.run["mode"] == "single" and seqs and seqs[0] != 1:
                self.violate("R2", "audit of %s: stored history starts at seq %d, not 1" % (room, seqs[0]), al)

    def check_messages(self, msgs, by_id, sends, acks, acked, refused, died_conns, timeouts, audits, faults):
        # one message, one seq (dedup)
        for (room, epoch, frm, mid), seqs in by_id.items():
            if len(seqs) > 1:
                lines = [msgs[(room, epoch, s)][3] for s in sorted(seqs)]
                self.violate("R2", "message %s from %s is in %s (epoch %s) %d times, at seqs %s"
                             % (mid, frm, room, epoch, len(seqs), sorted(seqs)), *lines)
        # every delivered message was sent, with that body, and acked
        for (room, epoch, seq), (frm, mid, k, line) in msgs.items():
            attempts = sends.get((frm, mid))
            if not attempts:
                self.violate("R3", "message %s/%s at %s seq %d was never sent" % (frm, mid, room, seq), line)
                continue
            if k not in {a[2] for a in attempts}:
                self.violate("R3", "message %s/%s at %s seq %d: the body differs from the one sent"
                             % (frm, mid, room, seq), line, attempts[0][3])
            if (frm, mid) in acked:
                continue
            excuse = None
            for c, ref, _, sl in attempts:
                if ref in refused:
                    excuse = "refused with %s" % refused[ref][0]
                elif ref in timeouts:
                    excuse = "no reply in time; the sender cut its connection"
                elif c in died_conns:
                    excuse = "the sender's connection died before the ack"
            if excuse:
                self.stats["delivered_unacked_sender_died"] += 1
                self.note("delivered_without_ack", "%s/%s delivered at %s seq %d without an ack: %s"
                          % (frm, mid, room, seq, excuse), line, attempts[-1][3])
            else:
                self.violate("R3", "%s/%s delivered at %s seq %d but never acked, and its sender's "
                             "connection did not die" % (frm, mid, room, seq), line, attempts[-1][3])
        # every ack names its message; acked => still held at the end
        seen = {}
        for name, mid, room, seq, epoch, c, line in acks:
            prev = seen.get((name, mid, room, epoch))
            if prev is not None and prev[0] != seq:
                self.violate("R2", "%s/%s acked with seq %d and then %d in the same epoch"
                             % (name, mid, prev[0], seq), prev[1], line)
            seen[(name, mid, room, epoch)] = (seq, line)
            have = msgs.get((room, epoch, seq))
            if have is not None:
                if have[:2] != (name, mid):
                    self.violate("R2", "ack of %s/%s says %s seq %d, but that seq is %s/%s"
                                 % (name, mid, room, seq, have[0], have[1]), line, have[3])
                continue
            a = audits.get(room)
            if a is None:
                continue
            ar, al = a
            held = [m[0] for m in ar["m"]]
            if ar["e"] == epoch and held and held[0] <= seq <= held[-1]:
                self.violate("R1", "%s/%s was acked as %s seq %d but is not in the room's history"
                             % (name, mid, room, seq), line, al)
            elif ar["e"] == epoch and seq > ar["s"]:
                self.violate("R2", "%s/%s was acked as %s seq %d, beyond the room's final seq %d"
                             % (name, mid, room, seq, ar["s"]), line, al)
            elif ar["e"] != epoch:
                self.stats["acked_lost_with_epoch"] += 1
        self.stats["messages"] = len(msgs)

    def check_resources(self, baseline, final):
        bound_kb = self.run.get("rss_bound_kb", 65536)
        fd_bound = self.run.get("fd_bound", 4)
        self.resources = []
        for node, b in sorted(baseline.items()):
            f = final.get(node)
            if f is None:
                self.violate("R5", "node %d has no sample after the load" % node)
                continue
            self.resources.append({"node": node, "rss_base_kb": b["rss"], "rss_end_kb": f["rss"],
                                   "fds_base": b["fds"], "fds_end": f["fds"], "rss_bound_kb": bound_kb,
                                   "fd_bound": fd_bound})
            if self.run.get("sanitize"):
                # ASan keeps freed memory in quarantine (256 MB by default)
                # and maps shadow memory: its RSS says nothing about chatd's
                # own memory. Leaks are LeakSanitizer's job at exit (R6).
                self.resources[-1]["rss_judged"] = False
                self.note("rss_not_judged", "node %d: RSS %d KB after the load (baseline %d KB) is not judged "
                          "in an ASan build (quarantine); LeakSanitizer checks leaks at exit"
                          % (node, f["rss"], b["rss"]))
            elif f["rss"] > b["rss"] + bound_kb:
                self.violate("R5", "node %d: RSS %d KB after the load, baseline %d KB, bound +%d KB"
                             % (node, f["rss"], b["rss"], bound_kb))
            if f["fds"] > b["fds"] + fd_bound:
                self.violate("R5", "node %d: %d open fds after the load, baseline %d, bound +%d"
                             % (node, f["fds"], b["fds"], fd_bound))


def load(path):
    recs = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                recs.append(json.loads(line))
            except ValueError:
                raise SystemExit("check: %s:%d is not JSON" % (path, n))
    return recs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("history")
    ap.add_argument("--protocol", default=DEFAULT_PROTOCOL)
    ap.add_argument("--json", help="write the verdict here (default: check.json next to the history)")
    args = ap.parse_args()
    errors, closes, http = documented_codes(args.protocol)
    ck = Checker(load(args.history), errors, closes, http)
    ck.check()
    out = args.json or os.path.join(os.path.dirname(os.path.abspath(args.history)), "check.json")
    with open(out, "w") as f:
        json.dump({"violations": ck.violations, "notes": ck.notes, "stats": ck.stats,
                   "resources": getattr(ck, "resources", []), "run": ck.run,
                   "faults": [f[:4] for f in getattr(ck, "faults", [])]}, f, indent=1)
    for v in ck.violations[:50]:
        print("VIOLATION %s: %s" % (v["rule"], v["msg"]))
        for h in v["history"][:6]:
            print("    %s" % json.dumps(h)[:300])
    for kind, items in sorted(ck.notes.items()):
        print("note %s: %d" % (kind, len(items)))
    print("check: %d violations, %d deliveries, %d acks, %d faults -> %s"
          % (len(ck.violations), ck.stats["deliveries"], ck.stats["acks"], ck.stats["faults"], out))
    sys.exit(1 if ck.violations else 0)


if __name__ == "__main__":
    main()
