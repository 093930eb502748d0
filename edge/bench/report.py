"""Human output of a bench report: Markdown tables and OpenCV-drawn plots (no plotting stack)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# ten distinguishable BGR colours for the line plot (tab10)
_PALETTE = [
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23),
]  # fmt: skip
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def _side(r: dict[str, Any]) -> str:
    return f"edge {r['precision']}" if r["side"] == "edge" else r["side"]


def _threads(n: int | str) -> str:
    return f"{n} thread" + ("" if str(n) == "1" else "s")


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


COMPACT_WIDTH = 100
"""Widest line of the compact table (fits a terminal)."""


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "~"


def _speedups(rows: list[dict[str, Any]]) -> list[str]:
    """Per row: end-to-end speed vs the ultralytics .pt reference (everything mode), or -."""
    ref = {
        (r["bundle_dir"], r["image"], r["target_masks"]): r["end_to_end_ms"]["p50"]
        for r in rows
        if r["side"] == "ultralytics-pt"
    }
    out = []
    for r in rows:
        base = ref.get((r["bundle_dir"], r["image"], r["target_masks"]))
        p50 = r["end_to_end_ms"]["p50"]
        out.append(f"{base / p50:.1f}x" if base and r["mode"] == "everything" else "-")
    return out


def compact_table(report: dict[str, Any]) -> list[str]:
    """The default table: one line per configuration, at most :data:`COMPACT_WIDTH` wide.

    Columns: bundle, image, precision (or reference side), threads, mode, masks, end-to-end
    p50/p90, FPS, peak RSS and speed vs the ultralytics .pt reference.
    """
    rows = report["rows"]
    names = list(dict.fromkeys(r["bundle"] for r in rows))
    header = (
        "| bundle | image | prec | thr | mode | masks | p50 ms | p90 ms | FPS | RSS MiB | x ref |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    side_names = {"ultralytics-pt": "ul-pt", "ultralytics-onnx": "ul-onnx"}
    for r, speed in zip(rows, _speedups(rows), strict=True):
        e2e = r["end_to_end_ms"]
        prec = r["precision"] if r["side"] == "edge" else side_names.get(r["side"], r["side"])
        masks = str(r["masks"]) + (f">{r['selected']}" if r.get("selected") is not None else "")
        fixed = (
            f" | {prec} | {r['threads']} | {r['mode'][:5]} | {masks} | {_fmt(e2e['p50'])} "
            f"| {_fmt(e2e['p90'])} | {_fmt(1e3 / e2e['p50'], 2)} | {r['peak_rss_mb']:.0f} "
            f"| {speed} |"
        )
        room = COMPACT_WIDTH - len(fixed) - len("| ") - len(" | ")
        bundle = _cut(_short_bundle(r["bundle"], names), max(room // 2, 6))
        image = _cut(str(r["image"]), max(room - len(bundle), 6))
        lines.append(f"| {bundle} | {image}{fixed}")
    return lines


def report_warnings(report: dict[str, Any]) -> list[str]:
    """Why some numbers may mislead: a loaded machine, p99 from too few runs."""
    out = []
    cores = report.get("machine", {}).get("cores") or 1
    loaded = [
        r["load_before"] for r in report["rows"] if (r.get("load_before") or 0) > 0.5 * cores
    ]
    if loaded:
        out.append(
            f"{len(loaded)} of {len(report['rows'])} runs started with a load average above "
            f"0.5 per core (max {max(loaded):.2f} on {cores} cores): other processes were "
            "running, timings and the recommendation may be pessimistic; rerun on an idle board"
        )
    runs = report.get("settings", {}).get("runs", 0)
    if runs < 20:
        out.append(
            f"p99 is computed from {runs} runs (< 20): it is about the slowest run, not a "
            "percentile; use --runs 20 or more for tail latency"
        )
    return out


def to_markdown(report: dict[str, Any], full: bool = False) -> str:
    """Markdown: machine, sweep table, prompt modes, reference ratios, peak, recommendation.

    Args:
        report: The bench report.
        full: Every column (pre/model/post/prompt p50, p99, (pre+post)/model, GOP/s) instead
            of the compact table (:func:`compact_table`).
    """
    m, s = report["machine"], report["settings"]
    emulated = " **(emulated: timings are not representative)**" if m.get("emulated") else ""
    lines = [
        f"{m['cpu']} ({m['machine']}, {m['cores']} cores, flags: "
        f"{', '.join(m.get('cpu_flags', [])) or '-'}), onnxruntime {m['onnxruntime']} "
        f"{m['providers']}, {s['runs']} timed runs per configuration, each in its own "
        f"process.{emulated}",
        "",
    ]
    if m.get("int8_class"):
        c = m["int8_class"]
        lines += [f"int8 on this CPU: {c['name']}: {c['note']}.", ""]
    lines += [f"**Warning:** {w}" for w in report_warnings(report)]
    if lines[-1]:
        lines.append("")
    if not full:
        lines += compact_table(report)
        lines.append("")
        lines.append("All columns: bench-full.md and bench.json.")
    else:
        lines += _full_table(report)
    _tail(report, lines)
    return "\n".join(lines) + "\n"


def _full_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| bundle | input | image | ~masks | side | threads | mode | masks | pre p50 "
        "| model p50 | post p50 | prompt p50 | e2e p50 | e2e p90 | e2e p99 | FPS "
        "| (pre+post)/model | x vs ultralytics .pt | GOP/s (% peak) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = report["rows"]
    for r, speed in zip(rows, _speedups(rows), strict=True):
        st = r["stages_ms"]
        e2e = r["end_to_end_ms"]
        gops = "-"
        if r.get("model_gops"):
            pct = r.get("model_pct_of_peak")
            gops = f"{r['model_gops']:.0f}" + (f" ({pct:.0f} %)" if pct else "")
        masks = str(r["masks"]) + (f" -> {r['selected']}" if r.get("selected") is not None else "")
        lines.append(
            f"| {r['bundle']} | {r['input'][0]}x{r['input'][1]} "
            f"| {r['image']} {r['image_wh'][0]}x{r['image_wh'][1]} | {r['target_masks']} "
            f"| {_side(r)} | {r['threads']} | {r['mode']} | {masks} "
            f"| {_fmt(st.get('preprocess', {}).get('p50'))} | {_fmt(st['infer']['p50'])} "
            f"| {_fmt(st.get('postprocess', {}).get('p50'))} "
            f"| {_fmt(st.get('prompt', {}).get('p50'))} | {_fmt(e2e['p50'])} "
            f"| {_fmt(e2e['p90'])} | {_fmt(e2e['p99'])} | {_fmt(1e3 / e2e['p50'], 2)} "
            f"| {_fmt(r['pre_post_over_model'], 3)} | {speed} | {gops} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    return lines


def _tail(report: dict[str, Any], lines: list[str]) -> None:
    """Agreement, peak, recommendation, sustained run, notes and board state (appended)."""
    if report.get("agreement"):
        lines += [
            "",
            "Mask agreement with the reference (mean best-match IoU, both directions):",
            "",
            "| bundle | image | ~masks | edge | reference | masks (edge/ref) | edge->ref "
            "| ref->edge |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for a in report["agreement"]:
            lines.append(
                f"| {a['bundle']} | {a['image']} | {a['target_masks']} | {a['edge']} "
                f"| {a['reference']} | {a['edge_masks']}/{a['reference_masks']} "
                f"| {a['mean_iou_edge_to_ref']:.4f} | {a['mean_iou_ref_to_edge']:.4f} |"
            )
    if report.get("peak"):
        lines += ["", "Measured peak of this onnxruntime (2048^3 MatMul, best of 5):", ""]
        for precision, per in report["peak"].items():
            cells = ", ".join(f"{_threads(t)} {v['gops']:.0f} GOP/s" for t, v in per.items())
            lines.append(f"- {precision}: {cells}")
        for key, o in report.get("ops", {}).items():
            if o.get("gop"):
                lines.append(f"- model {key}: {o['gop']:.1f} GOP per image ({o['method']})")
    rec = report.get("recommendation")
    if rec:
        lines += [
            "",
            f"**Recommendation:** `{rec['bundle']}` (input {rec['input'][0]}x{rec['input'][1]}),"
            f" {rec['precision']}, {_threads(rec['threads'])}: {rec['end_to_end_ms']:.0f} ms "
            f"({rec['fps']:.2f} FPS) at ~{rec['target_masks']} masks; {rec['reason']}. "
            "For `serve`: "
            + ", ".join(f"`{k} = {v!r}`" for k, v in rec["serve"].items())
            + ' (or `model.defaults_from = "<this bench.json>"`).',
        ]
    sus = report.get("sustained")
    if sus:
        temps = [max(x["temperature_c"].values()) for x in sus["samples"] if x["temperature_c"]]
        lines += [
            "",
            f"Sustained {sus['duration_s']:.0f} s ({sus['precision']}, "
            f"{_threads(sus['threads'])}): {sus['runs']} runs, "
            f"p50 {sus['end_to_end_ms']['p50']:.1f} ms, "
            f"p99 {sus['end_to_end_ms']['p99']:.1f} ms"
            + (f", temperature {temps[0]:.1f} -> {temps[-1]:.1f} °C" if temps else "")
            + ".",
        ]
    for note in report.get("notes", []):
        lines.append(f"- note: {note}")
    board = report.get("board", {})
    for when in ("before", "after"):
        b = board.get(when)
        if b:
            temp = ", ".join(f"{k} {v:.1f} °C" for k, v in b["temperature_c"].items()) or "-"
            mhz = b["cpu_mhz"]["cur"]
            clock = f"{min(mhz):.0f}-{max(mhz):.0f} MHz" if mhz else "-"
            thr = b["throttled"]["raw"] if b.get("throttled") else "n/a"
            lines.append(f"- board {when}: {temp}; clock {clock}; throttled {thr}")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round axis ticks covering ``[lo, hi]``: multiples of 1, 2 or 5 times a power of ten.

    Returns about ``count`` ticks, the first <= ``lo`` and the last >= ``hi``.
    """
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = [round(start, 10)]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(round(start + len(ticks) * step, 10))
    return ticks


