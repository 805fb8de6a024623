"""Plain-text metric tables for the command lines (``hvt-train``, ``hvt-eval``, ``hvt-demo``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def format_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str],
                 precision: int = 2, name_header: str = "model") -> str:
  """Plain-text table of metrics, one model per row, for side-by-side CLI output.

  Args:
    rows: model name -> {metric name: value}; a missing metric prints as "-".
    columns: metric names, in column order.
    precision: digits after the decimal point.
    name_header: header of the first (name) column.

  Returns:
    The table as a string: header, a rule, one line per model; numbers right-aligned.
  """
  header = [name_header, *columns]
  body = []
  for name, metrics in rows.items():
    cells = [str(name)]
    for col in columns:
      value = metrics.get(col)
      cells.append("-" if value is None else f"{float(value):.{precision}f}")
    body.append(cells)
  widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

  def fmt(cells: list[str]) -> str:
    first = cells[0].ljust(widths[0])
    rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
    return "  ".join([first, *rest]).rstrip()

  lines = [fmt(header), "  ".join("-" * w for w in widths)]
  lines.extend(fmt(cells) for cells in body)
  return "\n".join(lines)


def mean_std_table(rows: dict[str, list[dict[str, float]]], columns: list[str] | tuple,
                   precision: int = 2) -> str:
  """A plain-text table: one row per name, each cell the mean over the row's runs, with
  ``± std`` (population) when there are several; "-" where a run lacks the metric."""
  if all(len(runs) == 1 for runs in rows.values()):
    return format_table({k: runs[0] for k, runs in rows.items()}, columns,
                                  precision)
  cells = [["model", *columns]]
  for name, runs in rows.items():
    line = [name]
    for col in columns:
      values = [r[col] for r in runs if col in r]
      line.append("-" if len(values) < len(runs) else
                  f"{np.mean(values):.{precision}f}±{np.std(values):.{precision}f}")
    cells.append(line)
  widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
  fmt = lambda c: "  ".join([c[0].ljust(widths[0])] + [x.rjust(w) for x, w in
                                                         zip(c[1:], widths[1:])]).rstrip()
  return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths),
                    *map(fmt, cells[1:])])


def metric_columns(metrics: dict[str, float]) -> list[str]:
  """The table columns of a metrics dict: every ``<prefix>/<metric>`` name, in the
  evaluators' order. Counts (``num_*``) and deeper names (curves such as
  ``incomplete/p2v/R@1@n=2``, which go to metrics.json and plots) are left out."""
  return [k for k in metrics
          if k.count("/") == 1 and not k.split("/")[1].startswith("num_")]
