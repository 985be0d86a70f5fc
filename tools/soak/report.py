#!/usr/bin/python3
"""The soak's report: markdown and a PNG chart of each node's RSS and open fds.

    tools/soak/report.py OUT            # reads OUT/history.jsonl and OUT/check.json
                                        # writes OUT/report.md and OUT/resources.png

Run tools/soak/check.py first: the verdict comes from check.json, this only
presents it (operations, faults, violations with the part of the history
that shows each one, notes, resources, the exact command and seed).
"""

import argparse
import collections
import json
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FAULT_COLORS = {"kill9": "red", "term": "orange", "hup": "green", "diskfull": "purple", "cpu": "brown",
                "redis_stop": "blue", "redis_kill": "navy", "redis_pause": "teal", "redis_wipe": "black"}


def chart(recs, verdict, path, title):
    samples = collections.defaultdict(list)
    load_stop = next((r["t"] for r in recs if r["ev"] == "load_stop"), None)
    for r in recs:
        if r["ev"] in ("sample", "baseline", "final"):
            samples[r["node"]].append((r["t"], r["rss"] / 1024.0, r["fds"]))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for node, pts in sorted(samples.items()):
        pts.sort()
        t = [p[0] for p in pts]
        ax1.plot(t, [p[1] for p in pts], label="node %d" % node, linewidth=1)
        ax2.plot(t, [p[2] for p in pts], label="node %d" % node, linewidth=1)
    seen = set()
    for kind, node, t0, t1 in verdict.get("faults", []):
        for ax in (ax1, ax2):
            ax.axvspan(t0, t1 or t0, color=FAULT_COLORS.get(kind, "gray"), alpha=0.25,
                       label=kind if ax is ax1 and kind not in seen else None)
        seen.add(kind)
    for res in verdict.get("resources", []):
        if res.get("rss_judged", True):
                ax1.axhline((res["rss_base_kb"] + res["rss_bound_kb"]) / 1024.0, color="red", linestyle=":",
                        linewidth=0.8)
        ax2.axhline(res["fds_base"] + res["fd_bound"], color="red", linestyle=":", linewidth=0.8)
    if load_stop is not None:
        for ax in (ax1, ax2):
            ax.axvline(load_stop, color="black", linestyle="--", linewidth=0.8)
    ax1.set_ylabel("RSS (MB)")
    ax2.set_ylabel("open fds")
    ax2.set_xlabel("seconds (dashed: load stops; dotted red: the bound after the load)")
    ax1.set_title(title)
    ax1.legend(fontsize=7, ncol=4, loc="upper left")
    ax1.set_ylim(bottom=0)
    ax2.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(out):
    hist = os.path.join(out, "history.jsonl")
    with open(hist) as f:
        recs = [json.loads(line) for line in f]
    with open(os.path.join(out, "check.json")) as f:
        verdict = json.load(f)
    run = verdict["run"]
    st = verdict["stats"]
    title = "chatd soak: %s, %ss, seed %s" % (run["mode"], run["duration"], run["seed"])
    png = os.path.join(out, "resources.png")
    chart(recs, verdict, png, title)
    v = verdict["violations"]
    md = ["# %s" % title, "",
          "Command: `%s`" % run["cmd"], "",
          "chatd: `%s`%s. Verdict: **%s**." % (run["chatd"], " (ASan+UBSan build)" if run.get("sanitize") else "",
                                               "no violation" if not v else "%d violations" % len(v)), "",
          "## Operations", "",
          "| operation | count |", "|---|---|"]
    rows = [("connections", st.get("ev_connect", 0)), ("sessions (welcome)", st.get("ev_welcome", 0)),
            ("joins (resumes with since)", "%d (%d)" % (st.get("ev_joined", 0), st.get("resumes", 0))),
            ("sends / acks", "%d / %d" % (st.get("sends", 0), st.get("acks", 0))),
            ("distinct messages seen", st.get("messages", 0)),
            ("message deliveries", st.get("deliveries", 0)),
            ("DMs sent / delivered", "%d / %d" % (st.get("ev_dm", 0), st.get("ev_drecv", 0))),
            ("leaves", st.get("ev_left", 0)), ("cut sockets", st.get("cuts", 0)),
            ("slow-consumer stalls", st.get("ev_stall", 0)),
            ("hostile clients", st.get("ev_hostile_done", 0)),
            ("truncated replays filled from history", st.get("truncated_replays", 0)),
            ("resets / epoch changes", "%d / %d" % (st.get("resets", 0), st.get("epoch_changes", 0)))]
    md += ["| %s | %s |" % r for r in rows]
    md += ["", "Errors received: " + (", ".join("`%s` %d" % (k[6:], n) for k, n in sorted(st.items())
                                              if k.startswith("error_")) or "none") + ".",
           "Close codes seen by clients: " + (", ".join("%s: %d" % (k[6:], n) for k, n in sorted(st.items())
                                                       if k.startswith("close_")) or "none") + ".",
           "Hostile clients: " + (", ".join("%s %d" % (k[8:], n) for k, n in sorted(st.items())
                                           if k.startswith("hostile_")) or "none") + ".", ""]
    kinds = collections.Counter(f[0] for f in verdict["faults"])
    md += ["## Faults", "", "%d faults: %s." % (len(verdict["faults"]),
                                                ", ".join("%s %d" % kv for kv in sorted(kinds.items())) or "none"),
           "", "| t start (s) | t end (s) | fault | node |", "|---|---|---|---|"]
    md += ["| %.1f | %.1f | %s | %s |" % (f[2], f[3], f[0], f[1]) for f in verdict["faults"]]
    md += ["", "## Violations", ""]
    if not v:
        md += ["None."]
    for i, x in enumerate(v, 1):
        md += ["%d. **%s** %s" % (i, x["rule"], x["msg"]), "", "   ```"]
        md += ["   %s" % json.dumps(h)[:400] for h in x["history"]]
        md += ["   ```", ""]
    md += ["", "## Reported separately (not violations)", ""]
    if not verdict["notes"]:
        md += ["Nothing."]
    for kind, items in sorted(verdict["notes"].items()):
        md += ["- **%s**: %d" % (kind, len(items))]
        md += ["  - %s (history lines %s)" % (x["msg"], x["lines"]) for x in items[:5]]
    if st.get("slow_consumer_lost_close_frames"):
        md += ["- **slow consumers that lost their close frame** (1006 instead of 1008): %d"
               % st["slow_consumer_lost_close_frames"]]
    md += ["", "## Resources", "", "![RSS and fds](resources.png)", "",
           "| node | RSS idle before (KB) | RSS after the load (KB) | bound | fds before | fds after | bound |",
           "|---|---|---|---|---|---|---|"]
    md += ["| %d | %d | %d | %s | %d | %d | +%d |" % (r["node"], r["rss_base_kb"], r["rss_end_kb"],
                                                  "+%d" % r["rss_bound_kb"] if r.get("rss_judged", True)
                                                  else "not judged (ASan)",
                                                  r["fds_base"], r["fds_end"], r["fd_bound"])
           for r in verdict["resources"]]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    return os.path.join(out, "report.md")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the soak's output directory")
    args = ap.parse_args()
    print("report: %s" % report(args.out))


if __name__ == "__main__":
    main()
