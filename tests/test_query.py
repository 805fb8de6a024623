"""Free-text queries against an evaluated corpus (hvt-eval --query, evaluation/query.py):
the answers equal the evaluator's own ranking of the same text, the corpus encodings are
cached per checkpoint step, and bad input is one line."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from data_prep import builder, demo, demo_moments
from hvt_jax import checkpoints, train
from hvt_jax.cli import common
from hvt_jax.cli import eval as hvt_eval
from hvt_jax.evaluation import corpus, evaluators, moments, query
from hvt_jax.vocab import word_vocab
from tests import data_fixtures, tiny_data

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Run:
  """A run with checkpoints of its random initialisation, and that state in memory."""
  config: Any
  workdir: str
  data: Any
  evals: list[Any]
  state: dict[str, Any]
  mesh: Any

  def step_dir(self, step):
    return os.path.join(self.workdir, "checkpoints", str(step))

  def answer(self, texts, step, top_k):
    """``query.run`` without its setup and restore (the state is the saved one), under its
    device mesh."""
    prepared = query.prepare(self.evals, texts, top_k)
    with jax.set_mesh(self.mesh):
      return query.answer(prepared, self.state, step, self.step_dir(step), self.workdir,
                          texts, top_k)


def _run(config, workdir, data, steps):
  """Checkpoints of the random initialisation at ``steps``, as a trainer writes them."""
  s = train.setup(config)
  state = train.init_state(s)
  mngr = train.checkpoint_manager(str(workdir), config)
  for step in steps:
    mngr.save(step, args=ocp.args.StandardSave(state), force=True)
  mngr.wait_until_finished()
  mngr.close()
  return Run(config, str(workdir), data, train.build_evaluators(s), state, s.mesh)


def _hse_data(out_dir):
  """The HSE demo with ActivityNet-style sentences (" ." at the end, a vocabulary token),
  so a paragraph is written as free text."""
  d = demo.generate_demo(num_train=16, num_val=10, seed=3)
  for recs in d.records.values():
    for r in recs:
      r["sentences"] = [f"{s} ." for s in r["sentences"]]
  vocab = word_vocab.build_word_vocab(s for r in d.records["train"] for s in r["sentences"])
  index = {t: i for i, t in enumerate(vocab)}
  for recs in d.records.values():
    for r in recs:
      r["tokens"] = [word_vocab.encode_words(s, index) for s in r["sentences"]]
  spec = builder.DatasetSpec(name="demo", modalities={"frames": 32}, tokenizer="word",
                             vocab=vocab)
  builder.write_dataset(spec, d.records, str(out_dir), counter=builder.SkipCounter())
  return d


@pytest.fixture(scope="module")
def hse_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("hse_query")
  d = _hse_data(root / "data")
  config = tiny_data.hse_config(str(root / "data"))
  return _run(config, root / "run", d, (1, 2))


@pytest.fixture(scope="module")
def hammer_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("hammer_query")
  d = demo_moments.generate(num_train=8, num_val=6, seed=1)
  builder.write_dataset(d.spec, d.records, str(root / "data"), counter=builder.SkipCounter())
  from configs.hammer import demo as hammer_demo  # pylint: disable=g-import-not-at-top
  config = hammer_demo.get_config("runlocal")
  config.input.data_dir = str(root / "data")
  return _run(config, root / "run", d, (1,))


def _counting(monkeypatch, cls):
  """Counts the calls of ``cls.videos`` (the corpus encoder)."""
  calls, videos = [], cls.videos
  monkeypatch.setattr(cls, "videos", lambda self, params: calls.append(1) or videos(self, params))
  return calls


def test_hse_query_ranks_as_the_evaluator_and_caches_by_step(hse_run, monkeypatch):
  run = hse_run
  (ev,) = run.evals
  # The evaluator's own ranking of the split's paragraphs (their records' tokens).
  _, results = ev.run(run.state, 1)
  ranked, (ids, _) = results["ranked"]["p2v"], results["ids"]["p2v"]
  picks = [0, 3, 7]
  texts = [" ".join(run.data.records["val"][i]["sentences"]) for i in picks]
  calls = _counting(monkeypatch, evaluators.RetrievalEvaluator)
  step, answers = query.run(run.config, run.workdir, texts, step=1, top_k=10)
  assert step == 1 and len(calls) == 1 and [a.query for a in answers] == texts
  for i, a in zip(picks, answers):
    assert ids[i] == run.data.records["val"][i]["video_id"]
    assert [h.video_id for h in a.videos] == [ids[j] for j in ranked.top_indices[i]]
    np.testing.assert_allclose([h.score for h in a.videos], ranked.top_scores[i], atol=1e-5)
    assert a.evaluator == "retrieval-p2v" and a.num_videos == len(ids)
  # Once more: from the cache (the corpus is not encoded again), the same answers.
  cache = pathlib.Path(run.workdir, "eval", "val", "cache", "step_1", "retrieval-p2v.npz")
  assert cache.is_file()
  again = run.answer(texts[:1], 1, 10)
  assert len(calls) == 1 and again[0] == answers[0]
  # Another step: its own cache, encoded again.
  run.answer(texts[:1], 2, 3)
  assert len(calls) == 2 and (cache.parent.parent / "step_2" / cache.name).is_file()
  out = query.format_answers(again, 1)
  assert f"query {texts[0]!r}: split val, step 1, retrieval-p2v (10 videos)" in out
  assert f"    1. {answers[0].videos[0].video_id}" in out


def test_a_query_reads_the_best_checkpoint(hse_run):
  """``--step best`` (and an export: the same parameters-only step dir) answers as the run's
  step of the same parameters; its cache fingerprint reads the item's commit time."""
  run = hse_run
  best = os.path.join(run.workdir, checkpoints.BEST)
  checkpoints.save_params(best, run.state["params"], 2, {"metric": "p2v/R@1"})
  try:
    step, answers = query.run(run.config, run.workdir, ["a"], step="best", top_k=3)
    assert step == 2 and answers == run.answer(["a"], 2, 3)
  finally:
    shutil.rmtree(best)


