"""Small models on top of a trained HSE/FSE: action classification and video captioning.

HSE ECCV 2018 §4.3–4.4 use the learned embeddings beyond retrieval. Both models here hold the
retrieval model as ``backbone`` (HSE or FSE, ``config.model.backbone``) and a head; they train
on the one trainer: ``config.init_from`` loads a retrieval checkpoint into ``backbone`` and
``config.trainable`` (the head's parameters) keeps the backbone frozen, as the paper does
("We do not fine-tune the pre-trained clip-level video embedding").

* ``hse_classifier`` (Table 6, right): "a one-hidden-layer Multi-Layer Perceptron (MLP) is
  trained on the clip-level embeddings": the clip-level video encoder (HSE ``video_low``,
  FSE's one video encoder) over the whole video (the view's ``video_frames``), unit-
  normalised (the space the retrieval losses and the zero-shot evaluator use: our choice),
  -> Linear(H, hidden) -> ReLU -> Linear(hidden, K) logits; softmax cross-entropy, mean over
  the labelled videos of the global batch (unlabelled ones are masked).
* ``hse_captioner`` (Table 5): "we concatenate the clip-level feature with contextual
  video-level feature, and build a two-layer LSTM as a caption generator [Show and Tell]. We
  randomly initialized the word embedding as well as LSTM ... During testing, beam search is
  used with beam=5." Conditioning vector [unit(clip); unit(video)] (HSE: the clip embedding
  and the video-level embedding; FSE has one level: its video encoder over the clip's frames
  and over the whole video plays both roles) -> Linear -> the LSTM's input at step -1, as Show
  and Tell feeds the image; then <bos>, w_1 … w_n; targets w_1 … w_n, <eos>. Teacher forcing on
  ground-truth segments (clip i <-> sentence i); cross-entropy averaged over the target tokens
  of the global batch (our choice; the paper does not say). The decoder vocabulary is the
  dataset's word vocabulary plus <bos> (id V) and <eos> (id V + 1); <pad> is never a target.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hvt_jax import losses
from hvt_jax.models import base, layers
from hvt_jax.families.hse import model as hse

Batch = base.Batch
BACKBONES = {"hse": hse.HSE, "fse": hse.FSE}


def _backbone(config: Any, meta: dict[str, Any], rngs: nnx.Rngs):
  name = config.model.get("backbone", "hse")
  if name not in BACKBONES:
    raise ValueError(f"config.model.backbone={name!r}; valid: {sorted(BACKBONES)}")
  return BACKBONES[name].create(config, meta, rngs=rngs)


def classes_of(meta: dict[str, Any]) -> list[str]:
  """The action classes of a dataset: ``extra["classes"]`` of its metadata (written by
  ``hvt-prepare activitynet_labels``: the 200 leaves of the v1.3 taxonomy; and the demo).

  Raises:
    ValueError: the dataset declares no classes.
  """
  classes = list(meta.get("extra", {}).get("classes", []))
  if not classes:
    raise ValueError(f"dataset {meta.get('name', '?')!r} declares no action classes "
                     "(metadata extra['classes']): convert it with `hvt-prepare "
                     "activitynet_labels` (or use the demo)")
  return classes


def _dense(in_dim: int, out_dim: int, names: tuple[str | None, str | None], *,
           rngs: nnx.Rngs, dtype: str) -> layers.Linear:
  """The heads' linear layers: LeCun-normal kernels (flax's default), float32 parameters,
  matmul inputs in ``dtype`` (the backbone's ``config.model.dtype``), float32 outputs."""
  return layers.Linear(in_dim, out_dim, names, init=jax.nn.initializers.lecun_normal(),
                       rngs=rngs, dtype=dtype)


class HSEClassifier(nnx.Module):
  """One-hidden-layer MLP on frozen clip-level video embeddings (HSE Table 6, right).

  Batch: the HSE view plus ``label_id`` [B] int32 (-1: no label; ``families/hse/view.py``).
  Outputs ``logits`` [B, K] float32. Prediction: ``classify(batch) -> logits``.
  """

  # The prediction functions evaluators may ask for (models.base.PredictFns).
  PREDICT_FNS = ("classify",)

  def __init__(self, backbone: Any, num_classes: int, hidden: int, *, rngs: nnx.Rngs):
    self.backbone = backbone
    dt = backbone.cfg.dtype
    self.head = nnx.Dict(
        hidden=_dense(backbone.cfg.hidden, hidden, (None, "mlp"), rngs=rngs, dtype=dt),
        out=_dense(hidden, num_classes, ("mlp", None), rngs=rngs, dtype=dt))

  @classmethod
  def create(cls, config: Any, meta: dict[str, Any], *, rngs: nnx.Rngs) -> "HSEClassifier":
    return cls(_backbone(config, meta, rngs), len(classes_of(meta)),
               int(config.model.get("classifier_hidden", 512)), rngs=rngs)

  @classmethod
  def pretrained_entries(cls, config: Any, data_dir: str) -> list[dict[str, Any]]:
    del cls, config, data_dir
    return []   # the backbone comes from config.init_from (a retrieval checkpoint)

  def classify(self, batch: Batch) -> jax.Array:
    """[B, K] float32 logits of the whole video's clip-level embedding."""
    emb = losses.unit(self.backbone.encode_clip_level(batch["video_frames"],
                                                      batch["video_frame_mask"]))
    return self.head["out"](jax.nn.relu(self.head["hidden"](emb)))

  def __call__(self, batch: Batch, *, train: bool = False,
               rngs: jax.Array | None = None) -> dict[str, jax.Array]:
    del train, rngs
    return {"logits": self.classify(batch)}

  def loss(self, out: dict[str, jax.Array], batch: Batch,
           cfg: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Softmax cross-entropy, mean over the labelled real examples of the global batch."""
    del cfg
    labelled = batch["example_mask"] & (batch["label_id"] >= 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        out["logits"], jnp.maximum(batch["label_id"], 0))
    n = jnp.maximum(jnp.sum(labelled), 1)
    xent = jnp.sum(jnp.where(labelled, ce, 0.0)) / n
    return xent, {"xent": xent}


@dataclasses.dataclass(frozen=True)
class Beam:
  """Beam-search settings (``config.model.beam_*``).

  Attributes:
    size: beams kept per input (paper: 5).
    max_len: most generated tokens, <eos> included; a hypothesis that reaches it ends there.
    alpha: length normalisation of the final choice, score / length**alpha (0 = the raw
      sum of log-probabilities; our choice: the paper does not say). During the search
      hypotheses compete by their raw sums.
  """
  size: int = 5
  max_len: int = 20
  alpha: float = 0.0


def beam_search(step: Callable[[Any, jax.Array], tuple[Any, jax.Array]], state: Any,
                logp0: jax.Array, eos_id: int, beam: Beam
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Fixed-shape beam search.

  Args:
    step: ``step(state, tokens [N*K]) -> (state, log-probabilities [N*K, V])``: feeds one
      token per hypothesis (rows grouped by input: row n*K + k is input n's beam k).
    state: the decoder state after the conditioning input, batched [N, ...] per leaf.
    logp0: [N, V] log-probabilities of the first token.
    eos_id: the end token; a hypothesis that emits it is finished (keeps its score, emits
      padding 0 afterwards).
    beam: size K, max_len L, alpha.

  Returns:
    (tokens [N, L] int32 of the best hypothesis, <eos> and padding as 0; lengths [N] int32,
    words only; scores [N] float32, the summed log-probability incl. <eos>, divided by
    (words + 1)**alpha).
  """
  n, v = logp0.shape
  k, max_len = beam.size, beam.max_len
  tile = lambda x: jnp.repeat(x, k, axis=0)
  state = jax.tree.map(tile, state)
  scores = jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)[None], (n, 1))
  seqs = jnp.zeros((n, k, max_len), jnp.int32)
  finished = jnp.zeros((n, k), bool)
  lengths = jnp.zeros((n, k), jnp.int32)
  stay = jnp.where(jnp.arange(v) == eos_id, 0.0, -jnp.inf)   # a finished beam's only move
  logp = jnp.repeat(logp0[:, None], k, axis=1)

  def body(t, carry):
    state, logp, scores, seqs, finished, lengths = carry
    ext = jnp.where(finished[..., None], stay, logp)
    cand = (scores[..., None] + ext).reshape(n, k * v)
    scores, flat = jax.lax.top_k(cand, k)
    parent, token = flat // v, (flat % v).astype(jnp.int32)
    take = lambda x: jnp.take_along_axis(x, parent.reshape(parent.shape + (1,) * (x.ndim - 2)),
                                         axis=1)
    was_done = take(finished)
    seqs = take(seqs).at[:, :, t].set(jnp.where(was_done | (token == eos_id), 0, token))
    lengths = jnp.where(was_done | (token == eos_id), take(lengths), t + 1)
    finished = was_done | (token == eos_id)
    rows = (jnp.arange(n)[:, None] * k + parent).reshape(-1)
    state = jax.tree.map(lambda x: x[rows], state)
    state, nxt = step(state, token.reshape(-1))
    return state, nxt.reshape(n, k, v), scores, seqs, finished, lengths

  _, _, scores, seqs, finished, lengths = jax.lax.fori_loop(
      0, max_len, body, (state, logp, scores, seqs, finished, lengths))
  final = scores / jnp.power((lengths + 1).astype(jnp.float32), beam.alpha)
  best = jnp.argmax(final, axis=1)
  pick = lambda x: jnp.take_along_axis(x, best.reshape((n, 1) + (1,) * (x.ndim - 2)),
                                       axis=1)[:, 0]
  return pick(seqs), pick(lengths), pick(final)


