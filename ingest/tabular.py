"""Rows to text: an aligned table for people, CSV and JSON for other programs."""

import csv
import io
from collections.abc import Sequence
from typing import Any, Literal

import orjson

Format = Literal["table", "csv", "json"]


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Format) -> str:
    if fmt == "json":
        return "\n".join(
            orjson.dumps(dict(zip(columns, row, strict=True))).decode() for row in rows
        ) + ("\n" if rows else "")
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return buf.getvalue()
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
