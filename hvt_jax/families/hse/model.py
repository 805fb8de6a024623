"""HSE (hierarchical sequence embedding) and its flat baseline FSE (Zhang et al., ECCV 2018).

HSE encodes frames -> clips -> video and words -> sentences -> paragraph with GRUs (Eq. 3),
and trains with high/low-level match and cluster losses (Eq. 4-7), layer-wise reconstruction
(Eq. 8-10) and, for weak correspondence, the averaged low-level match (Eq. 13-14).

Where the authors' PyTorch code (which produced the published tables) differs from the paper
text, the config offers both and defaults to the code. "The code" is the released CMHSE
(github.com/zbwglory/CMHSE: ``model.py`` at 762f91d, ``loss.py``/``decoder/loss.py`` at
e007cfe) run with the flags of every training command in its README (``--low_level_loss
--reconstruct_loss --lowest_reconstruct_loss --norm``, margin 0.2). Line numbers below are
of those files; ``tests/test_models.py::test_default_loss_is_the_released_train_emb_with_norm``
transcribes ``VSE.train_emb`` (from model.py:309) and checks our default loss against it:
  * encoders: one-layer unidirectional GRU, embedding = channel-wise max over valid outputs,
    no projection layer, no dropout, Xavier-uniform per gate block, zero biases;
  * ``model.normalize_embeddings=False`` (code): the encoders return raw max-pooled GRU
    outputs (their ``F.normalize`` lines are commented out: model.py:41 ``EncoderImage``,
    :64 ``EncoderSequence``, :98 ``EncoderText``); the high-level GRUs, their context h0
    (model.py:252-253) and the decoders (model.py:267-268) see raw vectors, and only the loss
    inputs are L2-normalised (model.py:333-343, ``F.normalize(...)``; the cosine of
    ``losses``) and the evaluation embeddings (the cosine of ``evaluation.retrieval``).
    ``True`` L2-normalises every embedding before it is used, as older commits did before
    the cluster loss was added (the published tables include the cluster loss);
  * ``model.context_init``: the high-level GRU starts from the low-level encoder's embedding of
    the whole video (<= 80 uniformly subsampled frames) / whole paragraph (model.py:320,
    passed as h0 at :321 -> :252-253; paper text: h0 = 0), and ``loss.context_weight`` adds a
    match loss on that context pair (model.py:334, ``loss_3``);
  * reconstruction: GRU decoders fed the parent vector at every step with h0 = 0, whose hidden
    states are the reconstructions; the frame/word decoders decode the *reconstructed*
    clip/sentence vectors (model.py:326); targets are stop-gradient (``.detach()``,
    model.py:347); per-row L2 distance (``loss.recon_distance``
    = "squared_l2" is Eq. 10's text); clip/sentence weight ``loss.tau`` = 5e-4 and frame/word
    weight ``loss.tau_low`` = 1e-4 (the text has a single τ: set tau_low = tau).
    ``loss.recon_reduce``: "mean" of the per-row distances over the valid rows of the batch
    (default: the code's ``EuclideanLoss(norm=True)``, decoder/loss.py:23-24, which ``--norm``
    selects, model.py:146), "sum"
    (its ``norm=False``: scales each term by the number of valid rows), or "sequence_mean"
    (Eq. 10's 1/n_i within each clip/sentence);
  * cluster loss: ``loss.cluster_bidirectional=False`` (code): the code averages its
    bidirectional hinge on (v, v) and on (p, p), ``(L(v, v) + L(p, p)) / 2`` (model.py:335
    ``loss_5``; clips/sentences :343 ``loss_6``); since S is
    symmetric that counts each ordered pair once per modality, as Eq. 6/7's text. ``True``
    counts each ordered pair twice (2x).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
from absl import logging

import jax
import jax.numpy as jnp
from flax import nnx

from hvt_jax import losses
from hvt_jax.models import base, layers

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class HSEConfig:
  """Architecture hyperparameters shared by HSE and FSE."""
  video_dim: int
  vocab_size: int
  word_dim: int = 300
  hidden: int = 1024
  context_init: bool = True          # authors' code; False = paper text (h0 = 0)
  reconstruction: bool = True        # build the decoders (needed when loss.tau > 0)
  normalize_embeddings: bool = False  # released code: raw embeddings; True: L2 everywhere
  dtype: str = "float32"

  @classmethod
  def from_config(cls, model_cfg: Any, video_dim: int, vocab_size: int) -> "HSEConfig":
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in model_cfg.items() if k in fields}
    return cls(video_dim=video_dim, vocab_size=vocab_size, **kwargs)


class WordEmbedding(nnx.Module):
  """Trainable word embeddings [vocab, dim], N(0, 0.1) with the padding id 0 at zero.

  Pretrained vectors (GloVe, as the paper) are loaded after init by an ``init_from`` entry
  of format "word_vectors" into ``words/table`` (``HSE.pretrained_entries``).
  """

  def __init__(self, vocab_size: int, dim: int, *, rngs: nnx.Rngs):
    init = jax.random.normal(rngs.params(), (vocab_size, dim)) * 0.1
    init = init.at[0].set(0.0)  # id 0 is padding
    self.table = layers.param(jnp.asarray(init, jnp.float32), ("vocab", "embed"))

  def __call__(self, ids: jax.Array, extra: jax.Array | None = None) -> jax.Array:
    """[..., L] ids -> [..., L, dim]; ``extra`` [M, dim] rows for ids V … V+M-1."""
    table = self.table[...]
    if extra is not None:
      table = jnp.concatenate([table, extra.astype(table.dtype)])
    return jnp.take(table, ids, axis=0)


def _word_vectors_path(config: Any, data_dir: str | None) -> str | None:
  """``config.model.word_vectors``: "auto" = ``<data_dir>/word_vectors.npy`` when the
  converter attached one (GloVe, as the paper), "none" = random init, or a path."""
  source = config.model.get("word_vectors", "auto")
  if source == "auto":
    candidate = os.path.join(data_dir or "", "word_vectors.npy")
    if data_dir and os.path.exists(candidate):
      return candidate
    logging.warning("no word_vectors.npy in %s: word embeddings start random (the paper "
                    "initialises them from GloVe: convert with --word-vectors FILE)",
                    data_dir)
    return None
  return None if source == "none" else source


def _create(cls, config: Any, meta: dict[str, Any], *, rngs: nnx.Rngs):
  """Builds HSE/FSE from the run config and dataset metadata (shared ``create``).

  Reads no weights: when word vectors are configured only their shape is read (the word
  dimension follows them); the values are loaded after init (``pretrained_entries``).
  """
  check_config(config)
  modality = config.input.modality
  if modality not in meta["modalities"]:
    raise ValueError(f"config.input.modality={modality!r} not in the dataset "
                     f"(modalities: {sorted(meta['modalities'])})")
  cfg = HSEConfig.from_config(config.model, video_dim=int(meta["modalities"][modality]),
                              vocab_size=int(meta["vocab_size"]))
  path = _word_vectors_path(config, meta.get("data_dir"))
  if path:
    shape = np.load(path, mmap_mode="r").shape
    if len(shape) != 2 or shape[0] != cfg.vocab_size:
      raise ValueError(f"word vectors {path} have shape {list(shape)}, expected "
                       f"[vocab_size={cfg.vocab_size}, word_dim]")
    cfg = dataclasses.replace(cfg, word_dim=int(shape[1]))
  return cls(cfg, rngs=rngs)


def _pretrained_entries(cls, config: Any, data_dir: str | None) -> list[dict[str, Any]]:
  """The ``init_from`` entries the config implies: GloVe vectors into ``words/table``."""
  del cls
  path = _word_vectors_path(config, data_dir)
  return [dict(source=path, format="word_vectors", into="words/table")] if path else []


class HSE(base.TwoTower, nnx.Module):
  """Hierarchical sequence embedding of videos and paragraphs.

  Prediction functions (``hvt_jax.models.base``): ``encode_query`` embeds paragraphs,
  ``encode_candidate`` videos (unit-normalised, so ``score`` is the cosine the authors'
  evaluation ranks by); a v2p evaluation swaps the roles.
  """

  # The prediction functions evaluators may ask for (models.base.PredictFns).
  PREDICT_FNS = ("encode_query", "encode_candidate", "score", "embed", "encode_clip_level",
                 "encode_sentence_level")

  def __init__(self, cfg: HSEConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    h, kw = cfg.hidden, dict(rngs=rngs, dtype=jnp.dtype(cfg.dtype))
    self.words = WordEmbedding(cfg.vocab_size, cfg.word_dim, rngs=rngs)
    self.video_low = layers.GRUEncoder(cfg.video_dim, h, **kw)
    self.video_high = layers.GRUEncoder(h, h, **kw)
    self.text_low = layers.GRUEncoder(cfg.word_dim, h, **kw)
    self.text_high = layers.GRUEncoder(h, h, **kw)
    if cfg.reconstruction:
      self.clip_decoder = layers.GRU(h, h, **kw)
      self.frame_decoder = layers.GRU(h, cfg.video_dim, **kw)
      self.sentence_decoder = layers.GRU(h, h, **kw)
      self.word_decoder = layers.GRU(h, cfg.word_dim, **kw)

  create = classmethod(_create)
  pretrained_entries = classmethod(_pretrained_entries)

  def _norm(self, x: jax.Array) -> jax.Array:
    return losses.unit(x) if self.cfg.normalize_embeddings else x

  def embed(self, batch: Batch) -> dict[str, jax.Array]:
    """Encodes a batch (the HSE view of ``hvt_jax.input``).

    Returns:
      ``video``/``paragraph`` [B, H], ``clips`` [B, C, H], ``sentences`` [B, S, H], and the
      context embeddings ``video_context``/``paragraph_context`` [B, H] (zeros when
      ``context_init`` is off), plus the word embeddings used as reconstruction targets.
    """
    return {**self._video(batch), **self._text(batch)}

  def _video(self, batch: Batch) -> dict[str, jax.Array]:
    """Frames -> clips -> video (Eq. 3), h0 = the whole video's low-level embedding."""
    norm = self._norm
    clips = norm(self.video_low.encode_nested(batch["clip_frames"],
                                              batch["clip_frame_mask"]))
    if self.cfg.context_init:
      ctx = norm(self.video_low(batch["video_frames"], batch["video_frame_mask"]))
    else:
      ctx = jnp.zeros((clips.shape[0], self.cfg.hidden), jnp.float32)
    # The clip embeddings are the high-level GRU's inputs and the context its initial
    # state, as in the released code (CMHSE model.py@762f91d:252, ``structure_emb`` passes
    # ``vid_context`` as the hidden state; the context is ``forward_emb`` of the whole video,
    # :320).
    video = norm(self.video_high(clips, batch["clip_mask"], ctx))
    return dict(video=video, clips=clips, video_context=ctx)

  def _text(self, batch: Batch) -> dict[str, jax.Array]:
    """Words -> sentences -> paragraph (Eq. 3), h0 = the whole paragraph's embedding."""
    norm = self._norm
    words = self.words(batch["sentence_tokens"])
    sentences = norm(self.text_low.encode_nested(words, batch["sentence_token_mask"]))
    if self.cfg.context_init:
      ctx = norm(self.text_low(self.words(batch["paragraph_tokens"]),
                               batch["paragraph_token_mask"]))
    else:
      ctx = jnp.zeros((sentences.shape[0], self.cfg.hidden), jnp.float32)
    paragraph = norm(self.text_high(sentences, batch["sentence_mask"], ctx))
    return dict(paragraph=paragraph, sentences=sentences, paragraph_context=ctx, words=words)

  def encode_clip_level(self, frames: jax.Array, mask: jax.Array) -> jax.Array:
    """The clip-level video encoder (``video_low``) over frame sequences [B, F, D] ->
    [B, H] (HSE §4.4 applies it to the raw video)."""
    return self.video_low(frames, mask)

  def encode_sentence_level(self, tokens: jax.Array, mask: jax.Array,
                            extra_words: jax.Array | None = None) -> jax.Array:
    """The sentence-level text encoder (``text_low``) over word ids [B, L] -> [B, H];
    ``extra_words`` [M, word_dim]: vectors of ids V … V+M-1 beyond the vocabulary (zero-shot
    label words filled from GloVe)."""
    return self.text_low(self.words(tokens, extra_words), mask)

  def video_levels(self, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(clip embeddings [B, C, H], video embedding [B, H]) of the HSE view."""
    v = self._video(batch)
    return v["clips"], v["video"]

  def encode_query(self, batch: Batch) -> base.Encoding:
    """Paragraphs: ``{"embedding": [B, H]}`` unit-normalised float32."""
    return {"embedding": losses.unit(self._text(batch)["paragraph"])}

  def encode_candidate(self, batch: Batch) -> base.Encoding:
    """Videos: ``{"embedding": [B, H]}`` unit-normalised float32."""
    return {"embedding": losses.unit(self._video(batch)["video"])}

  def __call__(self, batch: Batch, *, train: bool = False,
               rngs: jax.Array | None = None) -> dict[str, jax.Array]:
    """All outputs the loss needs; HSE has no dropout or sampling (``train``/``rngs``
    are part of the contract and unused)."""
    del train, rngs
    out = self.embed(batch)
    if self.cfg.reconstruction:
      b, c, f = batch["clip_frame_mask"].shape
      _, s, l = batch["sentence_token_mask"].shape
      h = self.cfg.hidden
      # Eq. 8: high-level decoders; Eq. 9: low-level decoders on the *generated* vectors.
      # Each decodes only the steps the loss reads (the released code's packed decoders:
      # num_clips / num_caps steps, lengths_clip / lengths_cap steps).
      norm = self._norm
      clip_mask, sent_mask = batch["clip_mask"], batch["sentence_mask"]
      frame_mask = batch["clip_frame_mask"] & clip_mask[..., None]
      word_mask = batch["sentence_token_mask"] & sent_mask[..., None]
      # Reconstructed clip/sentence vectors live where their (normalised) targets do.
      clips_hat = norm(self.clip_decoder.decode(out["video"], c, clip_mask))
      sents_hat = norm(self.sentence_decoder.decode(out["paragraph"], s, sent_mask))
      out["clips_hat"], out["sentences_hat"] = clips_hat, sents_hat
      out["frames_hat"] = self.frame_decoder.decode(
          clips_hat.reshape(b * c, h), f, frame_mask.reshape(b * c, f)).reshape(b, c, f, -1)
      out["words_hat"] = self.word_decoder.decode(
          sents_hat.reshape(b * s, h), l, word_mask.reshape(b * s, l)).reshape(b, s, l, -1)
    return out

  def loss(self, out: dict[str, jax.Array], batch: Batch,
           cfg: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Eq. 11 (+ the context match term of the authors' code), as configured by ``cfg``.

    Returns:
      (scalar loss, dict of the individual terms for logging).
    """
    hinge = _hinge_kwargs(cfg)
    w = _weights(cfg)
    ex = batch["example_mask"]
    terms = high_level_terms(out, batch, cfg)
    if cfg.context_weight:
      terms["match_context"] = cfg.context_weight * losses.match_loss(
          out["video_context"], out["paragraph_context"], ex,
          groups=batch.get("video_index"), **hinge)
    clip_mask = batch["clip_mask"] & ex[:, None]
    sent_mask = batch["sentence_mask"] & ex[:, None]
    if cfg.low == "strong" and w["match_low"]:
      # Eq. 5: clip i <-> sentence i; negatives are all other clips/sentences of the batch.
      pair = (clip_mask & sent_mask).reshape(-1)
      terms["match_low"] = w["match_low"] * losses.match_loss(
          _flat(out["clips"]), _flat(out["sentences"]), pair, **hinge)
    elif cfg.low == "weak" and w["match_low"]:
      terms["match_low"] = w["match_low"] * losses.weak_match_loss(
          out["clips"], clip_mask, out["sentences"], sent_mask, **hinge)
    if cfg.low != "none" and cfg.cluster and w["cluster_low"]:
      kw = dict(bidirectional=cfg.cluster_bidirectional, **hinge)
      terms["cluster_low"] = w["cluster_low"] * (
          losses.cluster_loss(_flat(out["clips"]), clip_mask.reshape(-1), **kw)
          + losses.cluster_loss(_flat(out["sentences"]), sent_mask.reshape(-1), **kw))
    if cfg.tau:
      rec = dict(distance=cfg.recon_distance, reduce=cfg.recon_reduce)
      terms["recon_high"] = cfg.tau * (
          losses.reconstruction_loss(out["clips_hat"], out["clips"], clip_mask, **rec)
          + losses.reconstruction_loss(out["sentences_hat"], out["sentences"], sent_mask,
                                       **rec))
    if cfg.tau and cfg.tau_low:
      terms["recon_low"] = cfg.tau_low * (
          losses.reconstruction_loss(out["frames_hat"], batch["clip_frames"],
                                     batch["clip_frame_mask"] & clip_mask[..., None], **rec)
          + losses.reconstruction_loss(out["words_hat"], out["words"],
                                       batch["sentence_token_mask"] & sent_mask[..., None],
                                       **rec))
    total = sum(terms.values())
    return total, terms


class FSE(base.TwoTower, nnx.Module):
  """Flat sequence embedding (Eq. 1): one GRU over all frames, one over all words."""

  # The prediction functions evaluators may ask for (models.base.PredictFns).
  PREDICT_FNS = ("encode_query", "encode_candidate", "score", "embed", "encode_clip_level",
                 "encode_sentence_level")

  def __init__(self, cfg: HSEConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    kw = dict(rngs=rngs, dtype=jnp.dtype(cfg.dtype))
    self.words = WordEmbedding(cfg.vocab_size, cfg.word_dim, rngs=rngs)
    self.video_encoder = layers.GRUEncoder(cfg.video_dim, cfg.hidden, **kw)
    self.text_encoder = layers.GRUEncoder(cfg.word_dim, cfg.hidden, **kw)

  create = classmethod(_create)
  pretrained_entries = classmethod(_pretrained_entries)

  def _video(self, batch: Batch) -> jax.Array:
    return self.video_encoder(batch["video_frames"], batch["video_frame_mask"])

  def _text(self, batch: Batch) -> jax.Array:
    return self.text_encoder(self.words(batch["paragraph_tokens"]),
                             batch["paragraph_token_mask"])

  def embed(self, batch: Batch) -> dict[str, jax.Array]:
    return dict(video=self._video(batch), paragraph=self._text(batch))

  # FSE has one level: its video and text encoders play the clip/sentence-level roles too.
  def encode_clip_level(self, frames: jax.Array, mask: jax.Array) -> jax.Array:
    """The video encoder over frame sequences [B, F, D] -> [B, H]."""
    return self.video_encoder(frames, mask)

  def encode_sentence_level(self, tokens: jax.Array, mask: jax.Array,
                            extra_words: jax.Array | None = None) -> jax.Array:
    """The text encoder over word ids [B, L] -> [B, H] (``extra_words`` as HSE's)."""
    return self.text_encoder(self.words(tokens, extra_words), mask)

  def video_levels(self, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(the video encoder over each clip's frames [B, C, H], over the video [B, H])."""
    return (self.video_encoder.encode_nested(batch["clip_frames"], batch["clip_frame_mask"]),
            self._video(batch))

  def encode_query(self, batch: Batch) -> base.Encoding:
    return {"embedding": losses.unit(self._text(batch))}

  def encode_candidate(self, batch: Batch) -> base.Encoding:
    return {"embedding": losses.unit(self._video(batch))}

  def __call__(self, batch: Batch, *, train: bool = False,
               rngs: jax.Array | None = None) -> dict[str, jax.Array]:
    del train, rngs
    return self.embed(batch)

  def loss(self, out: dict[str, jax.Array], batch: Batch,
           cfg: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """High-level match + cluster losses (Eq. 4, 6): FSE has no clip/sentence level."""
    terms = high_level_terms(out, batch, cfg)
    return sum(terms.values()), terms


def _hinge_kwargs(cfg: Any) -> dict[str, Any]:
  return dict(margin=cfg.margin, hardest_negative=cfg.hardest_negative,
              normalize=cfg.normalize)


def _weights(cfg: Any) -> dict[str, float]:
  """Per-term weights (supp. Table 1 ablations): 0 drops a term, default 1."""
  weights = dict(match_high=1.0, cluster_high=1.0, match_low=1.0, cluster_low=1.0)
  weights.update(dict(cfg.get("weights", {})))
  return weights


def high_level_terms(out: dict[str, jax.Array], batch: Batch,
                     cfg: Any) -> dict[str, jax.Array]:
  """Eq. 4 (+ Eq. 6 when ``cfg.cluster``) on the video/paragraph embeddings.

  One video twice in a batch (an epoch boundary of a small split) is not its own negative:
  pairs with the same ``video_index`` are masked (with distinct videos, as in every batch
  of the authors' loader, this changes nothing).
  """
  w = _weights(cfg)
  example_mask = batch["example_mask"]
  kw = dict(groups=batch.get("video_index"), **_hinge_kwargs(cfg))
  terms = {}
  if w["match_high"]:
    terms["match_high"] = w["match_high"] * losses.match_loss(
        out["video"], out["paragraph"], example_mask, **kw)
  if cfg.cluster and w["cluster_high"]:
    kw = dict(bidirectional=cfg.cluster_bidirectional, **kw)
    terms["cluster_high"] = w["cluster_high"] * (
        losses.cluster_loss(out["video"], example_mask, **kw)
        + losses.cluster_loss(out["paragraph"], example_mask, **kw))
  return terms


def check_config(config: Any) -> None:
  """Rejects option combinations that would silently do nothing or nonsense."""
  name, m, l, i = config.model.name, config.model, config.loss, config.input
  if l.low not in ("strong", "weak", "none"):
    raise ValueError(f"config.loss.low={l.low!r}; valid: 'strong', 'weak', 'none'")
  unknown = set(dict(l.get("weights", {}))) - {"match_high", "cluster_high", "match_low",
                                                "cluster_low"}
  if unknown:
    raise ValueError(f"config.loss.weights has unknown terms {sorted(unknown)}")
  if name == "fse":
    if l.low != "none" or l.tau or l.context_weight:
      raise ValueError("FSE has no clip/sentence level: set config.loss.low='none', "
                       "config.loss.tau=0 and config.loss.context_weight=0")
    return
  if l.context_weight and not m.context_init:
    raise ValueError("config.loss.context_weight > 0 needs config.model.context_init=True "
                     "(the context pair only exists when it initialises the high level)")
  if l.tau and not m.reconstruction:
    raise ValueError("config.loss.tau > 0 needs config.model.reconstruction=True")
  if i.get("clip_source", "segments") == "uniform" and l.low == "strong":
    raise ValueError("uniform proposals have no clip<->sentence correspondence: use "
                     "config.loss.low='weak' or 'none' with input.clip_source='uniform'")


def _flat(x_bnd: jax.Array) -> jax.Array:
  return x_bnd.reshape(-1, x_bnd.shape[-1])
