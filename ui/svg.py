"""Draw a :class:`ui.timeline.TimelineFigure` as an inline SVG string. Pure; no Gradio.

Why not ``gr.LinePlot``: its Vega-Lite chart cannot draw the threshold band or the shaded suspicious
segments, and its ``select`` event reports a brushed x-range, not the clicked point. This SVG gives every
sampled frame a clickable column and point carrying ``data-seq``; ``ui/app.py`` turns a click into a
``select`` event with a few lines of ``js_on_load``.

Element classes the page (and the browser test) rely on: ``g.person[data-track]`` per person line,
``circle.pt[data-seq]`` per face point, ``rect.nf[data-seq]`` for a sampled frame without faces,
``rect.col[data-seq]`` per frame column (click target), ``rect.seg`` per suspicious span,
``rect.band`` for the inconclusive band, ``line.sel`` for the selected frame.
"""

from __future__ import annotations

import math
from html import escape

from ui.timeline import TimelineFigure

WIDTH, HEIGHT = 960, 300
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 20, 14, 44
PAD_X = 10
FAKE_RED = "#C62828"
INK = "#374151"
GRID = "#E5E7EB"


def nice_ticks(x_max: float, target: int = 6) -> list[float]:
    """Round tick positions from 0 to ``x_max`` (1-2-5 steps, about ``target`` of them)."""
    if x_max <= 0 or not math.isfinite(x_max):
        return [0.0]
    raw = x_max / max(1, target)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    count = int(math.floor(x_max / step + 1e-9))
    return [round(i * step, 10) for i in range(count + 1)]


def _fmt_s(t: float) -> str:
    return f"{t:g}" if t < 60 else f"{int(t // 60)}:{int(t % 60):02d}"