def nice_log_ticks(lo: float, hi: float) -> list[float]:
    """Log-axis ticks in ``[lo, hi]`` (values, not logs): 1-2-5 per decade, or decades only
    when the span is wider than two decades."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    mults = (1,) if math.log10(hi / lo) > 2 else (1, 2, 5)
    return [m * 10.0**e for e in decades for m in mults if lo <= m * 10.0**e <= hi]


def _tick_label(v: float) -> str:
    return f"{v:g}" if v < 1e5 else f"{v:.0e}"


def _short_bundle(name: str, names: list[str]) -> str:
    """A bundle name without the prefix all names share (legend space is tight)."""
    if len(names) < 2:
        return name
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    return name[len(prefix) :] or name


def draw_plot(report: dict[str, Any], width: int = 1000, height: int = 560) -> np.ndarray:
    """Latency vs threads per (bundle, precision) of this runtime, everything mode.

    Dots are p50 and bars reach p90; fp32 is drawn with circles, int8 with squares. A log
    latency axis is used when the series span more than 20x (FastSAM-s next to FastSAM-x).

    Returns:
        (H, W, 3) uint8 BGR image.
    """
    import cv2

    rows = [r for r in report["rows"] if r["mode"] == "everything" and r["side"] == "edge"]
    img = np.full((height, width, 3), 255, np.uint8)
    if not rows:
        cv2.putText(img, "no everything-mode rows", (20, 40), _FONT, 0.6, (0, 0, 0), 1)
        return img
    target = max(r["target_masks"] for r in rows)
    rows = [r for r in rows if r["target_masks"] == target]
    names = list(dict.fromkeys(r["bundle"] for r in rows))
    series: dict[tuple[str, str], dict[int, list[tuple[float, float]]]] = {}
    for r in rows:
        e2e = r["end_to_end_ms"]
        key = (r["bundle"], r["precision"])
        series.setdefault(key, {}).setdefault(r["threads"], []).append((e2e["p50"], e2e["p90"]))
    threads = sorted({t for s in series.values() for t in s})
    values = [v for s in series.values() for pts in s.values() for p in pts for v in p]
    vmin, vmax = max(min(values), 1e-3), max(values)
    log = vmax / vmin > 20
    left, right, top, bottom = 80, 300, 40, 60
    pw, ph = width - left - right, height - top - bottom
    if log:
        lo, hi = np.log10(vmin) - 0.1, np.log10(vmax) + 0.1
        ticks = nice_log_ticks(10.0**lo, 10.0**hi)
    else:
        ticks = nice_ticks(0.0, vmax * 1.05)
        lo, hi = 0.0, ticks[-1]

    def y_of(v: float) -> int:
        t = ((np.log10(max(v, 1e-3)) if log else v) - lo) / (hi - lo)
        return top + ph - int(ph * t)

    def x_of(i: int) -> int:
        return left + int(pw * (i + 0.5) / len(threads))

    title = (
        f"end-to-end ms vs threads (~{target} masks; dot p50, bar to p90; "
        f"{'log' if log else 'linear'} scale)"
    )
    cv2.putText(img, title, (left, 24), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    for v in ticks:
        y = y_of(v)
        if top <= y <= top + ph:
            cv2.line(img, (left - 4, y), (left, y), (0, 0, 0), 1)
            cv2.putText(img, _tick_label(v), (8, y + 4), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for i, t in enumerate(threads):
        cv2.putText(img, str(t), (x_of(i) - 4, top + ph + 18), _FONT, 0.45, (0, 0, 0), 1)
    cv2.putText(img, "threads", (left + pw // 2 - 25, top + ph + 40), _FONT, 0.45, (0, 0, 0), 1)
    for k, ((bundle, precision), per) in enumerate(series.items()):
        color = _PALETTE[k % len(_PALETTE)]
        pts = []
        for i, t in enumerate(threads):
            if t not in per:
                continue
            p50 = float(np.median([v[0] for v in per[t]]))
            p90 = float(np.median([v[1] for v in per[t]]))
            x = int(x_of(i) + (k - len(series) / 2) * 3)
            cv2.line(img, (x, y_of(p50)), (x, y_of(p90)), color, 1)
            _marker(img, (x, y_of(p50)), precision, color)
            pts.append((x, y_of(p50)))
        for a, b in zip(pts, pts[1:], strict=False):
            cv2.line(img, a, b, color, 2, cv2.LINE_AA)
        ly = top + 10 + 20 * k
        _marker(img, (left + pw + 18, ly - 2), precision, color)
        label = f"{_short_bundle(bundle, names)} {precision}"
        cv2.putText(img, label[:38], (left + pw + 30, ly + 3), _FONT, 0.4, (0, 0, 0), 1)
    return img


def _marker(img: np.ndarray, center: tuple[int, int], precision: str, color: tuple) -> None:
    import cv2

    x, y = center
    if precision == "int8":
        cv2.rectangle(img, (x - 4, y - 4), (x + 4, y + 4), color, -1)
    else:
        cv2.circle(img, (x, y), 5, color, -1, cv2.LINE_AA)


def draw_sustained(sustained: dict[str, Any], width: int = 900, height: int = 360) -> np.ndarray:
    """Latency of every run over time (grey dots) with temperature (red) and clock (blue).

    Returns:
        (H, W, 3) uint8 BGR image.
    """
    import cv2

    img = np.full((height, width, 3), 255, np.uint8)
    series = sustained.get("series_ms") or []
    left, right, top, bottom = 70, 70, 30, 40
    pw, ph = width - left - right, height - top - bottom
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    cv2.putText(
        img, "sustained: ms per run (grey), max temperature (red), mean clock (blue)",
        (left, 20), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA,
    )  # fmt: skip
    if not series:
        return img
    ticks = nice_ticks(0.0, max(series) * 1.05)
    vmax = ticks[-1]
    n = len(series)
    for i, v in enumerate(series):
        x = left + int(pw * i / max(n - 1, 1))
        y = top + ph - int(ph * v / vmax)
        cv2.circle(img, (x, y), 1, (150, 150, 150), -1)
    for v in ticks:
        y = top + ph - int(ph * v / vmax)
        cv2.line(img, (left - 4, y), (left, y), (0, 0, 0), 1)
        cv2.putText(img, _tick_label(v), (8, y + 4), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "ms", (left - 30, top + ph + 16), _FONT, 0.4, (0, 0, 0), 1)
    duration = sustained.get("duration_s") or 1.0
    samples = sustained.get("samples", [])
    for key, color, extract in (
        ("temp", (40, 40, 220), lambda s: max(s["temperature_c"].values(), default=None)),
        ("clock", (200, 120, 40), lambda s: float(np.mean(s["cpu_mhz"]["cur"]))
         if s["cpu_mhz"]["cur"] else None),
    ):  # fmt: skip
        pts = [(s["t_s"], extract(s)) for s in samples]
        pts = [(t, v) for t, v in pts if v is not None]
        if not pts:
            continue
        lo = min(v for _, v in pts)
        hi = max(v for _, v in pts)
        span = (hi - lo) or 1.0
        xy = [
            (left + int(pw * t / duration), top + ph - int(ph * (0.1 + 0.8 * (v - lo) / span)))
            for t, v in pts
        ]
        for a, b in zip(xy, xy[1:], strict=False):
            cv2.line(img, a, b, color, 2, cv2.LINE_AA)
        label = f"{lo:.0f}-{hi:.0f}" + (" C" if key == "temp" else " MHz")
        cv2.putText(img, label, (left + pw + 4, xy[-1][1]), _FONT, 0.4, color, 1)
    return img
