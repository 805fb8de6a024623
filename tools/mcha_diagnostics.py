"""Collapse and gradient-balance diagnostics of an MCHA run's checkpoints (README, MCHA demo).

For the initial weights and every checkpoint of a run, on the first N videos of the eval
split (one caption each, the training view at seed 0) and one training batch, prints a JSON
line with:
  mar, tri          L_Mar(S^h) and L_Tri(S) on the N x N scores (mean reduction);
  h_std, l_std      spread (std of the off-diagonal) of the holistic / local scores;
  h_R1, l_R1        t2v R@1 (%) of each score alone on the N x N scores;
  cls_cos, rep_cos, word_cos
                    mean pairwise cosine, across captions / videos, of the text tower's
                    [CLS], of V_rep (per expert, over videos that have it) and of LAM word
                    states: 1.0 = collapsed (every input maps to the same vector);
  gM/<m>, bgT/<m>, cos/<m>
                    |dL_Mar/dθ|, |β dL_Tri/dθ| and their cosine over the parameters of
                    module <m> that both losses share (text tower, expert projections,
                    modality transformers), deterministic forward.

    PYTHONPATH=. python tools/mcha_diagnostics.py --config configs/mcha/demo.py \\
        --workdir runs/mcha_s2 --data-dir data/demo_experts2 --seed 2 [--arg lam=false] \\
        [--set loss.beta=0.01]

The run must keep its checkpoints (``--config.checkpoint.every_steps=25
--config.checkpoint.max_to_keep=20`` when training).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os

import numpy as np

SHARED = ("text", "projections", "modality")


def _pair_cos(x: np.ndarray) -> float:
  """Mean cosine over pairs of distinct rows of x [n, d]."""
  x = np.asarray(x, np.float64)
  x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  g = x @ x.T
  return float(g[~np.eye(len(g), dtype=bool)].mean())


def _offdiag(m: np.ndarray) -> np.ndarray:
  return m[~np.eye(len(m), dtype=bool)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--arg", default="", help="config argument, e.g. lam=false")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--set", action="append", default=[],
                      help="KEY=VALUE config override (Python literal), repeated")
  parser.add_argument("--num-videos", type=int, default=200)
  args = parser.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import ast  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from hvt_jax import checkpoints, losses, train  # pylint: disable=g-import-not-at-top
  from hvt_jax.evaluation import retrieval  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  from hvt_jax.families.mcha import model as mcha  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location("config", args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(args.arg or None)
  c.input.data_dir, c.seed, c.mesh_devices = args.data_dir, args.seed, 1
  for item in args.set:
    key, _, value = item.partition("=")
    c.update_from_flattened_dict({key: ast.literal_eval(value)})
  s = train.setup(c)

  def first_rows(split: str, n: int) -> dict[str, jax.Array]:
    ds, _, _ = pipeline.eval_dataset(c, split)
    parts = [jax.device_get(b) for b, _ in pipeline.iterate(ds, s.mesh,
                                                              pipeline.get_view("mcha"))]
    out = {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}
    out["video_index"] = np.arange(len(out["example_mask"]), dtype=np.int32)
    return {k: jnp.asarray(v) for k, v in out.items()}

  val = first_rows(c.evals.test.split, args.num_videos)
  batch = first_rows(c.input.train_split, c.batch_size)
  n = int(val["example_mask"].shape[0])
  real = jnp.ones(n, bool)
  init = train.init_state(s)
  for step in [0, *checkpoints.complete_steps(args.workdir)]:
    params = (init if step == 0 else train.restore(
        s, checkpoints.resolve(args.workdir, step)[0]))["params"]
    model = nnx.merge(s.graphdef, params)
    q, cand = model.encode_query(val), model.encode_candidate(val)
    row: dict[str, float] = {"step": step}
    for name, key, margin, hardest in (("h", "holistic", c.loss.margin_mar, False),
                                       ("l", "local", c.loss.margin_tri, True)):
      if (key == "holistic" and not c.model.hrm) or (key == "local" and not c.model.lam):
        continue
      fn = model.holistic_score if key == "holistic" else model.local_score
      sim = np.asarray(jax.jit(fn)(q, cand))
      row["mar" if key == "holistic" else "tri"] = float(
          losses.bidirectional_hinge(jnp.asarray(sim), real, margin, hardest_negative=hardest,
                                     reduce="mean"))
      row[f"{name}_std"] = float(_offdiag(sim).std())
      row[f"{name}_R1"] = retrieval.metrics_from_ranks(retrieval.ranks(sim))["R@1"]
    cls = model.text(val["tokens"], val["token_mask"], train=False).cls
    row["cls_cos"] = _pair_cos(cls)
    rep, avail = np.asarray(model._video_rep(val, False, None)), np.asarray(val["expert_mask"])  # pylint: disable=protected-access
    row["rep_cos"] = float(np.mean([_pair_cos(rep[avail[:, j], j])
                                    for j in range(rep.shape[1])]))
    if c.model.lam:
      row["word_cos"] = _pair_cos(np.asarray(q["words"])[np.asarray(q["word_mask"])][:2000])

    def term(p, name, weight):
      m = nnx.merge(s.graphdef, p)
      return weight * m.loss(m(batch, train=False), batch, c.loss)[1][name]

    grads = {}
    for name, weight, on in (("gM", 1.0, c.model.hrm), ("bgT", c.loss.beta, c.model.lam)):
      if on:
        g = jax.grad(functools.partial(term, name="mar" if name == "gM" else "tri",
                                       weight=weight))(params)
        grads[name] = {m: np.concatenate([np.ravel(x) for x in jax.tree.leaves(g[m])])
                       for m in SHARED}
    for m in SHARED:
      for name, g in grads.items():
        row[f"{name}/{m}"] = float(np.linalg.norm(g[m]))
      if len(grads) == 2:
        a, b = grads["gM"][m], grads["bgT"][m]
        row[f"cos/{m}"] = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
          flush=True)


if __name__ == "__main__":
  main()
