"""Each family README's "Paper settings" tables agree with the configs they describe.

A table is a heading naming a config file (optionally with its arg), then rows
``| `field` | `value` | source |``: ``field`` a dotted config path, ``value`` a Python literal
(lists and tuples compare equal). A heading without an arg is a paper config: its table must
cover every setting of the experiment (the leaves of ``COVERED``) — a row may cover a whole
sub-dict. A heading with an arg (``:model=fse``) lists the settings that variant changes.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FAMILIES = REPO / "hvt_jax" / "families"
# Every paper config has a table (the experiment files that reproduce a paper's table).
PAPER_CONFIGS = ("hse/activitynet_c3d.py", "hse/activitynet_inception.py", "hse/didemo.py",
                 "hammer/activitynet.py", "hammer/tvr.py",
                 "mcha/msrvtt.py", "mcha/lsmdc.py", "mcha/activitynet.py")
# The parts of a config that make the experiment (the rest are trainer mechanics: logging,
# checkpoint cadence, mesh, progress bars).
COVERED = ("model", "input", "loss", "schedule", "optax", "batch_size", "num_epochs",
           "num_train_steps", "evals")
# Of an evals entry, which checkpoint the run keeps is mechanics too.
MECHANICS = ("best", "best_mode")
HEADING = re.compile(r"^#{2,4} `configs/([\w/]+\.py)(?::([^`]*))?`\s*$")
ROW = re.compile(r"^\|\s*`([\w.]+)`\s*\|\s*`([^`]*)`\s*\|(.*)\|\s*$")


def _tables() -> dict[tuple[str, str], list[tuple[str, str, str, int]]]:
  """{(config file, arg): [(field, value, source, line), ...]} over every family README."""
  out = {}
  for readme in sorted(FAMILIES.glob("*/README.md")):
    current = None
    for n, line in enumerate(readme.read_text().splitlines(), 1):
      m = HEADING.match(line)
      if m:
        current = (m.group(1), m.group(2) or "")
        assert current not in out, f"{readme}:{n}: a second table for {current}"
        out[current] = []
      elif line.startswith("#"):
        current = None
      elif current is not None and (r := ROW.match(line)):
        out[current].append((r.group(1), r.group(2), r.group(3).strip(), n))
  return out


TABLES = _tables()


def _config(path: str, arg: str):
  module = importlib.import_module("configs." + path[:-3].replace("/", "."))
  return module.get_config(arg or None).to_dict()


def _get(d: dict, field: str):
  for part in field.split("."):
    if not isinstance(d, dict) or part not in d:
      raise KeyError(field)
    d = d[part]
  return d


def _norm(v):
  if isinstance(v, (list, tuple)):
    return [_norm(x) for x in v]
  if isinstance(v, dict):
    return {k: _norm(x) for k, x in v.items()}
  return v


def _leaves(d: dict, prefix: str = ""):
  for k, v in d.items():
    if isinstance(v, dict) and v:
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}"


def test_every_paper_config_has_a_table():
  missing = [p for p in PAPER_CONFIGS if (p, "") not in TABLES]
  assert not missing, f"no 'Paper settings' table in a family README for {missing}"


def _problems(path: str, arg: str, rows) -> list[str]:
  """What disagrees between a table's rows and its config (empty when they agree)."""
  config = _config(path, arg)
  wrong = []
  for field, value, source, line in rows:
    if not source:
      wrong.append(f"line {line}: {field} names no source")
    try:
      actual = _get(config, field)
    except KeyError:
      wrong.append(f"line {line}: {field} is not a field of configs/{path}:{arg}")
      continue
    try:
      expected = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      wrong.append(f"line {line}: {field}'s value {value!r} is not a Python literal")
      continue
    if _norm(expected) != _norm(actual):
      wrong.append(f"line {line}: {field} = {actual!r} in the config, {value} in the table")
  if not arg:   # a paper config: every setting is in the table
    fields = [f for f, *_ in rows]
    leaves = [leaf for top in COVERED if top in config
              for leaf in (_leaves(config[top], f"{top}.")
                           if isinstance(config[top], dict) else [top])]
    uncovered = [leaf for leaf in leaves
                 if not any(leaf == f or leaf.startswith(f + ".") for f in fields)
                 and not (leaf.startswith("evals.") and leaf.split(".")[-1] in MECHANICS)]
    if uncovered:
      wrong.append(f"configs/{path}'s table lacks: {uncovered}")
  return wrong


@pytest.mark.parametrize("key", sorted(TABLES), ids=lambda k: f"{k[0]}:{k[1]}")
def test_table_agrees_with_its_config(key):
  assert TABLES[key], f"the table for configs/{key[0]}:{key[1]} has no rows"
  problems = _problems(*key, TABLES[key])
  assert not problems, "\n".join(problems)


def test_the_check_catches_a_wrong_value_and_a_missing_setting():
  """The check can fail: a row whose value differs, and a paper table missing a setting."""
  key = ("hammer/activitynet.py", "")
  rows = TABLES[key]
  i = next(i for i, r in enumerate(rows) if r[0] == "batch_size")
  field, value, source, line = rows[i]
  changed = rows[:i] + [(field, repr(ast.literal_eval(value) + 1), source, line)] + rows[i + 1:]
  assert any("batch_size" in p for p in _problems(*key, changed))
  dropped = rows[:i] + rows[i + 1:]
  assert any("lacks: ['batch_size']" in p for p in _problems(*key, dropped))
