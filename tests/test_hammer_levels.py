"""HAMMER's per-level view (``hvt_jax/families/hammer/levels.py``, Fig. 4-5): each level's
probabilities are distributions where they should be and multiply to the model's own
p(t_s), p(t_e) (Eq. 10); the tool restores a trained run and writes the PNG."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from configs.hammer import demo
from hvt_jax import train
from hvt_jax.families.hammer import levels, model as hammer
from hvt_jax.input import pipeline
from tests import data_fixtures, tiny_data

REPO = pathlib.Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("levels_data")
  tiny_data.write(str(out), num_train=16, num_val=4, tokenizer="wordpiece")
  return str(out)


def _config(data_dir, arg="runlocal"):
  c = demo.get_config(arg)
  c.input.data_dir = data_dir
  c.evals = {}
  c.mesh_devices = 1
  return c


# FLAT's boundary head: its one "clip" is the video (clip_frames = F, not clip_length).
@pytest.mark.parametrize("name,tl_head", [("hammer", "bio"), ("hammer", "boundary"),
                                          ("flat", "boundary")])
def test_levels_are_distributions_whose_product_is_the_models_boundaries(data_dir, tmp_path,
                                                                         name, tl_head):
  c = _config(data_dir, f"runlocal,model={name}")
  c.model.tl_head = tl_head
  _, meta = pipeline.dataset_info(c)
  model = {"hammer": hammer.HAMMER, "flat": hammer.FLAT}[name].create(c, meta,
                                                                      rngs=nnx.Rngs(1))
  view = pipeline.get_view(name)
  first = next(pipeline.train_dataset(c, 0).as_numpy_iterator())
  batch = {k: np.array(v) for k, v in first.items() if k not in view.host_only}
  # A short video: its last clip (4 frames) holds no frame, the one before it 2 of 4.
  batch["frame_mask"][0, -6:] = False
  batch["frames"][0, -6:] = 0.0
  out = levels.levels(model, batch)
  fm = batch["frame_mask"].astype(bool)
  m = c.model.clip_length if name == "hammer" else c.input.max_frames
  clip_mask = fm.reshape(len(fm), -1, m).any(-1)
  np.testing.assert_array_equal(out["frame_mask"], fm)
  frame = out["frame"].astype(np.float64)
  assert (frame[~fm] == 0).all() and (out["start"][~fm] == 0).all()
  if tl_head == "bio":   # p(y_t | c_k) over O, B, E
    assert list(out["frame_names"]) == ["O", "B", "E"]
    np.testing.assert_allclose(frame.sum(-1)[fm], 1.0, rtol=1e-6)
    start_col, end_col = 1, 2
  else:                  # p(t_s = t | c_k), p(t_e = t | c_k): over the clip's valid frames
    assert list(out["frame_names"]) == ["start", "end"]
    per_clip = frame.reshape(len(fm), -1, m, 2).sum(2)
    np.testing.assert_allclose(per_clip[clip_mask], 1.0, rtol=1e-6)
    assert (per_clip[~clip_mask] == 0).all()
    start_col, end_col = 0, 1
  if name == "hammer":
    assert (~clip_mask).any()
    np.testing.assert_array_equal(out["clip_mask"], clip_mask)
    clip = out["clip"].astype(np.float64)
    assert clip.shape[-1] == (1 if tl_head == "bio" else 2)
    np.testing.assert_allclose(clip.sum(1), 1.0, rtol=1e-6)
    assert (clip[~clip_mask] == 0).all()
    clip_of_frame = np.repeat(clip, m, axis=1)                 # [B, F, H]
  else:
    assert "clip" not in out
    clip_of_frame = np.ones(fm.shape + (1,))
  # Eq. 10: clip × frame, from the heads' logits, is the model's own p(t_s), p(t_e)
  # (``pair``'s start / end: tl_logprobs).
  for key, col, head in (("start", start_col, 0), ("end", end_col, -1)):
    product = clip_of_frame[..., head] * frame[..., col]
    np.testing.assert_allclose(np.log(product[fm]), np.log(out[key][fm]), rtol=1e-5,
                               atol=1e-5, err_msg=key)
  if tl_head == "boundary":
    np.testing.assert_allclose(out["start"].sum(1), 1.0, rtol=1e-5)
  pred = out["prediction"]
  assert (0 <= pred[:, 0]).all() and (pred[:, 0] < pred[:, 1]).all()
  assert (pred[:, 1] <= batch["duration"] + 1e-6).all()
  # FLAT has no clip panel.
  fig = levels.plot(out, batch, str(tmp_path / "levels.png"))
  assert len(fig.axes) == (3 if name == "hammer" else 2)


def test_the_tool_plots_a_query_of_a_trained_run(data_dir, tmp_path):
  workdir = tmp_path / "run"
  c = _config(data_dir)
  train.train_and_evaluate(c, str(workdir))          # runlocal: 4 steps
  # In process: the figure's panels, and the query found by index and by id.
  path, fig = levels.plot_query(c, str(workdir), "val", "val1#1")
  assert path == str(workdir / "eval" / "val" / "levels" / "val1_1.png")
  assert pathlib.Path(path).read_bytes()[:8] == PNG
  labels = [ax.get_ylabel().split("\n")[0] for ax in fig.axes]
  assert labels == ["frame encoder", "clip encoder", "HAMMER"]
  assert "val1#1" in fig.get_suptitle() and "step 4" in fig.get_suptitle()
  # An index counts the queries in the moments evaluator's order (its query view).
  ds, _, _ = pipeline.eval_dataset(c, "val", pipeline.get_view("hammer", "query"))
  ids = [i.decode() for b in ds.as_numpy_iterator()
         for i, real in zip(b["sentence_id"], b["example_mask"]) if real]
  for n in (len(ids) // 2, len(ids) - 1):
    assert levels.find_query(c, "val", str(n)).query_id == ids[n]
  with pytest.raises(ValueError, match="split 'val' has .* queries"):
    levels.find_query(c, "val", "999")
  with pytest.raises(ValueError, match="has no video 'nope'"):
    levels.find_query(c, "val", "nope#0")
  # --summary's statistics over every query the view keeps.
  summary = levels.clip_summary(c, str(workdir), "val")
  assert summary["queries"] == len(ids) and summary["step"] == 4
  assert summary["kl"] >= 0 and 0 <= summary["hit"] <= 1 and 0 <= summary["prior_hit"] <= 1
  # The command line: the PNG at --out, its path printed.
  cmd = [sys.executable, "-m", "hvt_jax.families.hammer.levels",
         f"--config={REPO}/configs/hammer/demo.py:runlocal", f"--workdir={workdir}",
         f"--config.input.data_dir={data_dir}", "--split=val"]
  env = data_fixtures.console_script_env(devices=1)
  out = tmp_path / "levels.png"
  proc = subprocess.run(cmd + ["--query=0", f"--out={out}"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert out.read_bytes()[:8] == PNG and proc.stdout.strip() == str(out)


def test_clip_choice_measures_whether_the_clip_factor_follows_the_query():
  # 2 queries of one video of 3 clips x 2 frames; clip 2 has one valid frame.
  frame_mask = np.array([[1, 1, 1, 1, 1, 0]] * 2, bool)
  prior = np.array([0.4, 0.4, 0.2])
  base = {"frame_mask": frame_mask, "clip_mask": np.ones((2, 3), bool)}
  start = np.array([4, 0])                                  # clips 2 and 0
  # The query-independent n_k / sum n: KL 0, no spread, argmax = the fullest clip.
  same = levels.clip_choice(dict(base, clip=np.stack([prior, prior])[..., None]), start, 2)
  np.testing.assert_allclose(same["kl"], 0.0, atol=1e-12)
  assert same["spread"] == 0.0
  np.testing.assert_array_equal(same["hit"], [False, True])
  np.testing.assert_array_equal(same["prior_hit"], [False, True])
  # A clip factor that picks each query's start clip.
  picks = np.array([[0.05, 0.05, 0.9], [0.9, 0.05, 0.05]])
  chosen = levels.clip_choice(dict(base, clip=picks[..., None]), start, 2)
  np.testing.assert_array_equal(chosen["hit"], [True, True])
  np.testing.assert_allclose(chosen["kl"], np.sum(picks * np.log(picks / prior), -1))
  np.testing.assert_allclose(chosen["spread"], np.mean(np.std(picks, axis=0)))
