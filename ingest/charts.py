"""Charts of ``farmtel query history``: braille in the terminal, PNG through matplotlib.

The terminal chart is hand-written: a Unicode braille cell holds 2 x 4 dots, so a 60 x 12
cell chart has 120 x 48 dots, plenty for a day of hourly means. That is about 80 lines of
code, against a dependency for a feature only managers use (plotext 6 also replaced its
whole API between major versions). One small chart per series keeps the series apart
without colour, so it survives pipes, logs and e-mail.

The PNG uses matplotlib's Agg backend (no display needed), an optional dependency:
``pip install 'farmtel[charts]'``. :class:`ChartError` says so when it is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ingest.queries import HistoryRow

_BRAILLE_BASE = 0x2800
# Dot bit for (x, y) within a cell, x in 0..1, y in 0..3 (top to bottom).
_DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


class ChartError(RuntimeError):
    """A chart cannot be made (no data, matplotlib missing, file not writable)."""


@dataclass(frozen=True)
class ChartSeries:
    """One line: ``label`` (e.g. ``gw-1/soil-a moisture_pct``) and (time ns, value) points."""

    label: str
    points: Sequence[tuple[int, float]]


def _line(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """Bresenham: the dots from (x0, y0) to (x1, y1)."""
    dots = []
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        dots.append((x0, y0))
        if x0 == x1 and y0 == y1:
            return dots
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


def braille_chart(series: ChartSeries, width: int = 60, height: int = 10, utc: bool = False) -> str:
    """A braille line chart of one series with its min/max and first/last time labels.

    ``width``/``height`` are in character cells (at least 8 x 2). Raises :class:`ChartError`
    for a series without points.
    """
    if not series.points:
        raise ChartError(f"{series.label}: no points to draw")
    width, height = max(8, width), max(2, height)
    pts = sorted(series.points)
    t0, t1 = pts[0][0], pts[-1][0]
    lo = min(v for _, v in pts)
    hi = max(v for _, v in pts)
    span_t = max(1, t1 - t0)
    span_v = (hi - lo) or 1.0
    dots_w, dots_h = width * 2, height * 4

    def to_dot(t: int, v: float) -> tuple[int, int]:
        x = round((t - t0) / span_t * (dots_w - 1)) if t1 > t0 else dots_w // 2
        y = round((hi - v) / span_v * (dots_h - 1)) if hi > lo else dots_h // 2
        return x, y

    cells = [[0] * width for _ in range(height)]
    prev: tuple[int, int] | None = None
    for t, v in pts:
        dot = to_dot(t, v)
        for x, y in _line(*prev, *dot) if prev else [dot]:
            cells[y // 4][x // 2] |= _DOT_BITS[x % 2][y % 4]
        prev = dot
    hi_label, lo_label = f"{hi:.4g}", f"{lo:.4g}"
    pad = max(len(hi_label), len(lo_label))
    lines = [series.label]
    for row_i, row in enumerate(cells):
        label = hi_label if row_i == 0 else lo_label if row_i == height - 1 else ""
        lines.append(f"{label:>{pad}} ┤" + "".join(chr(_BRAILLE_BASE + c) for c in row))
    first, last = _stamp(t0, utc), _stamp(t1, utc)
    axis = " " * pad + " └" + "─" * width
    times = " " * (pad + 2) + first + last.rjust(max(1, width - len(first)))
    lines += [axis, times]
    return "\n".join(lines) + "\n"


def _stamp(ns: int, utc: bool) -> str:
    t = datetime.fromtimestamp(ns / 1e9, UTC)
    return (t if utc else t.astimezone()).strftime("%Y-%m-%d %H:%M")


def png_chart(series: Sequence[ChartSeries], path: Path, title: str, utc: bool = False) -> None:
    """Write a PNG line chart (one line per series, shared time axis) to ``path``.

    Raises :class:`ChartError` when there is nothing to draw, matplotlib is not installed,
    or the file cannot be written.
    """
    if not any(s.points for s in series):
        raise ChartError("no points to draw")
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server or in cron
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChartError(
            "--png needs matplotlib, which is not installed; run: pip install 'farmtel[charts]'"
        ) from None
    tz = UTC if utc else datetime.now().astimezone().tzinfo
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    try:
        for s in series:
            pts = sorted(s.points)
            # matplotlib's date numbers are days since its epoch, 1970-01-01 UTC by default.
            xs = [t / 86_400e9 for t, _ in pts]
            ax.plot(xs, [v for _, v in pts], marker="." if len(pts) < 50 else None, label=s.label)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=tz))  # type: ignore[no-untyped-call]
        ax.set_xlabel("time (UTC)" if utc else "time (local)")
        ax.legend(loc="best", fontsize="small")
        fig.autofmt_xdate()
        fig.tight_layout()
        try:
            fig.savefig(path, format="png")
        except OSError as err:
            raise ChartError(f"--png {path}: cannot write the image: {err.strerror}") from None
    finally:
        plt.close(fig)


def history_series(rows: Sequence[HistoryRow]) -> list[ChartSeries]:
    """One series of window means per (gateway, sensor, value), in the rows' order."""
    grouped: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for r in rows:
        if r.mean is not None:
            grouped.setdefault((r.gateway, r.sensor, r.value), []).append(
                (r.window_start_ns, r.mean)
            )
    return [ChartSeries(f"{g}/{s} {v} (mean)", pts) for (g, s, v), pts in grouped.items()]


def draw_history(
    rows: Sequence[HistoryRow], plantation: str, plot: bool, png: Path | None, utc: bool
) -> None:
    """``query history --plot/--png``: print terminal charts and/or write the PNG.

    On a :class:`ChartError` it prints ``error: ...`` and exits 1 (typer.Exit).
    """
    import typer

    series = history_series(rows)
    try:
        if plot:
            width = max(20, min(100, shutil.get_terminal_size((80, 24)).columns - 12))
            for s in series:
                typer.echo(braille_chart(s, width=width, height=8, utc=utc))
        if png is not None:
            png_chart(series, png, f"{plantation}: window means", utc=utc)
            typer.echo(f"wrote {png}", err=True)
    except ChartError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