def test_hammer_query_ranks_videos_and_moments_as_the_evaluator(hammer_run, monkeypatch):
  run = hammer_run
  (ev,) = run.evals
  # The evaluator's own stage 1 and 2 on the split's sentences (their records' tokens).
  _, results = ev.run(run.state, 1)
  data, pred = results["data"], results["pred"]
  picks = [0, 1, 4]
  texts = [run.data.records["val"][data.query_video[q]]["sentences"][
      int(data.query_ids[q].rpartition("#")[2])] for q in picks]
  calls = _counting(monkeypatch, moments.MomentEvaluator)
  answers = run.answer(texts, 1, 4)
  assert len(calls) == 1
  for q, a in zip(picks, answers):
    assert [h.video_id for h in a.videos] == [data.video_ids[v] for v in pred["top_videos"][q]]
    np.testing.assert_allclose([[h.score, h.start, h.end] for h in a.videos],
                               np.c_[pred["top_scores"][q], pred["best"][q]], atol=1e-4)
    assert [h.video_id for h in a.moments] == [data.video_ids[int(v)]
                                               for v in pred["vcmr"][q][:, 0]]
    np.testing.assert_allclose([[h.start, h.end, h.score] for h in a.moments],
                               pred["vcmr"][q][:, 1:], atol=1e-4)
    assert all(0 <= h.start < h.end for h in a.moments)
  again = run.answer(texts[:1], 1, 2)
  assert len(calls) == 1 and again[0].videos == answers[0].videos[:2]
  out = query.format_answers(again, 1)
  assert "top 2 moments" in out and " s" in out


@pytest.mark.parametrize("texts, message", [
    ([" ,;  "], "none of its tokens is in the run's vocabulary"),
    (["   "], "tokenises to nothing"),
    ([], "no query given"),
])
def test_bad_queries_are_one_line(hse_run, texts, message, capsys):
  with pytest.raises(SystemExit) as e:
    common.user_errors("hvt-eval", lambda: query.run(hse_run.config, hse_run.workdir, texts))
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("hvt-eval: error: ") and message in err.splitlines()[0]


def test_a_split_without_videos_or_without_a_ranking_evaluator(hse_run, tmp_path):
  config, workdir = hse_run.config, hse_run.workdir
  with pytest.raises(ValueError, match="'test' is not a split of dataset"):
    query.run(config, workdir, ["a"], splits=["test"])
  other = tiny_data.hse_config(config.input.data_dir, **{
      "evals": {"obs": dict(type="retrieval", split="val", observe_first=2, log_steps=0)}})
  with pytest.raises(ValueError, match="none of its evaluators .* ranks videos for a text"):
    query.run(other, workdir, ["a"])
  with pytest.raises(ValueError, match="no such file"):
    query.read_queries(None, str(tmp_path / "none.txt"))
  (tmp_path / "q.txt").write_text("one\n\n two \n")
  assert query.read_queries(["zero"], str(tmp_path / "q.txt")) == ["zero", "one", "two"]