def render_timeline(fig: TimelineFigure, width: int = WIDTH, height: int = HEIGHT) -> str:
    """The timeline as ``<svg>``: x = video time, y = P(fake) 0..1, a line per person."""
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM

    def x(t: float) -> float:
        # PAD_X inside the frame, so a point at 0 s or at the end is drawn whole
        return MARGIN_LEFT + PAD_X + (plot_w - 2 * PAD_X) * min(max(t / fig.x_max_s, 0.0), 1.0)

    def y(prob: float) -> float:
        return MARGIN_TOP + plot_h * (1.0 - min(max(prob, 0.0), 1.0))

    bottom, top = y(0.0), y(1.0)
    parts: list[str] = [
        f'<svg class="dff-timeline" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="P(fake) over time, one line per person" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="system-ui, sans-serif" font-size="12">',
        f'<rect x="{MARGIN_LEFT}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#FFFFFF" stroke="{GRID}"/>',
    ]
    # inconclusive band around the threshold, then the threshold itself
    lo, hi = max(0.0, fig.threshold - fig.band), min(1.0, fig.threshold + fig.band)
    parts.append(
        f'<rect class="band" x="{MARGIN_LEFT}" y="{y(hi):.1f}" width="{plot_w}" height="{y(lo) - y(hi):.1f}" '
        f'fill="#9CA3AF" fill-opacity="0.18"><title>inconclusive zone: {lo:.2f}–{hi:.2f}</title></rect>'
    )
    # suspicious spans: a one-frame span is drawn half a sampling step wide on each side
    half = max(fig.step_s / 2, fig.x_max_s / 200)
    for span in fig.spans:
        x0, x1 = x(span.start_s - half), x(span.end_s + half)
        parts.append(
            f'<rect class="seg" x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 2):.1f}" height="{plot_h}" '
            f'fill="{FAKE_RED}" fill-opacity="0.10"><title>suspicious: {span.start_s:.2f}–{span.end_s:.2f} s, '
            f"peak P(fake) {span.peak_prob:.2f} over {span.n_frames} frame(s)</title></rect>"
        )
    # grid and axes
    for prob in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y(prob)}" y2="{y(prob)}" stroke="{GRID}"/>'
        )
        parts.append(f'<text x="{MARGIN_LEFT - 8}" y="{y(prob) + 4}" text-anchor="end" fill="{INK}">{prob:.2f}</text>')
    for t in nice_ticks(fig.x_max_s):
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{bottom}" y2="{bottom + 5}" stroke="{INK}"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{bottom + 18}" text-anchor="middle" fill="{INK}">{_fmt_s(t)}</text>')
    parts.append(
        f'<text x="{MARGIN_LEFT + plot_w / 2}" y="{height - 6}" text-anchor="middle" fill="{INK}">'
        "time in the video (s)</text>"
    )
    parts.append(
        f'<text transform="translate(14 {MARGIN_TOP + plot_h / 2}) rotate(-90)" text-anchor="middle" '
        f'fill="{INK}">P(fake)</text>'
    )
    parts.append(
        f'<line class="thr" x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y(fig.threshold):.1f}" '
        f'y2="{y(fig.threshold):.1f}" stroke="{FAKE_RED}" stroke-dasharray="6 4" stroke-width="1.5"/>'
    )
    parts.append(
        f'<text x="{width - MARGIN_RIGHT - 4}" y="{y(fig.threshold) - 5:.1f}" text-anchor="end" '
        f'fill="{FAKE_RED}">threshold {fig.threshold:.2f}</text>'
    )
    # click targets: one column per sampled frame, from midpoint to midpoint with its neighbours
    times = [f.time_s for f in fig.frames]
    for i, frame in enumerate(fig.frames):
        left = (times[i - 1] + frame.time_s) / 2 if i > 0 else frame.time_s - half
        right = (times[i + 1] + frame.time_s) / 2 if i + 1 < len(times) else frame.time_s + half
        x0, x1 = x(left), x(right)
        parts.append(
            f'<rect class="col" data-seq="{frame.seq}" x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1):.1f}" '
            f'height="{plot_h}" fill="transparent"><title>frame {frame.index} at {frame.time_s:.2f} s — '
            "click to see its faces</title></rect>"
        )
    # the selected frame
    selected = next((f for f in fig.frames if f.seq == fig.selected_seq), None)
    if selected is not None:
        parts.append(
            f'<line class="sel" x1="{x(selected.time_s):.1f}" x2="{x(selected.time_s):.1f}" y1="{top}" '
            f'y2="{bottom}" stroke="#111827" stroke-width="1.5" stroke-dasharray="2 3"/>'
        )
    # frames without faces: a grey tick on the time axis
    for frame in fig.frames:
        if frame.score is None:
            parts.append(
                f'<rect class="nf" data-seq="{frame.seq}" x="{x(frame.time_s) - 3:.1f}" y="{bottom - 6}" width="6" '
                f'height="6" fill="#9CA3AF"><title>frame {frame.index} at {frame.time_s:.2f} s: no face</title></rect>'
            )
    # one line per person, then its points
    for line in fig.lines:
        name = escape(line.name)
        parts.append(f'<g class="person" data-track="{line.track_id}" data-name="{name}">')
        for run in line.runs:
            if len(run) > 1:
                coords = " ".join(f"{x(pt.time_s):.1f},{y(pt.fake_prob):.1f}" for pt in run)
                parts.append(
                    f'<polyline points="{coords}" fill="none" stroke="{line.color}" stroke-width="2.2" '
                    'stroke-linejoin="round"/>'
                )
        for pt in line.points:
            big = pt.seq == fig.selected_seq
            parts.append(
                f'<circle class="pt" data-seq="{pt.seq}" cx="{x(pt.time_s):.1f}" cy="{y(pt.fake_prob):.1f}" '
                f'r="{6 if big else 4.5}" fill="{line.color}" stroke="#FFFFFF" stroke-width="1.5">'
                f"<title>{name} · {pt.time_s:.2f} s · P(fake) {pt.fake_prob:.2f}</title></circle>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def legend_html(fig: TimelineFigure) -> str:
    """The colour key above the chart: a swatch per person, plus the band and the shading."""
    items = [
        f'<span class="lg-item" data-track="{line.track_id}"><span class="lg-swatch" '
        f'style="background:{line.color}"></span>{escape(line.name)}</span>'
        for line in fig.lines
    ]
    items.append('<span class="lg-item"><span class="lg-swatch lg-band"></span>inconclusive zone</span>')
    items.append('<span class="lg-item"><span class="lg-swatch lg-seg"></span>suspicious segment</span>')
    return f'<div class="dff-legend">{"".join(items)}</div>'


def timeline_html(fig: TimelineFigure, caption: str = "") -> str:
    """Legend, chart and a one-line caption, as the timeline component's value."""
    note = f'<div class="dff-caption">{escape(caption)}</div>' if caption else ""
    return f'<div class="dff-chart">{legend_html(fig)}{render_timeline(fig)}{note}</div>'
