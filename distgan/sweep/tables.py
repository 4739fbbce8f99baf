"""Result tables of a sweep: named rows, each one grid point, with a published value beside it.

A sweep file may lay its grid points out as the tables of the study it re-runs
(several tables in one sweep, rows in the study's order, the study's numbers in
a column of their own)::

    tables:
      - title: Adding a learning rate scheduler
        reference: Viel (dogs)          # header of the published column (optional)
        rows:
          - {label: "1e-3/2e-3 -> 1e-5", point: cosine_b, reference: 55.5}
          - {label: "batch 64, 5e-4/1e-3", point: {train.batch_size: "64", train.lr_d/train.lr_g: "0.0005/0.001"}}

``point`` is a label of the sweep's only axis, or a mapping of axis name to label
(the labels of ``--dry-run``'s table) naming one grid point. Every row is checked
against the axes when the sweep file is loaded. ``distgan sweep collect`` writes
each table into ``results.md``: the published value, the metric's mean +- std
over the seeds that finished, and how many did.
"""
from __future__ import annotations

from typing import Any

from distgan.errors import UserError


class TableError(UserError, ValueError):
    """A ``tables:`` entry that does not name the sweep's grid points (the message names the row)."""


def parse_tables(data: Any, axes: dict[str, list[str]], src: str) -> list[dict[str, Any]]:
    """The ``tables:`` of a sweep file as plain data (for runs.json), each row's point resolved
    against ``axes`` (axis name -> labels). Raises :class:`TableError` naming the table and row."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise TableError(f"sweep {src}: 'tables' must be a list of tables, got {type(data).__name__}")
    out = []
    for t, table in enumerate(data):
        where = f"sweep {src}: tables[{t}]"
        if not isinstance(table, dict) or not isinstance(table.get("rows"), list) or not table["rows"]:
            raise TableError(f"{where} needs 'title' and a non-empty list 'rows'")
        unknown = set(table) - {"title", "reference", "rows"}
        if unknown:
            raise TableError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: title, reference, rows")
        rows = []
        for r, row in enumerate(table["rows"]):
            here = f"{where}.rows[{r}]"
            if not isinstance(row, dict) or "point" not in row or set(row) - {"label", "point", "reference"}:
                raise TableError(f"{here}: expected a mapping with 'point' (and 'label', 'reference'), got {row!r}")
            point = _point(row["point"], axes, here)
            ref = row.get("reference")
            if ref is not None and not isinstance(ref, (int, float)):
                raise TableError(f"{here}: 'reference' must be a number, got {ref!r}")
            rows.append({"label": str(row.get("label", " ".join(point.values()))), "point": point,
                         "reference": ref})
        out.append({"title": str(table.get("title", f"table {t + 1}")), "reference": str(table.get("reference", "")),
                    "rows": rows})
    return out


def _point(given: Any, axes: dict[str, list[str]], here: str) -> dict[str, str]:
    if isinstance(given, (str, int, float)):
        if len(axes) != 1:
            raise TableError(f"{here}: point {given!r} is one label, but the sweep has {len(axes)} axes "
                             f"({', '.join(axes)}); give a mapping of axis: label")
        given = {next(iter(axes)): given}
    if not isinstance(given, dict) or set(given) != set(axes):
        raise TableError(f"{here}: point must give a label for each axis ({', '.join(axes)}), got {given!r}")
    point = {}
    for axis, label in given.items():
        if str(label) not in axes[axis]:
            raise TableError(f"{here}: axis '{axis}' has no label {label!r}; its labels: {', '.join(axes[axis])}")
        point[axis] = str(label)
    return point


def markdown(tables: list[dict[str, Any]], summary: list[dict[str, Any]], metric: str) -> list[str]:
    """Markdown for each table, its cells taken from ``summary`` (:func:`distgan.sweep.collect.summarise`:
    one row per grid point with its mean, std, finished seeds ``n`` and ``runs``)."""
    by_point = {tuple(sorted(r["point"].items())): r for r in summary}
    lines = []
    for table in tables:
        ref = table["reference"]
        heads = ["", *([ref] if ref else []), f"{metric} (mean ± std)", "seeds finished"]
        lines += [f"### {table['title']}", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for row in table["rows"]:
            cell = by_point.get(tuple(sorted(row["point"].items())), {"mean": None, "std": None, "n": 0, "runs": 0})
            value = "n/a" if cell["mean"] is None else f"{cell['mean']:.1f}" + (
                f" ± {cell['std']:.1f}" if cell["std"] is not None else "")
            published = [] if not ref else ["" if row["reference"] is None else f"{row['reference']:g}"]
            lines.append("| " + " | ".join([row["label"], *published, value, f"{cell['n']}/{cell['runs']}"]) + " |")
        lines.append("")
    return lines