def test_the_wordpiece_tokenizer_is_the_datasets(tmp_path):
  """A query's WordPiece ids are those the converter stored for the same sentence."""
  d = demo_moments.generate(num_train=2, num_val=1, seed=0)
  (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in d.spec.vocab))
  encode, unk = query.tokenizer(str(tmp_path), {"tokenizer": "wordpiece"})
  for r in d.records["train"]:
    for sentence, tokens in zip(r["sentences"], r["tokens"]):
      assert encode(sentence) == list(tokens)
  assert unk == d.spec.vocab.index("[UNK]")


def test_cli_prints_one_error_line(hse_run):
  proc = subprocess.run(
      [str(pathlib.Path(sys.executable).parent / "hvt-eval"),
       f"--config={REPO}/configs/hse/demo.py:runlocal", f"--workdir={hse_run.workdir}",
       f"--config.input.data_dir={hse_run.config.input.data_dir}", "--query= , ; "],
      cwd=REPO, env=data_fixtures.console_script_env(1), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.startswith("hvt-eval: error: --query ' , ; ': none of its tokens")
  assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("given, step, error", [
    ({"top-k"}, None, "--top-k is an option of --query / --queries"),
    ({"query", "timeout"}, None, "--timeout is an option of --follow"),
    ({"queries", "poll"}, None, "--poll is an option of --follow"),
    ({"latest_only"}, None, "--latest_only is an option of --follow"),
    ({"query", "follow"}, None, "--query answers from one checkpoint: drop --follow"),
    ({"follow"}, 4, "--follow evaluates every new step: drop --step")])
def test_options_of_another_mode_are_refused(given, step, error):
  """An option of one mode given in another would be silently ignored: an error."""
  with pytest.raises(ValueError, match=re.escape(error)):
    hvt_eval.check_modes(given, step)
  assert hvt_eval.check_modes({"query", "top-k"}, "best") == "query"
  assert hvt_eval.check_modes({"follow", "timeout", "poll", "latest_only"}, None) == "follow"
  assert hvt_eval.check_modes(set(), 2) == "eval"


def test_the_encodings_cache_round_trips_and_checks_its_fingerprint(tmp_path):
  """bfloat16 leaves come back as bfloat16 (numpy alone reads them as raw bytes); another
  fingerprint or a damaged file reads as no cache."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  tree = {"enc": {"x": np.arange(6, dtype=ml_dtypes.bfloat16).reshape(3, 2),
                  "mask": np.ones((3, 2), bool)},
          "video_ids": ["a", "bb", "c"], "durations": np.float32([1, 2, 3])}
  path = str(tmp_path / "cache" / "step_1" / "retrieval-p2v.npz")
  corpus.save_encodings(path, tree, {"step": 1, "model": {"hidden": 8}})
  back = corpus.load_encodings(path, {"model": {"hidden": 8}, "step": 1})
  assert back["enc"]["x"].dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(back["enc"]["x"], tree["enc"]["x"])
  assert back["video_ids"].tolist() == tree["video_ids"] and back["enc"]["mask"].all()
  assert corpus.load_encodings(path, {"step": 2, "model": {"hidden": 8}}) is None
  assert os.listdir(os.path.dirname(path)) == ["retrieval-p2v.npz"]   # no temporary left
  with open(path, "r+b") as f:
    f.truncate(100)
  assert corpus.load_encodings(path, {"step": 1, "model": {"hidden": 8}}) is None


def test_the_demo_queries_are_made_of_the_demo_words(tmp_path):
  """hvt-demo's queries (HSE's and the moments demo's) tokenise without an unknown word,
  also where a small demo's vocabulary lacks the first val video's events; HSE's names the
  video whose events it names."""
  # pylint: disable=protected-access
  from hvt_jax.cli import demo as demo_cli  # pylint: disable=g-import-not-at-top
  hse_spec, hse_records = demo.generate_records(num_train=6, num_val=4)
  moments_data = demo_moments.generate(num_train=2, num_val=1)
  for make, spec, tokenizer in ((demo_cli._hse_query, hse_spec, "word"),
                                (demo_cli._moments_query, moments_data.spec, "wordpiece")):
    text, what = make({"extra": json.loads(json.dumps(spec.extra))}, set(spec.vocab))
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in spec.vocab))
    encode, unk = query.tokenizer(str(tmp_path), {"tokenizer": tokenizer})
    assert encode(text) and unk not in encode(text), (text, what)
  _, what = demo_cli._hse_query(
      {"extra": json.loads(json.dumps(hse_spec.extra))}, set(hse_spec.vocab))
  assert any(r["video_id"] in what for r in hse_records["val"]), what
