"""benchmarks/accelerator.py on CPU at tiny sizes: a row per family with finite FLOPs and
times, and one failing family (an unknown name) leaves the others measured.

The HAMMER family runs as FLAT (its one-encoder model) and only its ``score`` is measured
(``flat:score``): its train step, HAMMER's largest compile, is the trainer's step that the
other families' rows exercise, and tests/test_hammer_model.py runs it."""

from __future__ import annotations

import json
import math

from benchmarks import accelerator

FAMILIES = ("hse", "flat", "mcha", "text_mlm")
MEASURED = {"hse": ("train", "score"), "flat": ("score",), "mcha": ("train", "score"),
            "text_mlm": ("train",)}


def test_every_family_measured_and_a_failing_one_leaves_the_others(tmp_path, capsys):
  out = tmp_path / "rows.json"
  code = accelerator.main(["--size", "tiny", "--dtypes", "float32", "--budget-minutes", "30",
                           "--families", "hse,flat:score,nosuch,mcha,text_mlm,text_mlm:score",
                           "--json", str(out)])
  printed = capsys.readouterr().out
  assert code == 0
  rows = json.loads(out.read_text())
  by = {(r["family"], r["what"].split()[0]): r for r in rows if not r["error"]}
  errors = [(r["family"], r["what"], r["error"]) for r in rows if r["error"]]
  assert len(errors) == 2, errors
  assert errors[0][:2] == ("nosuch", "train") and "unknown family 'nosuch'" in errors[0][2]
  assert errors[1][:2] == ("text_mlm", "score") and "has no 'score'" in errors[1][2]
  assert sorted(by) == sorted((f, w) for f, whats in MEASURED.items() for w in whats)
  for family in FAMILIES:
    whats = MEASURED[family]
    for what in whats:
      r = by[(family, what)]
      assert not r["error"], (family, what, r["error"])
      assert math.isfinite(r["flops"]) and r["flops"] > 0, r
      assert math.isfinite(r["seconds"]) and r["seconds"] > 0, r
      assert r["mfu"] is None          # CPU: no published peak
    # The printed table has the family's rows.
    assert sum(line.split()[0] == family for line in printed.splitlines()
               if line.strip()) >= len(whats) * 2   # as measured, and in the final table
  score = by[("flat", "score")]
  assert score["pairs_per_sec"] > 0
  assert math.isclose(score["corpus_seconds"]["TVR-val"] * score["pairs_per_sec"],
                      10_895 * 2_179, rel_tol=1e-9)
  assert "nosuch" in printed and "unknown family" in printed


def test_exit_status_is_nonzero_only_when_everything_failed(tmp_path):
  assert accelerator.main(["--size", "tiny", "--families", "nosuch,other",
                           "--json", str(tmp_path / "rows.json")]) == 1


def test_a_spent_budget_skips_the_remaining_measurements(tmp_path):
  out = tmp_path / "rows.json"
  assert accelerator.main(["--size", "tiny", "--families", "hse,mcha", "--budget-minutes", "0",
                           "--json", str(out)]) == 1
  rows = json.loads(out.read_text())
  assert len(rows) == 2 * 2 * 2          # (train, score) x 2 families x 2 dtypes
  assert all(r["error"] == "skipped: budget spent" for r in rows)
