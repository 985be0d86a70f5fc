#!/usr/bin/python3
"""Render conf/grafana/chatd-dashboard.json's panels into one PNG, from a Prometheus.

Grafana is not packaged in Debian 12, so the picture of the dashboard in
docs/operations.md is made here, with Debian's python3-matplotlib: every
panel's queries (taken from the dashboard JSON, Grafana variables filled in)
are run against a Prometheus with query_range and drawn in the dashboard's
grid order, with its titles, legends and units. The dashboard JSON stays the
deliverable; this only shows what it shows.

    /usr/bin/python3 tools/dashboard_png.py --prometheus http://127.0.0.1:9090 \\
        --out dashboard.png --seconds 600

docs/dashboard.png is made by the integration test, which runs a real
Prometheus against three chatd nodes under traffic (see docs/operations.md):

    CHATD_DASHBOARD_PNG=$PWD/docs/dashboard.png CHATD_DASHBOARD_SECONDS=60 \\
        CHATD_BIN=build/chatd /usr/bin/python3 -m pytest -q -p no:cacheprovider \\
        tests/integration/test_prometheus.py

The module is also imported by that test, so that the queries it checks are
extracted exactly as they are drawn.
"""

import argparse
import json
import math
import os
import re
import sys
import time
import urllib.parse
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DASHBOARD = os.path.join(REPO, "conf", "grafana", "chatd-dashboard.json")


def substitute(expr, rate_interval, instance):
    """Fill in the Grafana variables the dashboard uses; refuse unknown ones."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$instance", instance)
    left = re.findall(r"\$\{?\w+", expr)
    if left:
        raise ValueError("unknown Grafana variable %s in %r" % (left[0], expr))
    return expr


def dashboard_panels(path=DASHBOARD):
    """The dashboard's panels that have queries, in order (rows left out)."""
    with open(path) as f:
        dash = json.load(f)
    out = []
    for p in dash["panels"]:
        out.extend(p.get("panels", []) if p["type"] == "row" else [p])
    return [p for p in out if p.get("targets")]


def dashboard_queries(path=DASHBOARD, rate_interval="1m", instance=".*"):
    """[(panel title, PromQL, legendFormat)] for every target of every panel."""
    return [(p["title"], substitute(t["expr"], rate_interval, instance), t.get("legendFormat", ""))
            for p in dashboard_panels(path) for t in p["targets"]]


def query_range(url, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen("%s/api/v1/query_range?%s" % (url, params), timeout=30) as r:
        doc = json.load(r)
    if doc.get("status") != "success":
        raise RuntimeError("query failed: %s: %s" % (expr, doc))
    return doc["data"]["result"]


def legend(fmt, labels, expr):
    if not fmt:
        return expr if len(expr) < 40 else expr[:37] + "..."
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def scale_for(unit, vmax):
    """(factor, axis label) that keeps the numbers readable."""
    if unit == "s":
        return (1e3, "ms") if vmax < 1 else (1, "s")
    if unit == "bytes":
        for f, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if vmax >= f:
                return 1.0 / f, name
        return 1, "bytes"
    if unit == "percentunit":
        return 100, "%"
    if unit == "ops":
        return 1, "per second"
    return 1, ""


def render(url, out, seconds=600, rate_interval="1m", instance=".*", step=None, path=DASHBOARD):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path) as f:
        title = json.load(f).get("title", "dashboard")
    panels = dashboard_panels(path)
    end = time.time()
    start = end - seconds
    step = step or max(1.0, seconds / 300.0)
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 5.2, rows * 3.0), squeeze=False)
    for ax, p in zip(axes.flat, panels):
        series = []
        for t in p["targets"]:
            expr = substitute(t["expr"], rate_interval, instance)
            for s in query_range(url, expr, start, end, step):
                pts = [(float(x) - end, float(v)) for x, v in s["values"] if math.isfinite(float(v))]
                if pts:
                    series.append((legend(t.get("legendFormat", ""), s["metric"], expr), pts))
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        vmax = max((v for _, pts in series for _, v in pts), default=0)
        factor, ylabel = scale_for(unit, vmax)
        for name, pts in series:
            ax.plot([x for x, _ in pts], [v * factor for _, v in pts], label=name, linewidth=1.2)
        ax.set_title(p["title"], fontsize=10, loc="left")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_xlabel("seconds before now", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        if series:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("%s (rendered from Prometheus by tools/dashboard_png.py)" % title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    ap.add_argument("--out", required=True, help="PNG file to write")
    ap.add_argument("--seconds", type=float, default=600, help="time range, ending now")
    ap.add_argument("--rate-interval", default="1m", help="what $__rate_interval becomes")
    ap.add_argument("--instance", default=".*", help="regex for $instance")
    ap.add_argument("--dashboard", default=DASHBOARD)
    a = ap.parse_args()
    render(a.prometheus, a.out, a.seconds, a.rate_interval, a.instance, path=a.dashboard)
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
