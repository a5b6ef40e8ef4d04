#!/usr/bin/env python3
"""Draws one dashboard panel from a live Prometheus, the way Grafana would
plot it, as a PNG: the panel's queries (Grafana's variables filled in) go to
Prometheus's query_range API, the series become an SVG line chart, and
headless Chromium screenshots it. Grafana is not installable here; this is
how the README's picture of the expected panel was made.

    python3 scripts/render_panel.py PROMETHEUS_URL DASHBOARD.json "PANEL TITLE" OUT.png [--minutes N]

Standard library only.
"""
import html
import json
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def panels(board):
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def fill(expr, step):
    return (expr.replace("$__rate_interval", f"{4 * step}s")
            .replace("$__interval", f"{step}s")
            .replace("$cluster", ".*"))


def legend(template, labels):
    out = template
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def query_range(base, expr, start, end, step):
    url = base + "/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(url) as answer:
        body = json.load(answer)
    if body["status"] != "success":
        sys.exit(f"error: {expr}: {body.get('error')}")
    return body["data"]["result"]


def svg(title, unit, series, start, end, width=900, height=420):
    left, right, top, bottom = 70, 20, 40, 110
    values = [v for _, points in series for _, v in points]
    if not values:
        sys.exit("error: the panel's queries returned no data")
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        hi = lo + 1
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    x = lambda t: left + (t - start) / (end - start) * (width - left - right)
    y = lambda v: top + (hi - v) / (hi - lo) * (height - top - bottom)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="DejaVu Sans" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="#181b1f"/>',
             f'<text x="{left}" y="24" fill="#ccccdc" font-size="15">{html.escape(title)}</text>']
    for i in range(6):
        v = lo + (hi - lo) * i / 5
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#2c3235"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" fill="#9fa7b3" text-anchor="end">{v:.3g}{html.escape(unit)}</text>')
    for i in range(5):
        t = start + (end - start) * i / 4
        label = time.strftime("%H:%M:%S", time.gmtime(t))
        parts.append(f'<text x="{x(t):.1f}" y="{height - bottom + 18}" fill="#9fa7b3" text-anchor="middle">{label}</text>')
    # The first query last, on top: it is the panel's headline series.
    for i, (name, points) in reversed(list(enumerate(series))):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        dash = ' stroke-dasharray="6 4"' if i else ""
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
    for i, (name, points) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        ly = height - bottom + 40 + 18 * (i // 2)
        lx = left + 420 * (i % 2)
        parts.append(f'<rect x="{lx}" y="{ly - 9}" width="14" height="4" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 20}" y="{ly - 3}" fill="#ccccdc">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main():
    args = sys.argv[1:]
    minutes = 10
    if "--minutes" in args:
        i = args.index("--minutes")
        minutes = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 4:
        sys.exit(__doc__)
    base, dashboard, title, out = args
    with open(dashboard) as f:
        board = json.load(f)
    panel = next((p for p in panels(board) if p.get("title") == title), None)
    if panel is None:
        sys.exit(f"error: {dashboard} has no panel titled {title!r}")
    end = time.time()
    start = end - 60 * minutes
    step = max(1, int((end - start) / 300))
    series = []
    for target in panel["targets"]:
        for result in query_range(base, fill(target["expr"], step), start, end, step):
            name = legend(target.get("legendFormat", ""), result["metric"])
            points = [(float(t), float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
            series.append((name, points))
    unit = panel["fieldConfig"]["defaults"]["unit"]
    suffix = unit[len("suffix:"):] if unit.startswith("suffix:") else ""
    page = "<html><body style='margin:0;background:#181b1f'>" + svg(title, suffix, series, start, end) + "</body></html>"
    with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as f:
        f.write(page)
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={out}", "--window-size=900,420", f"file://{f.name}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"{out}: {len(series)} series, {minutes} minutes")


if __name__ == "__main__":
    main()
