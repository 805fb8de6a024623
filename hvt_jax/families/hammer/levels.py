"""HAMMER's per-level view of one query (the paper's Fig. 4-5, §4.3.3): a PNG.

  python -m hvt_jax.families.hammer.levels --config configs/hammer/demo.py \
      --workdir runs/hammer_demo --split val --query 7 [--out levels.png] [--step N]

Restores the run's checkpoint (the latest complete step, or ``--step``), reads the query's
example through the family's training view (frames, clips, the ground-truth moment) and
plots, on one time axis in seconds with the ground truth shaded:

1. the frame encoder Φ, per frame: p(y_t | c_k, h) for O/B/E (Eq. 12, ``tl_head="bio"``), or
   under ``tl_head="boundary"`` p(t_s = t | c_k) and p(t_e = t | c_k), each a distribution
   over the valid frames of the clip;
2. the clip encoder Ψ, per clip: p(c_k | h) (Eq. 11), or the start-clip and end-clip
   distributions under "boundary" (FLAT has no clip encoder: no panel);
3. the model's combined p(t_s = t) and p(t_e = t) (Eq. 10: panel 2 × panel 1), with the
   model's top-1 moment (``localize``) dashed.

``--query``: the query's index in the split (0, 1, ...: every record's sentences in stored
order, the order the moments evaluator reads them) or its id ``<video_id>#<i>`` (the i-th
sentence of the video, the evaluator's query id outside TVR). ``--out``: default
``<workdir>/eval/<split>/levels/<video_id>_<i>.png``. ``--step`` and ``--split`` are
hvt-eval's flags (default split: the first of ``config.evals``).

``--summary`` (instead of ``--query``): whether the clip encoder chooses clips, over every
query of the split (HAMMER only; ``clip_choice``): the mean KL divergence of p(c_k | h) from
the query-independent n_k / Σ n (the minimiser of Eq. 6's clip term under
``tl_head="bio"``: see ``families/hammer/model.py``), how often its most probable clip is
the ground-truth start clip (and how often the fullest clip is), and the spread of p(c_k)
across the queries of one video (0: the clip factor ignores the query).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import flags
from flax import nnx

from hvt_jax import families, train
from hvt_jax.cli import common
from hvt_jax.cli import eval as hvt_eval
from hvt_jax.input import pipeline, reader

PROG = "hammer-levels"
_SUMMARY = flags.DEFINE_bool(
    "summary", False, "Print the clip encoder's clip-choice statistics over the split's "
    "queries (HAMMER) instead of plotting one query.")
_OUT = flags.DEFINE_string(
    "out", None, "The PNG (default: <workdir>/eval/<split>/levels/<video_id>_<i>.png).")

# The frame encoder's outputs per TL head: Eq. 12's labels, or the two boundaries.
FRAME_NAMES = {"bio": ("O", "B", "E"), "boundary": ("start", "end")}
CLIP_NAMES = {"bio": ("p(c_k)",), "boundary": ("start clip", "end clip")}


def levels(model: Any, batch: dict[str, Any]) -> dict[str, np.ndarray]:
  """Each level's probabilities for B aligned (query, video) examples (no dropout).

  Args:
    model: a HAMMER or FLAT (``families/hammer/model.py``).
    batch: the training view's keys of B examples (``view.hammer_view``): tokens [B, L],
      token_mask [B, L], frames [B, F, Dv], frame_mask [B, F], (subtitle, subtitle_mask),
      frame_seconds [B], duration [B].

  Returns:
    numpy arrays:
    frame [B, F, C] float32: the frame encoder's probabilities, 0 at padding frames.
      "bio" (C = 3, ``frame_names`` O, B, E): softmax of Eq. 12's logits, p(y_t | c_k, h),
      summing to 1 per frame. "boundary" (C = 2, start, end): p(t_s = t | c_k) and
      p(t_e = t | c_k), each summing to 1 over the valid frames of the clip (for FLAT the
      clip is the video).
    frame_names [C] str.
    frame_mask [B, F] bool.
    clip [B, K, H] float32 (HAMMER only): the clip encoder's p(c_k | h) (Eq. 11; H = 1),
      or the start-clip and end-clip distributions ("boundary"; H = 2); each sums to 1 over
      the valid clips, 0 at clips without a valid frame.
    clip_names [H] str; clip_mask [B, K] bool (HAMMER only).
    start, end [B, F] float32: the combined p(t_s = t), p(t_e = t) (``pair``'s start / end
      exponentiated: Eq. 10, clip × frame), 0 at padding frames.
    prediction [B, 2] float32: the top-1 moment (``localize``), start and end in seconds.
  """
  c = model.c
  graphdef, state = nnx.split(model)
  res, top = jax.device_get(_forward(graphdef)(state, batch))
  prediction = np.asarray(top)[:, 0, :2]
  frame_mask = np.asarray(batch["frame_mask"]).astype(bool)
  logits = np.asarray(res["frame_logits"], np.float64)
  if c.tl_head == "bio":
    frame = _softmax(logits, axis=-1)
  else:
    n, f, _ = logits.shape
    m = c.clip_frames
    within = np.where(frame_mask[..., None], logits[..., 1:], -np.inf)
    frame = _softmax(within.reshape(n, f // m, m, 2), axis=2).reshape(n, f, 2)
  out = {"frame": np.where(frame_mask[..., None], frame, 0.0).astype(np.float32),
         "frame_names": np.asarray(FRAME_NAMES[c.tl_head]), "frame_mask": frame_mask}
  if c.hierarchical:
    n, f = frame_mask.shape
    clip_mask = frame_mask.reshape(n, f // c.clip_frames, c.clip_frames).any(axis=-1)
    clip = _softmax(np.asarray(res["clip_logits"], np.float64), axis=1)
    out.update(clip=np.where(clip_mask[..., None], clip, 0.0).astype(np.float32),
               clip_names=np.asarray(CLIP_NAMES[c.tl_head]), clip_mask=clip_mask)
  for key in ("start", "end"):
    out[key] = np.exp(np.asarray(res[key], np.float64)).astype(np.float32)
  out["prediction"] = prediction.astype(np.float32)
  return out


def clip_choice(arrays: dict[str, np.ndarray], start_frame: np.ndarray,
                clip_frames: int) -> dict[str, np.ndarray]:
  """Whether the clip encoder's p(c_k | h) (``levels``'s "clip", first head) chooses clips.

  Args:
    arrays: ``levels``'s output for B queries of one video (HAMMER).
    start_frame: [B] int, each query's ground-truth start frame.
    clip_frames: M, frames per clip.

  Returns:
    kl [B] float64: KL(p(c_k | h) || n_k / Σ n) in nats (n_k: valid frames of clip k);
    hit [B] bool: the most probable clip holds the ground-truth start frame;
    prior_hit [B] bool: the fullest clip (argmax n_k, first of ties) holds it;
    spread float: the std over the B queries of p(c_k), averaged over the valid clips
      (0 when B = 1).
  """
  p = np.asarray(arrays["clip"], np.float64)[..., 0]                       # [B, K]
  mask = np.asarray(arrays["clip_mask"], bool)
  n, f = arrays["frame_mask"].shape
  counts = arrays["frame_mask"].reshape(n, f // clip_frames, clip_frames).sum(-1)
  prior = counts / np.maximum(counts.sum(-1, keepdims=True), 1)
  ratio = np.log(np.maximum(p, 1e-300)) - np.log(np.maximum(prior, 1e-300))
  kl = np.sum(np.where(mask & (p > 0), p * ratio, 0.0), axis=-1)
  gt = np.asarray(start_frame) // clip_frames
  spread = float(np.mean(np.std(p, axis=0)[mask[0]])) if n > 1 else 0.0
  return {"kl": kl, "hit": np.argmax(p, -1) == gt, "prior_hit": np.argmax(counts, -1) == gt,
          "spread": spread}


def clip_summary(config: ml_collections.ConfigDict, workdir: str, split: str,
                 step: int | str | None = None) -> dict[str, float]:
  """``clip_choice`` over every query of ``split`` (the queries of one video together).

  Returns:
    {"queries", "kl" (mean), "hit", "prior_hit" (fractions), "spread" (mean over videos
    with several queries), "step"}.

  Raises:
    ValueError: a FLAT config (no clip encoder), a split without a query the view keeps,
      or as ``restore_model``.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if config.model.name != "hammer":
    raise ValueError(f"--summary: config.model.name={config.model.name!r} has no clip "
                     "encoder (HAMMER only)")
  model, step = restore_model(config, workdir, step)
  data_dir, meta = pipeline.dataset_info(config)
  view = pipeline.get_view(config.model.name)
  view_config = pipeline.view_config(config, meta)
  parts = {"kl": [], "hit": [], "prior_hit": []}
  spreads = []
  for record in reader.load_split(data_dir, split):
    out = view.fn(record, view_config, tf.constant(0, tf.int64))
    example = {k: v.numpy() for k, v in out.items() if k not in view.host_only}
    if example["tokens"].shape[0] == 0:
      continue
    stats = clip_choice(levels(model, example), example["start_frame"], model.c.clip_frames)
    for k, v in parts.items():
      v.append(stats[k])
    if example["tokens"].shape[0] > 1:
      spreads.append(stats["spread"])
  if not parts["kl"]:
    raise ValueError(f"--summary: split {split!r} has no query the view keeps")
  out = {k: float(np.mean(np.concatenate(v))) for k, v in parts.items()}
  return dict(out, queries=int(sum(len(v) for v in parts["kl"])),
              spread=float(np.mean(spreads)) if spreads else 0.0, step=step)


