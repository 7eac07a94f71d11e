"""
Results: a L{Row} is one figure of wakeproxy next to its baselines (measured in the same run) and the
ratios figure/baseline; L{table} prints a section's rows, L{write_json} stores the whole run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

__all__ = ["Row", "Section", "fmt", "table", "write_json"]


@dataclass
class Row:
    metric: str
    value: Optional[float]
    unit: str
    #: baseline name -> value, in print order; ratio = value / baseline
    baselines: dict = field(default_factory=dict)
    #: "higher" (throughput) or "lower" (time, memory) is better
    better: str = "lower"
    #: the target in words (e.g. "≥ 0.50× nginx"), and whether it was met (None: no target)
    target: str = ""
    ok: Optional[bool] = None
    note: str = ""

    def ratio(self, name: str) -> Optional[float]:
        base = self.baselines.get(name)
        if self.value is None or base is None or base == 0:
            return None
        return self.value / base

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ratios"] = {name: self.ratio(name) for name in self.baselines}
        return d


@dataclass
class Section:
    name: str
    rows: list = field(default_factory=list)
    raw: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: Optional[str] = None

    def add(self, *args, **kwargs) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row


def fmt(value: Optional[float], unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "req/s":
        return "{:,.0f}".format(value)
    if unit == "msg/s":
        return "{:,.0f} msg/s".format(value)
    if unit in ("ms", "MB/s", "MB", "KB", "%"):
        if abs(value) >= 100:
            return "{:,.0f} {}".format(value, unit)
        if abs(value) >= 10:
            return "{:.1f} {}".format(value, unit)
        return "{:.2f} {}".format(value, unit)
    if unit == "s":
        return "{:.3f} s".format(value)
    if unit in ("count", ""):
        return "{:,.0f}".format(value)
    return "{:g} {}".format(value, unit)


def _ratio(r: Optional[float]) -> str:
    if r is None:
        return ""
    if abs(r) < 0.005:
        return " (0.00x)"
    return " ({:.2f}x)".format(r) if r < 100 else " ({:.0f}x)".format(r)


def table(section: Section) -> str:
    """
    The section's rows as an aligned text table: metric, wakeproxy's value, then each baseline as
    C{name value (ratio)}, the target and PASS/FAIL.
    """
    width = max([len(r.baselines) for r in section.rows] + [1])
    head = ["metric", "wakeproxy"] + ["baseline {}".format(i + 1) if width > 1 else "baseline"
                                      for i in range(width)] + ["target"]
    lines = []
    for row in section.rows:
        cells = [row.metric, fmt(row.value, row.unit)]
        for name, base in row.baselines.items():
            cells.append("{} {}{}".format(name, fmt(base, row.unit), _ratio(row.ratio(name))))
        cells += [""] * (width - len(row.baselines))
        mark = {True: "PASS", False: "FAIL", None: ""}[row.ok]
        cells.append("{} {}".format(row.target, mark).strip())
        lines.append(cells)
    widths = [max(len(c[i]) for c in [head] + lines) for i in range(len(head))]
    out = ["== {} ({:.0f} s){} ==".format(section.name, section.seconds,
                                         "  ERROR: " + section.error if section.error else "")]
    for cells in [head] + lines:
        out.append("  ".join(c.rjust(w) if i == 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
    return "\n".join(out)


def write_json(path: Path, meta: dict, sections: list, problems: list) -> None:
    doc = {
        "meta": meta,
        "sections": {s.name: {"seconds": s.seconds, "error": s.error, "rows": [r.as_dict() for r in s.rows],
                              "raw": s.raw} for s in sections},
        "problems": problems,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
