"""How hard the LAM pulls on MCHA's shared encoders, relative to L_Mar, at the paper's sizes.

Eq. 13 trains L = L_Mar + β L_Tri; the encoders both terms reach (the text tower, the
expert projections F_j and the modality transformers Ψ_j with their temporal tables and
input norms) get ∇L_Mar + β ∇L_Tri. This prints, per shared parameter group and for all of
them, the ratio of gradient norms ||β ∇L_Tri|| / ||∇L_Mar|| (and the β-free ||∇L_Tri|| /
||∇L_Mar||) under two settings of ``configs/mcha``:

* paper: ``configs/mcha/msrvtt.py`` as it is: ``loss.reduce="sum"`` (Eq. 9 and 12 sum their
  2B and 2B(B-1) terms), β = 1e-4, Eq. 8's sum over words (``model.lam_word_reduce="sum"``);
* demo: ``configs/mcha/demo.py``'s settings on the same model: means (``reduce="mean"``,
  ``lam_word_reduce="mean"``) and β = 0.01.

The model is configs/mcha/msrvtt.py's (d_uni 1024; modality and holistic transformers of 2
layers, 4 heads, MLP 3072; K = 3, λ = 9) with a randomly initialised text tower of BERT-base's
sizes (vocabulary 30,522, 12 layers, width 768, 12 heads, MLP 3072; nothing is downloaded),
MMT's seven MSR-VTT experts and their widths, and a batch of B = 32 MMT-like random examples:
≤ 30 rows per expert (rgb, s3d, scene non-negative as pooled CNN activations, the others
Gaussian), face / ocr / speech missing in about half of the videos as on MSR-VTT, captions of
8-28 random WordPiece ids. Gradients are those of one training step (dropout on) at
initialisation, on the same weights for both settings. (A pretrained BERT, the paper's, gives
other gradient sizes than this random tower; the factor between the two settings comes
mostly from β and the reductions.) On a CPU most of the time is compiling (minutes).

  python benchmarks/bench_mcha_lam_ratio.py [--seeds 0 1 2] [--batch 32]
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from configs.mcha import msrvtt
from hvt_jax.families.mcha import model as mcha
from hvt_jax.models import text

# MMT's MSR-VTT experts and widths (configs_pub/eccv20/MSRVTT_jsfusion_trainval.json).
DIMS = {"face": 512, "ocr": 300, "rgb": 2048, "s3d": 1024, "scene": 2208, "speech": 300,
        "vggish": 128}
NONNEGATIVE = ("rgb", "s3d", "scene")
MISSING_RATE = {"face": 0.5, "ocr": 0.5, "speech": 0.5}
SHARED = ("text", "projections", "temporal", "input_norms", "modality")
SETTINGS = {"paper": dict(reduce="sum", beta=1e-4, lam_word_reduce="sum"),
            "demo": dict(reduce="mean", beta=0.01, lam_word_reduce="mean")}


def _parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", type=int, nargs="+", default=[0], help="init and data seeds")
  p.add_argument("--batch", type=int, default=32)
  return p.parse_args()


def build(seed: int) -> mcha.MCHA:
  """configs/mcha/msrvtt.py's MCHA with a random BERT-base-sized tower."""
  c = msrvtt.get_config()
  m = c.model.to_dict()
  m.pop("name")
  m.pop("text")
  tower = text.TextConfig(vocab_size=30522, hidden=768, num_layers=12, num_heads=12,
                          mlp_dim=3072, max_positions=512, dropout_rate=0.1,
                          attention_dropout_rate=0.1)
  experts = tuple(c.input.experts)
  cfg = mcha.MCHAConfig(experts=experts, expert_dims=tuple(DIMS[e] for e in experts),
                        text=tower, **m)
  return mcha.MCHA(cfg, rngs=nnx.Rngs(seed))