@functools.cache
def _forward(graphdef: Any):
  """One jitted program per model graph: ``pair``'s outputs and the top-1 ``localize``."""

  def fn(state, batch):
    m = nnx.merge(graphdef, state)
    q, v = m.encode_query(batch), m.encode_candidate(batch)
    return m.pair(q, v), m.localize(q, v, 1)

  return jax.jit(fn)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
  """Softmax along ``axis``; 0 where every entry is -inf (a clip without a valid frame)."""
  top = np.max(x, axis=axis, keepdims=True)
  e = np.exp(x - np.where(np.isfinite(top), top, 0.0))
  total = np.sum(e, axis=axis, keepdims=True)
  return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


@dataclasses.dataclass(frozen=True)
class Query:
  """One query's example under the training view (batch of 1, device keys only)."""
  example: dict[str, np.ndarray]
  video_id: str
  index: int            # the sentence's index in its video
  sentence: str

  @property
  def query_id(self) -> str:
    return f"{self.video_id}#{self.index}"


def find_query(config: ml_collections.ConfigDict, split: str, query: str) -> Query:
  """The example of ``query`` (module docstring) under the model's training view.

  Raises:
    ValueError: a malformed ``query``, an index past the split's queries, an unknown video
      or sentence, a moment the view drops (outside its video), an unknown split.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data_dir, meta = pipeline.dataset_info(config)
  ds = reader.load_split(data_dir, split)
  if query.isdigit():
    position, video = int(query), None
    seen = 0
    for vid, n in ds.map(lambda r: (r["video_id"], r["tokens"].nrows())).as_numpy_iterator():
      if position < seen + n:
        video, index = vid.decode("utf-8"), position - seen
        break
      seen += int(n)
    if video is None:
      raise ValueError(f"--query {query}: split {split!r} has {seen} queries (0..{seen - 1})")
  elif "#" in query and query.rpartition("#")[2].isdigit():
    video, _, i = query.rpartition("#")
    index = int(i)
  else:
    raise ValueError(f"--query {query!r}: give the query's index in split {split!r} (0, 1, "
                     "...) or its id <video_id>#<i>")
  record = next(iter(ds.filter(lambda r: tf.equal(r["video_id"], video)).take(1)), None)
  if record is None:
    raise ValueError(f"--query {query}: split {split!r} has no video {video!r}")
  count = int(record["tokens"].nrows())
  if index >= count:
    raise ValueError(f"--query {query}: video {video!r} has {count} sentences (#0..#"
                     f"{count - 1})")
  one = dict(record, **{k: record[k][index:index + 1]
                        for k in ("tokens", "segments", "sentences")})
  view = pipeline.get_view(config.model.name)
  out = view.fn(one, pipeline.view_config(config, meta), tf.constant(0, tf.int64))
  if int(tf.shape(out["tokens"])[0]) == 0:
    raise ValueError(f"--query {query}: its moment {one['segments'].numpy()[0].tolist()} s "
                     f"lies outside video {video!r} ({float(record['duration']):.1f} s): "
                     "the view drops it")
  example = {k: v.numpy() for k, v in out.items() if k not in view.host_only}
  return Query(example, video, index, record["sentences"][index].numpy().decode("utf-8"))


def plot(arrays: dict[str, np.ndarray], example: dict[str, np.ndarray], path: str,
         title: str = "", row: int = 0) -> Any:
  """Draws ``levels``'s arrays of one example (``row``) as the module docstring says and
  saves the PNG (parent dirs created).

  Args:
    arrays: ``levels``'s output.
    example: the batch given to ``levels`` (frame_seconds, duration, segment [B, 2] s).
    path: the PNG written.
    title: the figure's title.
    row: which example of the batch.

  Returns:
    The matplotlib Figure (Agg canvas): 3 axes (frame, clip, combined), 2 for FLAT.
  """
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  delta = float(example["frame_seconds"][row])
  duration = float(example["duration"][row])
  n = int(arrays["frame_mask"][row].sum())
  edges = np.minimum(np.arange(n + 1) * delta, duration)
  hierarchical = "clip" in arrays
  fig = figure.Figure(figsize=(10, 2.3 * (3 if hierarchical else 2) + 0.6))
  backend_agg.FigureCanvasAgg(fig)
  axes = list(fig.subplots(3 if hierarchical else 2, 1, sharex=True))
  colors = {"O": "0.6", "B": "tab:green", "start": "tab:green", "E": "tab:red",
            "end": "tab:red", "p(c_k)": "tab:blue", "start clip": "tab:green",
            "end clip": "tab:red"}
  frame_ax, combined_ax = axes[0], axes[-1]
  for j, name in enumerate(arrays["frame_names"]):
    frame_ax.stairs(arrays["frame"][row, :n, j], edges, label=str(name),
                    color=colors[str(name)])
  given = " | c_k" if hierarchical else ""
  frame_ax.set_ylabel("frame encoder\n" + (f"p(y_t{given})" if len(arrays["frame_names"]) == 3
                                          else f"p(t{given})"))
  if hierarchical:
    clip_ax = axes[1]
    m = arrays["frame"].shape[1] // arrays["clip"].shape[1]
    k = int(arrays["clip_mask"][row].sum())
    clip_edges = np.minimum(np.arange(k + 1) * m, n) * delta
    clip_edges = np.minimum(clip_edges, duration)
    for j, name in enumerate(arrays["clip_names"]):
      clip_ax.stairs(arrays["clip"][row, :k, j], clip_edges, label=str(name),
                     color=colors[str(name)])
    clip_ax.set_ylabel("clip encoder\n" + ("p(c_k)" if arrays["clip"].shape[2] == 1
                                          else "p(clip)"))
    for ax in axes:
      for x in clip_edges[1:-1]:
        ax.axvline(x, color="0.85", lw=0.8, zorder=0)
  combined_ax.stairs(arrays["start"][row, :n], edges, label="p(t_s)", color="tab:green")
  combined_ax.stairs(arrays["end"][row, :n], edges, label="p(t_e)", color="tab:red")
  for x in arrays["prediction"][row]:
    combined_ax.axvline(float(x), color="k", ls="--", lw=1.0)
  combined_ax.plot([], [], color="k", ls="--", lw=1.0, label="top-1")
  combined_ax.set_ylabel("HAMMER\np(t_s), p(t_e)" if hierarchical else "FLAT\np(t_s), p(t_e)")
  start, end = (float(x) for x in example["segment"][row])
  for ax in axes:
    ax.axvspan(start, end, color="gold", alpha=0.3, lw=0, label="ground truth")
    ax.set_ylim(0.0, 1.05 if ax is not combined_ax else None)
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="small")
  combined_ax.set_xlim(0.0, duration)
  combined_ax.set_xlabel("time (s)")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  parent = os.path.dirname(os.fspath(path))
  if parent:
    os.makedirs(parent, exist_ok=True)
  fig.savefig(path, format="png", dpi=100)
  return fig


def restore_model(config: ml_collections.ConfigDict, workdir: str,
                  step: int | str | None = None) -> tuple[Any, int]:
  """The model of a complete checkpoint of ``workdir`` (latest by default; ``"best"``, or
  an export's: ``train.locate``), on the host.

  Raises:
    ValueError: a wrong config; the checkpoint does not fit the config.
    FileNotFoundError: no complete checkpoint (or no ``step``).
  """
  s = train.setup(config)
  step_dir, step = train.locate(workdir, step)
  state = jax.device_get(train.restore(s, step_dir, train.config_changes(workdir, config)))
  rest = [state["other"]] if "other" in state else []
  return nnx.merge(s.graphdef, state["params"], *rest), step


def plot_query(config: ml_collections.ConfigDict, workdir: str, split: str, query: str,
               out: str | None = None, step: int | str | None = None) -> tuple[str, Any]:
  """The tool: finds ``query``, restores the model, computes ``levels`` and plots them.

  Returns:
    (the PNG's path, the Figure).

  Raises:
    ValueError: not a HAMMER/FLAT config, or as ``find_query`` and ``restore_model``.
    FileNotFoundError: as ``restore_model``.
  """
  train.check_config(config)
  family = families.of_model(config.model.name)
  if family.name != "hammer":
    raise ValueError(f"config.model.name={config.model.name!r} is of family "
                     f"{family.name!r}; the per-level view plots HAMMER or FLAT")
  q = find_query(config, split, query)
  model, step = restore_model(config, workdir, step)
  arrays = levels(model, q.example)
  path = out or os.path.join(workdir, "eval", split, "levels", f"{q.video_id}_{q.index}.png")
  name = "HAMMER" if "clip" in arrays else "FLAT"
  title = (f"\u201c{q.sentence}\u201d\n{name}, {split} {q.query_id} (video {q.video_id}), "
           f"step {step}, tl_head={model.c.tl_head}")
  return path, plot(arrays, q.example, path, title)


def _main(argv):
  del argv
  common.user_errors(PROG, _run)


def _run():
  config, workdir = common.startup()
  # --query, --step and --split are hvt-eval's flags: one definition, so both tools load
  # together (here --query names a query of the split: its index or <video_id>#<i>).
  # pylint: disable=protected-access
  queries, step = hvt_eval._QUERY.value or [], hvt_eval._step(hvt_eval._STEP.value)
  splits = hvt_eval._SPLIT.value
  # pylint: enable=protected-access
  if not queries and not _SUMMARY.value:
    raise ValueError("--query is required (the query's index in the split or <video_id>#<i>)"
                     ", or --summary")
  if len(queries) > 1:
    raise ValueError(f"--query: name one query, not {len(queries)}")
  splits = splits or [e.split for e in config.evals.values()][:1]
  if not splits:
    raise ValueError("--split is required: config.evals names no split")
  if len(splits) > 1:
    raise ValueError(f"--split: name one split, not {len(splits)} ({', '.join(splits)})")
  if _SUMMARY.value:
    r = clip_summary(config, workdir, splits[0], step)
    print(f"{splits[0]}, step {r['step']}, {r['queries']} queries, tl_head="
          f"{config.model.get('tl_head', 'bio')}: KL(p(c_k|h) || n_k/sum n) {r['kl']:.4f} nats; "
          f"argmax p(c_k) = start clip {r['hit']:.3f} (fullest clip {r['prior_hit']:.3f}); "
          f"std of p(c_k) across a video's queries {r['spread']:.4f}")
    return
  path, _ = plot_query(config, workdir, splits[0], queries[0], _OUT.value, step)
  print(path)


def main():
  common.run_app(PROG, _main)


if __name__ == "__main__":
  main()
