#!/usr/bin/python3
"""Summaries for bench/ab.sh (two chatd builds, A = base, B = new).

  ab_report.py row LOAD.json "RATE TAG PAIR" FPW   one run, for the log
  ab_report.py timed OUT                           per rate: medians, B/A per pair, ab.png
  ab_report.py instr OUT DURATION                  callgrind: instructions per delivery
"""
import collections
import json
import os
import re
import statistics
import subprocess
import sys


def load(path):
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def cost(d):
    """Server CPU microseconds per delivery (None without deliveries)."""
    if not d or not d.get("delivered") or d.get("server_cpu_pct", -1) < 0:
        return None
    return d["server_cpu_pct"] / 100.0 * d["duration_s"] / d["delivered"] * 1e6


def row(path, label, fpw):
    d = load(path)
    c = cost(d)
    print("ab: {} cpu_us/delivery {} p99 {} ms lost {} frames/write {}".format(
        label, "%.3f" % c if c is not None else "-", d["latency_ms"]["p99"], d["lost"], fpw))


def timed(out):
    runs = collections.defaultdict(dict)     # rate -> pair -> tag -> (cost, json, fpw)
    with open(os.path.join(out, "rows.txt")) as f:
        for line in f:
            rate, tag, pair, fpw, path = line.split()
            d = load(path)
            runs[int(rate)].setdefault(int(pair), {})[tag] = (cost(d), d, float(fpw))
    lines = ["| rate (messages/s) | deliveries/s offered | A: CPU µs/delivery (median) | B | B/A per pair | "
             "B/A median | mean ± sd | lost A / B | p99 ms A / B (median) | frames/write A / B (median) |",
             "|" + "---|" * 10]
    chart = {}
    for rate in sorted(runs):
        pairs = runs[rate]
        ratios = [p["B"][0] / p["A"][0] for p in pairs.values()
                  if "A" in p and "B" in p and p["A"][0] and p["B"][0]]
        med = lambda tag, f: statistics.median([f(p[tag]) for p in pairs.values() if tag in p and p[tag][0]])
        clients = next(iter(pairs.values()))["A"][1]["clients"]
        lost = {t: sum(p[t][1]["lost"] for p in pairs.values() if t in p) for t in "AB"}
        chart[rate] = ratios
        lines.append("| {:,} | {:,} | {:.3f} | {:.3f} | {} | **{:.3f}** | {:.3f} ± {:.3f} | {} / {} | {:.1f} / {:.1f} | {:.1f} / {:.1f} |".format(
            rate, rate * clients, med("A", lambda x: x[0]), med("B", lambda x: x[0]),
            " ".join("%.2f" % r for r in ratios), statistics.median(ratios), statistics.mean(ratios),
            statistics.stdev(ratios) if len(ratios) > 1 else 0.0, lost["A"], lost["B"],
            med("A", lambda x: x[1]["latency_ms"]["p99"]), med("B", lambda x: x[1]["latency_ms"]["p99"]),
            med("A", lambda x: x[2]), med("B", lambda x: x[2])))
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no chart: python3-matplotlib is not installed)")
        return
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    rates = sorted(chart)
    for i, rate in enumerate(rates):
        ax.scatter([i] * len(chart[rate]), chart[rate], color="#1f77b4", alpha=0.6)
        ax.plot([i - 0.2, i + 0.2], [statistics.median(chart[rate])] * 2, color="#1f77b4")
    ax.axhspan(0.95, 1.05, color="#2ca02c", alpha=0.12, label="within 5 %")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xticks(range(len(rates)), ["{:,}/s".format(r) for r in rates])
    ax.set_xlabel("messages/s offered")
    ax.set_ylabel("CPU per delivery, B / A")
    ax.set_title("new build (B) against the base build (A): each dot one pair, bar the median", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ab.png"), dpi=110)


def callgrind(path):
    """Exclusive instructions per function, and the program total."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", "--tree=none", "--auto=no", path],
                          capture_output=True, text=True, check=True).stdout
    funcs, total = collections.Counter(), 0
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in m.group(2):
            total = n
        else:
            name = re.sub(r" \[.*\]$", "", m.group(2))
            funcs[name.split(":", 1)[-1]] += n
    return total, funcs


def instr(out, dur):
    dur = int(dur)
    per, diff = {}, {}
    for tag in "AB":
        t1, f1 = callgrind(os.path.join(out, "cg-%s-%d.out" % (tag, dur)))
        t3, f3 = callgrind(os.path.join(out, "cg-%s-%d.out" % (tag, 3 * dur)))
        d1 = load(os.path.join(out, "cg-%s-%d.json" % (tag, dur)))
        d3 = load(os.path.join(out, "cg-%s-%d.json" % (tag, 3 * dur)))
        n = d3["delivered"] - d1["delivered"]
        if n <= 0 or d1["lost"] or d3["lost"]:
            print("%s: no clean steady state (delivered %d / %d, lost %d / %d)" %
                  (tag, d1["delivered"], d3["delivered"], d1["lost"], d3["lost"]))
            return
        per[tag] = (t3 - t1) / n
        diff[tag] = {k: (f3[k] - f1[k]) / n for k in set(f1) | set(f3)}
    print("user-space instructions per delivery (steady state, callgrind): A %.1f, B %.1f, B/A %.3f"
          % (per["A"], per["B"], per["B"] / per["A"]))
    keys = sorted(set(diff["A"]) | set(diff["B"]),
                  key=lambda k: -abs(diff["B"].get(k, 0) - diff["A"].get(k, 0)))
    print("largest differences per delivery (A, B, B - A; inlining moves cost between names):")
    for k in keys[:15]:
        a, b = diff["A"].get(k, 0), diff["B"].get(k, 0)
        print("  %8.1f %8.1f %+8.1f  %s" % (a, b, b - a, k[:80]))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "row":
        row(sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == "timed":
        timed(sys.argv[2])
    elif mode == "instr":
        instr(sys.argv[2], sys.argv[3])
    else:
        sys.exit("ab_report.py: row, timed or instr")
