"""Videos with nothing to encode (issue 18, A6): every HSE/FSE ranking leaves out a video
that keeps no clip, on both sides, counts it in ``num_empty_videos``, and its metrics are
those of the split without that video. (MCHA: tests/test_mcha.py; HAMMER/FLAT:
tests/test_hammer_eval.py.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from configs.hse import demo as hse_demo
from data_prep import builder
from hvt_jax import train
from hvt_jax.evaluation import corpus, evaluators
from hvt_jax.families.hse import tasks as hse_tasks
from tests import tiny_data

EMPTY_ID = "val_no_clip"


def _no_clip_record(rng: np.random.Generator) -> dict:
  """A record whose features (10 rows of 0.5 s) end at 5 s, before its first annotated
  moment (from 6 s on): time_to_rows drops every segment, so it keeps no clip."""
  rec = tiny_data.record(99, rng, "val")
  t = 10
  rec["features"] = {"frames": rng.normal(size=(t, tiny_data.DIM)).astype(np.float32)}
  starts = np.arange(t, dtype=np.float32) * 0.5
  rec["timestamps"] = {"frames": np.stack([starts, starts + 0.5], 1)}
  s = len(rec["sentences"])
  rec["segments"] = np.stack([6.0 + np.arange(s), 6.5 + np.arange(s)], 1).astype(np.float32)
  rec["duration"] = 6.5 + s
  return dict(rec, video_id=EMPTY_ID, label="run")


def _write(out_dir, with_empty: bool) -> str:
  """Train 8 videos; val 6 videos, plus the no-clip video (third) when ``with_empty``."""
  rng = np.random.default_rng(0)
  train_records = [tiny_data.record(i, rng, "train") for i in range(8)]
  val = [tiny_data.record(i, rng, "val") for i in range(6)]
  empty = _no_clip_record(rng)
  if with_empty:
    val.insert(2, empty)
  spec = builder.DatasetSpec(name="demo", modalities={"frames": tiny_data.DIM},
                             tokenizer="word", vocab=tiny_data.VOCAB,
                             extra={"classes": tiny_data.CLASSES})
  builder.write_dataset(spec, {"train": train_records, "val": val}, str(out_dir),
                        counter=builder.SkipCounter())
  return str(out_dir)


def test_hse_leaves_out_a_video_without_clips(tmp_path, caplog, monkeypatch):
  c = hse_demo.get_config("runlocal")
  c.mesh_devices = 1   # the flag's gathering is the same on 8 (test_mcha, test_hammer_eval)
  c.input.data_dir = _write(tmp_path / "with", with_empty=True)
  s = train.setup(c)
  state = train.init_state(s)
  without = dataclasses.replace(s, config=c.copy_and_resolve_references())
  without.config.input.data_dir = _write(tmp_path / "without", with_empty=False)

  def run(setup, ev_cls, **kw):
    return ev_cls(train.eval_context(setup), "val", **kw).run(state, 0)

  metrics, results = run(s, evaluators.RetrievalEvaluator, plot=False)
  base, _ = run(without, evaluators.RetrievalEvaluator, plot=False)
  assert metrics["num_empty_videos"] == 1 and base["num_empty_videos"] == 0
  assert metrics["num_examples"] == base["num_examples"] == 6
  # Left out on both sides: no query, no candidate (not in any top-K either).
  for prefix in ("p2v", "v2p"):
    res, ids = results["ranked"][prefix], results["ids"][prefix][0]
    assert EMPTY_ID not in ids and len(ids) == res.ranks.size == 6
    assert res.top_indices.max() < 6
  assert EMPTY_ID in caplog.text and "1 of 7 videos are empty" in caplog.text
  assert metrics["empty_segments"] > base["empty_segments"]   # its dropped segments
  for k in base:
    if k not in ("num_empty_videos", "empty_segments"):
      assert metrics[k] == base[k], k

  # The HSE evaluators that rank leave it out too: incomplete observations rank the other
  # 6 videos (both sides), zero-shot recognition their 4 labelled ones (the empty video's
  # label "run" is not counted).
  rank, ranked_rows = evaluators.RetrievalEvaluator._rank, []  # pylint: disable=protected-access

  def spy(self, params, queries, cands, *args, **kw):
    ranked_rows.append((len(queries["embedding"]), len(cands["embedding"])))
    return rank(self, params, queries, cands, *args, **kw)

  monkeypatch.setattr(evaluators.RetrievalEvaluator, "_rank", spy)
  inc, _ = run(s, evaluators.RetrievalEvaluator, observe_first=1, group="incomplete",
               plot=False)
  assert inc["incomplete/num_empty_videos@n=1"] == 1 and ranked_rows == [(6, 6)]
  assert inc["incomplete/num_examples"] == 7
  zs, _ = run(s, hse_tasks.ZeroShotEvaluator)
  assert zs["zeroshot/num_empty_videos"] == 1 and zs["zeroshot/num_videos"] == 4