class HSECaptioner(nnx.Module):
  """Two-layer LSTM caption generator on frozen clip + video embeddings (HSE Table 5).

  Batch: the HSE view (``clip_frames``, ``video_frames``, ``sentence_tokens``, masks).
  Outputs ``logits`` [B, C, W+1, V+2] of the teacher-forced targets; prediction:
  ``generate(batch) -> (tokens [B, C, L], lengths [B, C], scores [B, C])``.
  """

  # The prediction functions evaluators may ask for (models.base.PredictFns).
  PREDICT_FNS = ("generate", "conditioning")

  def __init__(self, backbone: Any, vocab_size: int, word_dim: int, hidden: int,
               beam: Beam, *, rngs: nnx.Rngs):
    self.backbone, self.beam = backbone, beam
    self.vocab_size = vocab_size
    self.bos_id, self.eos_id = vocab_size, vocab_size + 1
    out_vocab = vocab_size + 2
    dt = backbone.cfg.dtype   # the LSTM (models/layers.py) computes in float32
    self.decoder = nnx.Dict(
        cond=_dense(2 * backbone.cfg.hidden, word_dim, (None, "embed"), rngs=rngs, dtype=dt),
        words=layers.param(jax.random.normal(rngs.params(), (out_vocab, word_dim)) * 0.1,
                           ("vocab", "embed")),
        lstm=layers.LSTM(word_dim, hidden, 2, rngs=rngs),
        out=_dense(hidden, out_vocab, ("hidden_in", "vocab"), rngs=rngs, dtype=dt))

  @classmethod
  def create(cls, config: Any, meta: dict[str, Any], *, rngs: nnx.Rngs) -> "HSECaptioner":
    m = config.model
    return cls(_backbone(config, meta, rngs), int(meta["vocab_size"]),
               int(m.get("caption_word_dim", 512)), int(m.get("caption_hidden", 512)),
               Beam(int(m.get("beam_size", 5)), int(m.get("beam_max_len", 20)),
                    float(m.get("beam_alpha", 0.0))), rngs=rngs)

  @classmethod
  def pretrained_entries(cls, config: Any, data_dir: str) -> list[dict[str, Any]]:
    del cls, config, data_dir
    return []   # the backbone comes from config.init_from (a retrieval checkpoint)

  def conditioning(self, batch: Batch) -> jax.Array:
    """[B, C, 2H] float32: [unit clip embedding; unit video-level embedding] per clip."""
    clips, video = self.backbone.video_levels(batch)
    clips, video = losses.unit(clips), losses.unit(video)
    video = jnp.broadcast_to(video[:, None], clips.shape)
    return jnp.concatenate([clips, video], axis=-1)

  def _embed(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.decoder["words"][...], ids, axis=0)

  def _logp(self, h: jax.Array) -> jax.Array:
    """Next-token log-probabilities [N, V+2]; <pad> and <bos> are never generated."""
    logits = self.decoder["out"](h)
    banned = jnp.zeros(logits.shape[-1], bool).at[jnp.array([0, self.bos_id])].set(True)
    return jax.nn.log_softmax(jnp.where(banned, -jnp.inf, logits))

  def _start(self, cond: jax.Array) -> tuple[Any, jax.Array]:
    """LSTM state after the conditioning input (step -1) and <bos>; [N, V+2] log-probs."""
    lstm = self.decoder["lstm"]
    state, _ = lstm.step(lstm.initial_state(cond.shape[0]), self.decoder["cond"](cond))
    state, h = lstm.step(state, self._embed(jnp.full(cond.shape[:1], self.bos_id)))
    return state, self._logp(h)

  def __call__(self, batch: Batch, *, train: bool = False,
               rngs: jax.Array | None = None) -> dict[str, jax.Array]:
    """Teacher forcing: inputs [cond, <bos>, w_1 … w_W]; logits of [w_1 … w_n, <eos>]."""
    del train, rngs
    cond = self.conditioning(batch)                                  # [B, C, 2H]
    tokens = batch["sentence_tokens"]                                # [B, C, W]
    b, c, w = tokens.shape
    inputs = jnp.concatenate([jnp.full((b, c, 1), self.bos_id), tokens], axis=-1)
    x = jnp.concatenate([self.decoder["cond"](cond)[:, :, None],
                         self._embed(inputs)], axis=2).reshape(b * c, w + 2, -1)
    out, _ = self.decoder["lstm"](x)
    logits = self.decoder["out"](out[:, 1:]).reshape(b, c, w + 1, -1)
    return {"logits": logits}

  def targets(self, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """([B, C, W+1] int32 targets w_1 … w_n, <eos>, 0…; [B, C, W+1] bool target mask) of
    the real, paired clips."""
    tokens = batch["sentence_tokens"]
    n = jnp.sum(batch["sentence_token_mask"], axis=-1, keepdims=True)
    padded = jnp.pad(tokens, ((0, 0), (0, 0), (0, 1)))
    pos = jnp.arange(padded.shape[-1])
    y = jnp.where(pos < n, padded, jnp.where(pos == n, self.eos_id, 0))
    paired = (batch["clip_mask"] & batch["sentence_mask"] & batch["example_mask"][:, None])
    return y, (pos <= n) & paired[..., None] & (n > 0)

  def loss(self, out: dict[str, jax.Array], batch: Batch,
           cfg: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Token-level cross-entropy, mean over the target tokens of the global batch."""
    del cfg
    y, mask = self.targets(batch)
    ce = optax.softmax_cross_entropy_with_integer_labels(out["logits"], y)
    xent = jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
    return xent, {"xent": xent}

  def generate(self, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Beam search per clip: (tokens [B, C, L] int32 word ids (0-padded, no <eos>),
    lengths [B, C] int32, scores [B, C] float32)."""
    cond = self.conditioning(batch)
    b, c = cond.shape[:2]
    state, logp0 = self._start(cond.reshape(b * c, -1))
    lstm = self.decoder["lstm"]

    def step(state, tokens):
      state, h = lstm.step(state, self._embed(tokens))
      return state, self._logp(h)

    tokens, lengths, scores = beam_search(step, state, logp0, self.eos_id, self.beam)
    return (tokens.reshape(b, c, -1), lengths.reshape(b, c), scores.reshape(b, c))