def batch(seed: int, b: int, experts: tuple[str, ...], untimed: tuple[str, ...],
          rows: int = 30, words: int = 30) -> dict[str, jax.Array]:
  """B MMT-like random examples (module docstring), in the view's layout."""
  rng = np.random.default_rng(seed)
  out = {}
  avail = np.ones((b, len(experts)), bool)
  for j, e in enumerate(experts):
    avail[:, j] = rng.random(b) >= MISSING_RATE.get(e, 0.0)
    t = rng.integers(4, rows + 1, size=b) * avail[:, j]
    x = rng.normal(size=(b, rows, DIMS[e])).astype(np.float32)
    x = np.abs(x) if e in NONNEGATIVE else x
    mask = np.arange(rows)[None] < t[:, None]
    out[f"{e}_features"] = np.where(mask[..., None], x, 0.0).astype(np.float32)
    out[f"{e}_mask"] = mask
    mid = (np.arange(rows)[None] + 0.5) * (0.2 if e == "rgb" else 1.0)   # row mid-times, s
    out[f"{e}_time"] = np.where(mask & (e not in untimed), np.floor(mid) + 2, 1
                                ).astype(np.int32)
    out[f"{e}_pool"] = np.where(avail[:, j:j + 1], np.where(mask[..., None], x, -np.inf)
                                .max(axis=1), 0.0).astype(np.float32)
  out["expert_mask"] = avail
  n = rng.integers(8, words - 1, size=b)
  tokens = rng.integers(1000, 30522, size=(b, words)).astype(np.int32)
  tokens[:, 0] = 101                                       # [CLS]
  tokens[np.arange(b), n + 1] = 102                        # [SEP]
  mask = np.arange(words)[None] <= (n + 1)[:, None]
  out["tokens"] = np.where(mask, tokens, 0).astype(np.int32)
  out["token_mask"] = mask
  out["example_mask"] = np.ones(b, bool)
  out["video_index"] = np.arange(b, dtype=np.int32)
  return {k: jnp.asarray(v) for k, v in out.items()}


def grad_norms(graphdef: Any, loss_cfg: ml_collections.ConfigDict) -> Callable[..., Any]:
  """A jitted (params, other, data, key) -> {"mar"|"tri": {group: gradient norm}} of the
  unweighted terms of one training forward (both backward passes in one program)."""
  def terms(p, other, data, key):
    m = nnx.merge(graphdef, p, other)
    t = m.loss(m(data, train=True, rngs=key), data, loss_cfg)[1]
    return jnp.stack([t["mar"], t["tri"]])

  @jax.jit
  def fn(params, other, data, key):
    g = jax.jacrev(terms)(params, other, data, key)          # leaves [2, ...]
    out = {}
    for i, term in enumerate(("mar", "tri")):
      norms = {k: optax.global_norm(jax.tree.map(lambda x: x[i], g[k])) for k in SHARED}
      norms["shared"] = jnp.sqrt(sum(v ** 2 for v in norms.values()))
      out[term] = norms
    return out
  return fn


def main():
  args = _parse()
  c = msrvtt.get_config()
  rows, fns = [], {}
  for seed in args.seeds:
    data = batch(seed, args.batch, tuple(c.input.experts), tuple(c.input.untimed_experts))
    model = build(seed)
    print(f"seed {seed}", flush=True)
    paper_cfg = model.cfg
    for name, s in SETTINGS.items():   # the same weights under each setting
      model.cfg = dataclasses.replace(paper_cfg, lam_word_reduce=s["lam_word_reduce"])
      print(f" {name}: reduce={s['reduce']}, beta={s['beta']}, "
            f"lam_word_reduce={s['lam_word_reduce']}", flush=True)
      graphdef, params, other = nnx.split(model, nnx.Param, ...)
      if name not in fns:   # one program per setting, for every seed
        loss_cfg = ml_collections.ConfigDict(dict(margin_mar=0.05, margin_tri=0.2,
                                                  beta=s["beta"], reduce=s["reduce"]))
        fns[name] = grad_norms(graphdef, loss_cfg)
      g = jax.tree.map(float, fns[name](params, other, data, jax.random.key(seed)))
      for group in (*SHARED, "shared"):
        raw = g["tri"][group] / max(g["mar"][group], 1e-30)
        rows.append((seed, name, group, g["mar"][group], g["tri"][group], raw,
                     s["beta"] * raw))
        print(f"  {group:12s} |dL_Mar| {g['mar'][group]:.3e}  |dL_Tri| {g['tri'][group]:.3e}"
              f"  |dL_Tri|/|dL_Mar| {raw:.3e}  beta x ratio {s['beta'] * raw:.3e}", flush=True)
  print(f"\n||beta dL_Tri|| / ||dL_Mar|| on the shared encoders (mean over seeds {args.seeds}):")
  print(f"{'group':12s} " + " ".join(f"{n:>10s}" for n in SETTINGS))
  for group in (*SHARED, "shared"):
    cells = [np.mean([r[6] for r in rows if r[1] == n and r[2] == group]) for n in SETTINGS]
    print(f"{group:12s} " + " ".join(f"{v:10.3e}" for v in cells))


if __name__ == "__main__":
  main()
