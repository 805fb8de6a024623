"""HAMMER (Zhang et al., "A Hierarchical Multi-Modal Encoder for Moment Localization in
Video Corpus") and its FLAT baseline, as Flax NNX cross-encoders.

No public code of HAMMER exists; every rule below cites the paper (§, Eq., Table) and every
choice the paper leaves open is a ``config.model`` / ``config.loss`` key whose default is
marked "our choice" with the reason.

Architecture (§3.3, Fig. 1, supp. 6.1.3). A video is F frames (``config.input.max_frames``:
128 ActivityNet, 96 TVR) cut into K = F / M clips of M = ``clip_length`` frames.
* Query stream: the text tower (``models/text.py``): BERT's embeddings and, per
  hierarchical encoder, 5 query layers (supp. 6.1.3: "Each hierarchical encoder contains 5
  standard Transformer layers for the query input"), each stack initialised from the first 5
  layers of a pretrained BERT (supp. 6.1.5; ``pretrained_entries`` loads the checkpoint's
  layers into both) and untied (Table 8's better row): ``query_stacks="per_encoder"``
  (default). Φ's stack is the tower's own (``text/encoder``), Ψ's is ``clip_text``; our
  choice: one embedding table (the paper counts layers per encoder; the word embeddings are
  the MLM decoder's too) and one embedding pass feeding both stacks. ``"shared"``: one
  5-layer stack feeds Φ and Ψ (one tower pass per query). FLAT has one encoder, one stack.
  ``clip_query="text"`` (default): Ψ's query stream is its stack's output (the paper's
  Fig. 1 draws the same query input into Φ and Ψ); "frame" (with ``"shared"`` only) starts
  it from Φ's grounded query (mean over the valid clips).
* Frame encoder Φ: per visual stream, an input projection to the width D (the tower's, 768
  for BERT-base; ``visual_width``), a learned position embedding, LayerNorm, dropout and 1
  transformer layer; then 1 cross-modal layer (``layers.CoAttention``: visual attends to
  the query, the query attends to the visual stream). Each clip has a Clip CLS token whose
  output is φ_k (Eq. 7). ``frame_scope="clip"`` (default; Eq. 7/12 condition Φ on c_k and
  §3.3 says Φ "encodes the local and short-range contextual dependencies among the frames
  of the same clip") runs Φ on each clip separately (with the query); "video" runs it once
  over all frames, each CCLS_k attending only to its clip's frames.
* Clip encoder Ψ: the same structure over the clip sequence φ_1..φ_K (Eq. 8), with clip
  position embeddings (``clip_position``, Table 9) and weights shared with Φ's layers when
  ``share_encoders`` (projections and position tables stay separate; Table 8's tied row
  is ``share_encoders=True`` with ``query_stacks="shared"``).
* ASR (TVR, supp. 6.1.3): a second stream for the subtitle features (its own projection,
  transformer and cross-modal layer); the query grounded on the visual and on the ASR
  stream are added, LayerNorm'd and dropped out; the two grounded streams are
  concatenated (output width 2D). Ψ gets each half of φ_k in its own branch. A valid frame
  without subtitles (the view's zero row, ``subtitle_mask`` False) enters as that zero
  vector and attends, and is attended to, like any frame (``asr_missing="zero"``, default:
  supp. 6.1.2, "a zero vector of the same dimensionality is used for frames without
  corresponding subtitles"); "mask" masks it out of the ASR stream's attention. Frames
  past the video's end are masked either way.
* Without the cross-modal layer (``cross_modal=False``; Table 6's ✗ row, whose VR and TL
  the paper does not define): our reading follows ViLBERT [25], whose two-stream layout
  HAMMER's encoders take, where the streams' outputs meet as h_IMG ⊙ h_CLS: in each encoder
  every visual (and ASR) output token of the self-attention layer is multiplied
  element-wise by the query's TCLS from that encoder's query stack, and the query stream
  goes on unchanged. Eq. 9, 11 and 12 then read these features and that TCLS as written
  (VR and TL depend on the query only through the product), and FM / CM predict the masked
  words from the query stacks' outputs (not grounded). Needs the visual width = the
  tower's.
* TCLS = the query's [CLS] position after the cross-modal layer of each encoder. Which
  stream each part reads: Φ's cross-modal layer reads Φ's stack, Ψ's reads Ψ's; Eq. 12's
  TCLS and FM (Eq. 13 at the frame level) read Φ's grounded query, Eq. 11's TCLS and CM
  Ψ's; VR (Eq. 9) reads Ψ's clip outputs; one MLM head (tied to the shared word
  embeddings) serves FM and CM. ``encode_query`` (once per query in the corpus evaluator)
  returns both stacks' outputs; ``pair`` runs the rest per (query, video); the corpus
  evaluator's ``score`` and ``localize`` run only the rows their heads read, with per-query
  and per-video projections computed once (``general_reason``; README "Corpus inference").
* FLAT (§4.1): the frame encoder only, over the whole video (one "clip" of F frames);
  its VR head is ``flat_vr_head``: "cls" (default; our choice: Eq. 9 with one clip, θ on
  the video's single CLS token), "max_frame" (Eq. 9 with every frame a clip) or "tcls".

Heads. VR (Eq. 9): f(v, h) = max_k θ_VR · Ψ(φ_k) over the valid clips. TL (Eq. 10-12):
p(y_t | v, h) = p(c_k | v, h) · p(y_t | c_k, h), p(c_k) = softmax_k u·[Ψ(φ_k), Ψ(TCLS)],
p(y_t | c_k) = softmax_{B,E,O} w·[Φ(x_t), Φ(TCLS; c_k)] (``tl_head="bio"``, default: as
written). Note: the three labels of a frame then sum to p(c_k), not 1, and Eq. 6's clip
term, −Σ_t log p(c_k(t)) = −Σ_k n_k log p(c_k) (n_k valid frames in clip k), is minimised
by p(c_k) = n_k / Σ n whatever the query and the labels: under this reading Eq. 11 learns
no query-dependent clip choice (at inference it only favours fuller clips by log n_k).
``tl_head="boundary"`` gives the clip factor a target (the clip of the start / the end):
separate start and end
distributions over frames, p_s(t) = p_s(c_k) · softmax_{t' in c_k} w_B·[...] (and for
the end), each summing to 1 over the video. Inference (§3.5): log p(t_s) + log p(t_e) with
t_e > t_s (``min_moment_frames`` = 1) and at most ``max_moment_frames`` frames.

Initialisation (the paper states none; our choice): every randomly initialised kernel,
position table, CLS token and VR/TL head outside the text tower is N(0, σ²), biases 0,
LayerNorm 1/0 — BERT's scheme, with σ = ``init_std`` or, when 0 (default), the tower's
``init_std`` (a checkpoint's initializer_range, 0.02; ``config.model.text.init_std`` for a
random tower). The tower, its MLM head included, keeps its own. A much narrower model than
BERT needs a larger σ for the same per-matrix gain (σ·√width): ``configs/hammer/demo.py``
explains its 0.05 at width 64.

Training (§3.4, Eq. 13-14). MLM: BERT's masking (``models/mlm.py``: 15 %, 80/10/10 or
all-[MASK]) of the query; VR and TL see the masked query (``masked_query_for_vr_tl``,
the paper: h ⊗ (1 − m) replaces h); the masked tokens are predicted from Φ's grounded query
(FM) and from Ψ's (CM), switchable per level (Table 4), through the tower's MLM head tied
to the word embeddings. At most ``mlm_max_predictions`` tokens per query are selected
(BERT's max_predictions_per_seq; our choice 8 at 32 words ≈ 0.15 · L plus 3 sd). VR
negatives are drawn inside jit from the *global* batch with the step key
(``negatives``, ``negative_mode``); pairs of one video are masked (``video_index``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from absl import logging
from flax import nnx

from hvt_jax.models import base, layers, mlm, text

Batch = dict[str, jax.Array]
FRAME_SCOPES = ("clip", "video")
CLIP_QUERIES = ("text", "frame")
NEGATIVE_MODES = ("sample", "all")
TL_HEADS = ("bio", "boundary")
FLAT_VR_HEADS = ("cls", "max_frame", "tcls")
QUERY_STACKS = ("per_encoder", "shared")
ASR_MISSING = ("zero", "mask")
NEG = -1e9          # logit of an invalid choice (finite: no NaN in softmax of all-invalid)


@dataclasses.dataclass(frozen=True)
class HammerConfig:
  """Architecture and training switches (``config.model``; module docstring for each)."""
  tower: text.TextConfig
  video_dim: int
  subtitle_dim: int
  max_frames: int
  clip_length: int
  hierarchical: bool = True
  visual_width: int = 0
  num_heads: int = 0
  mlp_dim: int = 0
  init_std: float = 0.0
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  frame_scope: str = "clip"
  clip_query: str = "text"
  clip_position: bool = True
  share_encoders: bool = False
  query_stacks: str = "per_encoder"
  cross_modal: bool = True
  asr_missing: str = "zero"
  flat_vr_head: str = "cls"
  tl_head: str = "bio"
  negatives: int = 7
  negative_mode: str = "sample"
  mlm_frame: bool = True
  mlm_clip: bool = True
  masking: mlm.MaskingConfig | None = None
  mlm_max_predictions: int = 8
  masked_query_for_vr_tl: bool = True
  min_moment_frames: int = 1
  max_moment_frames: int = 0
  dtype: str = "float32"

  def __post_init__(self):
    for name, value, valid in (("frame_scope", self.frame_scope, FRAME_SCOPES),
                               ("clip_query", self.clip_query, CLIP_QUERIES),
                               ("negative_mode", self.negative_mode, NEGATIVE_MODES),
                               ("tl_head", self.tl_head, TL_HEADS),
                               ("flat_vr_head", self.flat_vr_head, FLAT_VR_HEADS),
                               ("query_stacks", self.query_stacks, QUERY_STACKS),
                               ("asr_missing", self.asr_missing, ASR_MISSING)):
      if value not in valid:
        raise ValueError(f"config.model.{name}={value!r}; valid: {valid}")
    if self.clip_stack and self.clip_query == "frame":
      raise ValueError("config.model.clip_query='frame' starts Ψ's query stream from Φ's "
                       "grounded query, so Ψ has no query layers of its own: set "
                       "config.model.query_stacks='shared'")
    if not self.cross_modal and self.width != self.tower.hidden:
      raise ValueError(f"config.model.cross_modal=False multiplies the visual features by "
                       f"the query's TCLS: config.model.visual_width={self.visual_width} must "
                       f"be 0 or the tower's width {self.tower.hidden}")
    if self.max_frames % self.clip_length:
      raise ValueError(f"config.input.max_frames={self.max_frames} is not a multiple of "
                       f"config.model.clip_length={self.clip_length}")
    if self.min_moment_frames < 0 or self.max_moment_frames < 0:
      raise ValueError("config.model.min_moment_frames / max_moment_frames must be >= 0")
    if self.init_std < 0:
      raise ValueError(f"config.model.init_std={self.init_std} must be >= 0 (0: the tower's)")
    if self.negatives < 0:
      raise ValueError(f"config.model.negatives={self.negatives} must be >= 0")

  @property
  def std(self) -> float:
    """The normal initialiser's std of every randomly initialised kernel and embedding."""
    return self.init_std or self.tower.init_std

  @property
  def width(self) -> int:
    return self.visual_width or self.tower.hidden

  @property
  def num_clips(self) -> int:
    return self.max_frames // self.clip_length if self.hierarchical else 1

  @property
  def clip_frames(self) -> int:
    return self.clip_length if self.hierarchical else self.max_frames

  @property
  def clip_stack(self) -> bool:
    """Ψ has query layers of its own (``query_stacks="per_encoder"``, HAMMER only)."""
    return self.hierarchical and self.query_stacks == "per_encoder"

  @property
  def num_streams(self) -> int:
    return 2 if self.subtitle_dim else 1

  @property
  def mlm(self) -> bool:
    return self.masking is not None and (self.mlm_frame or
                                         (self.mlm_clip and self.hierarchical))

  def layer(self, embed: int, heads: int, mlp_dim: int) -> layers.TransformerConfig:
    return layers.TransformerConfig(
        embed_dim=embed, num_heads=heads, mlp_dim=mlp_dim, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate,
        layer_norm_eps=self.tower.layer_norm_eps, activation=self.tower.activation,
        dtype=jnp.dtype(self.dtype), init_std=self.std)

  def visual_layer(self) -> layers.TransformerConfig:
    return self.layer(self.width, self.num_heads or self.tower.num_heads,
                      self.mlp_dim or self.tower.mlp_dim)

  def query_layer(self) -> layers.TransformerConfig:
    t = self.tower
    return self.layer(t.hidden, t.num_heads, t.mlp_dim)



class StreamInput(layers.Linear):
  """Projection to the width D (this ``layers.Linear``) + position embedding + LayerNorm
  (+ dropout at call).

  Parameters: kernel [in, D] (None, "embed"), bias [D], position [P, D] (None, "embed")
  when positions are used, norm.
  """

  def __init__(self, in_dim: int, width: int, num_positions: int, *, rngs: nnx.Rngs,
               eps: float, std: float):
    super().__init__(in_dim, width, (None, "embed"), init=jax.nn.initializers.normal(std),
                     rngs=rngs)
    self.position = (layers.param(layers.normal(rngs.params(), (num_positions, width), std),
                                  (None, "embed")) if num_positions else None)
    self.norm = layers.LayerNorm(width, eps=eps)

  def project(self, x: jax.Array) -> jax.Array:
    """[..., in] -> [..., D] float32 (no position, no norm)."""
    return self(x)

  def finish(self, x_ntd: jax.Array) -> jax.Array:
    """Adds positions 0..T-1 (if any) and normalises: [N, T, D] -> [N, T, D]."""
    if self.position is not None:
      x_ntd = x_ntd + self.position[...][:x_ntd.shape[1]][None]
    return self.norm(x_ntd)


class QueryStack(nnx.Module):
  """Ψ's own query layers (``query_stacks="per_encoder"``): the tower's ``num_layers``
  layers, built as the tower's (its widths and ``init_std``) under the same parameter paths
  (``encoder/layers/<i>/...``), so that ``init_from`` loads the checkpoint's first layers into
  both stacks. Input: the tower's (shared) embeddings."""

  def __init__(self, tower: text.TextConfig, *, rngs: nnx.Rngs):
    self.encoder = layers.TransformerStack(tower.transformer(), tower.num_layers, rngs=rngs,
                                           final_norm=False)

  def __call__(self, x_ble: jax.Array, mask_bl: jax.Array, *, train: bool,
               rngs: jax.Array | None = None) -> jax.Array:
    """[B, L, Dt] embedded query, [B, L] bool -> [B, L, Dt] float32."""
    return self.encoder(x_ble, mask_bl, train=train, rngs=rngs)


class Level(nnx.Module):
  """One encoder's transformer part: per stream 1 self-attention layer and 1 cross-modal
  layer with the query (``layers.CoAttention``; none when not ``cross_modal``), and the ASR
  fusion norm (supp. 6.1.3)."""

  def __init__(self, c: HammerConfig, *, rngs: nnx.Rngs):
    self.selfs = nnx.List([layers.TransformerBlock(c.visual_layer(), rngs=rngs)
                           for _ in range(c.num_streams)])
    self.cross = (nnx.List([layers.CoAttention(c.visual_layer(), c.query_layer(), rngs=rngs)
                            for _ in range(c.num_streams)]) if c.cross_modal else None)
    self.fuse = (layers.LayerNorm(c.tower.hidden, eps=c.tower.layer_norm_eps)
                 if c.num_streams > 1 and c.cross_modal else None)
    self.dropout_rate = c.dropout_rate


def _keys(key: jax.Array | None, n: int) -> list[jax.Array | None]:
  return [None] * n if key is None else list(jax.random.split(key, n))


def _self_layers(level: Level, x_nstd: jax.Array, mask: jax.Array, *, train: bool,
                 key: jax.Array | None) -> jax.Array:
  """Each stream's self-attention layer: [N, S, T, D] -> [N, S, T, D]; ``mask`` is
  [N, S, T] (key padding) or [N, S, T, T] (full)."""
  keys = _keys(key, len(level.selfs))
  return jnp.stack([blk(x_nstd[:, s], mask[:, s], train=train, rngs=keys[s])
                    for s, blk in enumerate(level.selfs)], axis=1)


def _cross_layers(level: Level, x_nstd: jax.Array, x_mask: jax.Array, q_nld: jax.Array,
                  q_mask: jax.Array, *, train: bool,
                  key: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """Cross-modal layer per stream; the grounded queries of 2 streams are added, normalised
  and dropped out (supp. 6.1.3). Without the layer (``cross_modal=False``, Table 6): each
  stream's tokens times the query's TCLS (element-wise, ViLBERT's h_IMG ⊙ h_CLS), and the
  query as it came.

  Returns:
    (visual [N, T, S·D] (streams concatenated), grounded query [N, L, Dt]).
  """
  if level.cross is None:
    tcls = q_nld[:, :1]                                               # [N, 1, Dt = D]
    return (jnp.concatenate([x_nstd[:, s] * tcls for s in range(x_nstd.shape[1])], -1),
            q_nld)
  keys = _keys(key, len(level.cross) + 1)
  outs, queries = [], []
  for s, co in enumerate(level.cross):
    mask = x_mask[:, s]
    # A token row with a full [T, T] self-attention mask still attends to the query;
    # the query attends to the valid tokens (the diagonal of a full mask).
    if mask.ndim == 3:
      mask = jnp.diagonal(mask, axis1=1, axis2=2)
    x, q = co(x_nstd[:, s], q_nld, mask, q_mask, train=train, rngs=keys[s])
    outs.append(x)
    queries.append(q)
  if level.fuse is None:
    return outs[0], queries[0]
  fused = level.fuse(sum(queries))
  return (jnp.concatenate(outs, axis=-1),
          layers.dropout(fused, level.dropout_rate, keys[-1] if train else None))


def _grounded_rows(level: Level, x: jax.Array, q: jax.Array, q_mask: jax.Array) -> jax.Array:
  """Evaluation: the visual side of ``_cross_layers`` for the rows ``x`` only (each row
  attends to the query alone; LayerNorm and the MLP act per row).

  The leading axes of x and of q / q_mask broadcast (``layers.TransformerBlock.cross_pairs``):
  e.g. x [1, Bc, S, R, D] per video and q [Bq, 1, L, Dt] per query give every pair's rows.

  Args:
    x: [..., S, R, D] rows of each stream; q: [..., L, Dt] the query stream; q_mask:
      [..., L] bool.

  Returns:
    [..., R, S·D] float32 (streams concatenated).
  """
  streams = range(x.shape[-3])
  if level.cross is None:                                   # ViLBERT's h_IMG ⊙ h_CLS
    return jnp.concatenate([x[..., s, :, :] * q[..., :1, :] for s in streams], -1)
  return jnp.concatenate([level.cross[s].x_block.cross_pairs(x[..., s, :, :], q, q_mask)
                          for s in streams], -1)


def _grounded_tcls(level: Level, q0: jax.Array, x: jax.Array, x_mask: jax.Array) -> jax.Array:
  """Evaluation: the query side of ``_cross_layers`` for the query's [CLS] row only (TCLS
  attends to the visual tokens; the streams' rows are added and normalised per row).

  Args:
    q0: [..., 1, Dt] the query's first row; x: [..., S, T, D]; x_mask: [..., S, T] bool
      key padding mask (leading axes broadcast as in ``_grounded_rows``).

  Returns:
    [..., Dt] float32: the grounded TCLS.
  """
  if level.cross is None:                                   # the query goes on unchanged
    lead = jnp.broadcast_shapes(q0.shape[:-2], x.shape[:-3])
    return jnp.broadcast_to(q0[..., 0, :], lead + q0.shape[-1:])
  rows = [co.y_block.cross_pairs(q0, x[..., s, :, :], x_mask[..., s, :])
          for s, co in enumerate(level.cross)]
  return (rows[0] if level.fuse is None else level.fuse(sum(rows)))[..., 0, :]


class HAMMER(nnx.Module):
  """HAMMER (``hierarchical=True``) and FLAT (``FLAT``): see the module docstring.

  Batch keys (``families/hammer/view.py``): tokens [B, L] int32, token_mask [B, L], frames
  [B, F, Dv], frame_mask [B, F], (subtitle [B, F, Ds], subtitle_mask [B, F]), labels
  [B, F] int32 (0 O, 1 B, 2 E), start_frame / end_frame [B] int32, frame_seconds [B],
  duration [B], video_index [B] int32, example_mask [B] bool.
  """

  # The prediction functions evaluators may ask for (models.base.PredictFns).
  PREDICT_FNS = ("encode_query", "encode_candidate", "score", "localize")

  def __init__(self, c: HammerConfig, *, rngs: nnx.Rngs):
    self.c = c
    d, s, dt = c.width, c.num_streams, c.tower.hidden
    # The embeddings, Φ's query layers (all of the query's with "shared") and the MLM head.
    self.text = text.TextEncoder(dataclasses.replace(c.tower, mlm_head=c.mlm), rngs=rngs)
    self.clip_text = QueryStack(c.tower, rngs=rngs) if c.clip_stack else None
    eps, std = c.tower.layer_norm_eps, c.std
    # Φ: frame positions within a clip (+ its CLS) or over the video (+ the K CLS tokens).
    phi_positions = (c.clip_frames + 1 if c.frame_scope == "clip" or not c.hierarchical
                     else c.max_frames + c.num_clips)
    dims = (c.video_dim, c.subtitle_dim)[:s]
    self.frame_inputs = nnx.List([
        StreamInput(dim, d, phi_positions, rngs=rngs, eps=eps, std=std) for dim in dims])
    self.clip_cls = layers.param(layers.normal(rngs.params(), (s, d), std), (None, "embed"))
    self.frame_level = Level(c, rngs=rngs)
    out = s * d
    self.tl_frame = layers.param(layers.normal(rngs.params(), (out + dt, 3), std),
                                 ("embed", None))
    vr_dim = dt if (not c.hierarchical and c.flat_vr_head == "tcls") else out
    self.vr = layers.param(layers.normal(rngs.params(), (vr_dim,), std), ("embed",))
    if c.hierarchical:
      clip_positions = c.num_clips if c.clip_position else 0
      self.clip_inputs = nnx.List([
          StreamInput(d, d, clip_positions, rngs=rngs, eps=eps, std=std) for _ in range(s)])
      self.clip_level = None if c.share_encoders else Level(c, rngs=rngs)
      heads = 2 if c.tl_head == "boundary" else 1
      self.tl_clip = layers.param(layers.normal(rngs.params(), (out + dt, heads), std),
                                  ("embed", None))

  # -------------------------------------------------------------------------------------
  # Construction.

  @classmethod
  def create(cls, config: Any, meta: dict[str, Any], *, rngs: nnx.Rngs) -> "HAMMER":
    """From ``config.model`` (keys of ``HammerConfig``), ``config.input`` (max_frames,
    modalities, subtitle) and the dataset metadata (feature dims, WordPiece vocabulary).

    Raises:
      ValueError: a non-WordPiece dataset, an unknown modality, a bad config value.
    """
    m, inp = config.model, config.input
    dims = meta.get("modalities") or {}
    for name in tuple(inp.modalities) + ((inp.subtitle,) if inp.get("subtitle") else ()):
      if name not in dims:
        raise ValueError(f"config.input: modality {name!r} is not in the dataset (it has "
                         f"{sorted(dims)})")
    tower = text.TextConfig.from_model_config(m.text, int(meta["vocab_size"]),
                                              dtype=m.get("dtype", "float32"))
    masking = None
    if m.mlm_frame or m.mlm_clip:
      ids = mlm.special_ids(meta)
      masking = mlm.MaskingConfig(
          mask_id=ids["mask"], special_ids=tuple(ids[k] for k in ("cls", "sep", "pad")),
          vocab_size=tower.vocab_size, mask_rate=float(m.mask_rate), scheme=m.mask_scheme)
    fields = {f.name for f in dataclasses.fields(HammerConfig)}
    fixed = {"tower", "video_dim", "subtitle_dim", "max_frames", "hierarchical", "masking"}
    valid = (fields - fixed) | {"name", "text", "mask_rate", "mask_scheme"}
    if unknown := sorted(set(m.keys()) - valid):
      raise ValueError(f"config.model keys {unknown} unknown; valid: {sorted(valid)}")
    own = {k: v for k, v in m.items() if k in fields}
    hc = HammerConfig(
        tower=tower, video_dim=sum(int(dims[n]) for n in inp.modalities),
        subtitle_dim=int(dims[inp.subtitle]) if inp.get("subtitle") else 0,
        max_frames=int(inp.max_frames), hierarchical=cls.HIERARCHICAL, masking=masking,
        **own)
    return cls(hc, rngs=rngs)

  HIERARCHICAL = True

  @classmethod
  def pretrained_entries(cls, config: Any, data_dir: str | None) -> list[dict[str, Any]]:
    """The text tower's checkpoint (``config.model.text.checkpoint``, first
    ``num_layers`` = 5 layers: supp. 6.1.5), loaded into ``text`` (embeddings, Φ's query
    layers, MLM head) and, with ``query_stacks="per_encoder"``, its same layers again into
    Ψ's ``clip_text`` (each encoder's stack initialised from BERT's first layers)."""
    del data_dir
    entries = text.tower_entries(config)
    if (entries and cls.HIERARCHICAL
        and config.model.get("query_stacks", "per_encoder") == "per_encoder"):
      entries.append(dict(entries[0], into="clip_text",
                          ignore=list(entries[0].get("ignore") or []) + ["^embeddings/"]))
    return entries

  # -------------------------------------------------------------------------------------
  # The query-only and video-only parts (computed once per query / per video).

  def encode_query(self, batch: Batch, *, train: bool = False,
                   rngs: jax.Array | None = None) -> base.Encoding:
    """The query layers on the query (the evaluator's once-per-query part): the tower
    (``query_stacks="shared"``, FLAT), or its embeddings once and then Φ's and Ψ's stacks.

    Returns:
      {"text": [B, L, Dt] float32 (Φ's query stream; Ψ's too when shared), "clip_text":
      [B, L, Dt] float32 (Ψ's, ``query_stacks="per_encoder"`` HAMMER only), "text_mask":
      [B, L] bool}.
    """
    tokens, mask = batch["tokens"], batch["token_mask"].astype(bool)
    if self.clip_text is None:
      return {"text": self.text(tokens, mask, train=train, rngs=rngs).hidden,
              "text_mask": mask}
    k_emb, k_phi, k_psi = _keys(rngs, 3) if train else (None,) * 3
    tower = self.text
    x = layers.dropout(tower.embeddings(tokens), tower.config.dropout_rate, k_emb)
    return {"text": tower.encoder(x, mask, train=train, rngs=k_phi),
            "clip_text": self.clip_text(x, mask, train=train, rngs=k_psi), "text_mask": mask}

  def encode_candidate(self, batch: Batch, *, train: bool = False,
                       rngs: jax.Array | None = None) -> base.Encoding:
    """Φ's visual (and ASR) streams up to their self-attention layer (query-independent).

    Returns:
      {"tokens": [B, S, T, D] float32 (clip scope: T = K·(M+1), each clip's CLS then its
      frames; video scope: T = K + F, the K CLS tokens then the frames), "token_mask":
      [B, S, T] bool, "frame_mask": [B, F] bool, "frame_seconds": [B], "duration": [B]}.
    """
    c = self.c
    k_in, k_self = _keys(rngs, 2) if train else (None, None)
    streams = [batch["frames"]] + ([batch["subtitle"]] if c.num_streams > 1 else [])
    frame_mask = batch["frame_mask"].astype(bool)
    # ASR: a valid frame without subtitles is a zero row (view.py) that attends like any
    # frame ("zero", supp. 6.1.2) or is masked out ("mask"); padding stays masked.
    masks = [frame_mask]
    if c.num_streams > 1:
      masks.append(frame_mask if c.asr_missing == "zero"
                   else batch["subtitle_mask"].astype(bool) & frame_mask)
    b, f = frame_mask.shape
    kk, m = c.num_clips, c.clip_frames
    clip_valid = jnp.any(frame_mask.reshape(b, kk, m), axis=-1)
    tokens, token_masks = [], []
    for s, (x, mask, inp) in enumerate(zip(streams, masks, self.frame_inputs)):
      x = inp.project(x)                                            # [B, F, D]
      cls_tok = jnp.broadcast_to(self.clip_cls[...][s], (b, kk, 1, x.shape[-1]))
      if self._per_clip:
        x = jnp.concatenate([cls_tok, x.reshape(b, kk, m, -1)], axis=2)
        x = inp.finish(x.reshape(b * kk, m + 1, -1)).reshape(b, kk * (m + 1), -1)
        tm = jnp.concatenate([clip_valid[..., None], mask.reshape(b, kk, m)], axis=2)
        tm = tm.reshape(b, kk * (m + 1))
      else:
        x = inp.finish(jnp.concatenate([cls_tok[:, :, 0], x], axis=1))
        tm = jnp.concatenate([clip_valid, mask], axis=1)
      tokens.append(x)
      token_masks.append(tm)
    x = layers.dropout(jnp.stack(tokens, axis=1), c.dropout_rate, k_in)
    token_mask = jnp.stack(token_masks, axis=1)
    x = self._frame_self(x, token_mask, clip_valid, train=train, key=k_self)
    return {"tokens": x, "token_mask": token_mask, "frame_mask": frame_mask,
            "frame_seconds": batch["frame_seconds"].astype(jnp.float32),
            "duration": batch["duration"].astype(jnp.float32)}

  @property
  def _per_clip(self) -> bool:
    return self.c.frame_scope == "clip" or not self.c.hierarchical

  def _video_scope_mask(self, token_mask: jax.Array) -> jax.Array:
    """[N, S, K+F] -> [N, S, K+F, K+F]: frames attend to every valid token, CCLS_k only to
    itself and its clip's frames (``frame_scope="video"``)."""
    kk, m = self.c.num_clips, self.c.clip_length
    f = self.c.max_frames
    clip_of = jnp.concatenate([jnp.arange(kk), jnp.arange(f) // m])
    is_cls = jnp.arange(kk + f) < kk
    allowed = jnp.where(is_cls[:, None], clip_of[:, None] == clip_of[None, :], True)
    return allowed[None, None] & token_mask[:, :, None, :]

  def _frame_self(self, x, token_mask, clip_valid, *, train, key):
    c = self.c
    b, s = x.shape[:2]
    if self._per_clip:
      kk, m1 = c.num_clips, c.clip_frames + 1
      xs = x.reshape(b, s, kk, m1, -1).transpose(0, 2, 1, 3, 4).reshape(b * kk, s, m1, -1)
      ms = token_mask.reshape(b, s, kk, m1).transpose(0, 2, 1, 3).reshape(b * kk, s, m1)
      out = _self_layers(self.frame_level, xs, ms, train=train, key=key)
      return out.reshape(b, kk, s, m1, -1).transpose(0, 2, 1, 3, 4).reshape(b, s, kk * m1, -1)
    del clip_valid
    return _self_layers(self.frame_level, x, self._video_scope_mask(token_mask),
                        train=train, key=key)

  # -------------------------------------------------------------------------------------
  # The cross-modal part, per (query, video) pair.

  def pair(self, query: base.Encoding, video: base.Encoding, *, train: bool = False,
           rngs: jax.Array | None = None) -> dict[str, jax.Array]:
    """Runs the cross-modal layers and heads on N aligned (query, video) pairs.

    Args:
      query: ``encode_query`` of N queries; video: ``encode_candidate`` of N videos.

    Returns:
      vr [N] float32 (Eq. 9), start / end [N, F] log-probabilities of t_s / t_e
      (-inf at padding frames), tl [N, F, 3] log p(y_t) ("bio"; for "boundary" the start
      and end columns hold the boundary log-probabilities and O is -inf), frame_logits
      [N, F, 3] (Eq. 12's w·[...]), clip_logits [N, K, heads] (Eq. 11's u·[...]; NEG at
      clips without a valid frame; zeros for FLAT), clip_logprob [N, K, heads],
      frame_query [N, K', L, Dt] (Φ's grounded query; K' = K per clip, 1 over the video)
      and clip_query [N, L, Dt] (Ψ's; HAMMER only).
    """
    c = self.c
    k_phi, k_psi_in, k_psi_self, k_psi = _keys(rngs, 4) if train else (None,) * 4
    q, q_mask = query["text"], query["text_mask"]
    x, x_mask, frame_mask = video["tokens"], video["token_mask"], video["frame_mask"]
    n, s = x.shape[:2]
    kk, m = c.num_clips, c.clip_frames
    clip_valid = jnp.any(frame_mask.reshape(n, kk, m), axis=-1)
    if self._per_clip:
      m1 = m + 1
      xs = x.reshape(n, s, kk, m1, -1).transpose(0, 2, 1, 3, 4).reshape(n * kk, s, m1, -1)
      ms = x_mask.reshape(n, s, kk, m1).transpose(0, 2, 1, 3).reshape(n * kk, s, m1)
      qk = jnp.repeat(q, kk, axis=0)
      vis, gq = _cross_layers(self.frame_level, xs, ms, qk, jnp.repeat(q_mask, kk, axis=0),
                              train=train, key=k_phi)
      vis = vis.reshape(n, kk, m1, -1)
      phi_k, frames = vis[:, :, 0], vis[:, :, 1:].reshape(n, kk * m, -1)
      gq = gq.reshape(n, kk, gq.shape[1], -1)                          # [N, K, L, Dt]
      tcls_frame = jnp.repeat(gq[:, :, 0], m, axis=1)                   # [N, F, Dt]
    else:
      vis, gq = _cross_layers(self.frame_level, x, self._video_scope_mask(x_mask), q,
                              q_mask, train=train, key=k_phi)
      phi_k, frames = vis[:, :kk], vis[:, kk:]
      gq = gq[:, None]
      tcls_frame = jnp.broadcast_to(gq[:, :, 0], (n, c.max_frames, gq.shape[-1]))
    out = {"frame_query": gq}
    psi = clip_query = None
    if c.hierarchical:
      psi, clip_query = self._clip_encoder(phi_k, clip_valid, gq, query.get("clip_text", q),
                                           q_mask, train=train,
                                           keys=(k_psi_in, k_psi_self, k_psi))
      vr_k = jnp.einsum("nke,e->nk", psi, self.vr[...])
      out.update(vr=jnp.max(jnp.where(clip_valid, vr_k, NEG), axis=1), clip_query=clip_query)
    else:
      out["vr"] = self._flat_vr(phi_k[:, 0], frames, frame_mask, gq[:, 0, 0])
    psi_tcls = None if clip_query is None else clip_query[:, 0]
    out.update(self._tl_heads(frames, tcls_frame, psi, psi_tcls, clip_valid, frame_mask))
    return out

  def _tl_heads(self, frames, tcls_frame, psi, psi_tcls, clip_valid, frame_mask):
    """Eq. 10-12 from the encoders' outputs of N aligned pairs.

    Args:
      frames: [N, F, S·D] Φ(x_t); tcls_frame: [N, F, Dt] Φ(TCLS; c_k) of each frame's clip.
      psi: [N, K, S·D] Ψ(φ_k) (None for FLAT); psi_tcls: [N, Dt] Ψ(TCLS).
      clip_valid: [N, K] bool; frame_mask: [N, F] bool.

    Returns:
      frame_logits, clip_logits, clip_logprob and ``tl_logprobs``'s tl / start / end.
    """
    c = self.c
    frame_logits = jnp.einsum("nfe,ey->nfy", jnp.concatenate([frames, tcls_frame], -1),
                              self.tl_frame[...])
    if psi is None:
      clip_logits = jnp.zeros((frames.shape[0], 1, 1))
    else:
      tcls = jnp.broadcast_to(psi_tcls[:, None], psi.shape[:2] + psi_tcls.shape[-1:])
      clip_logits = jnp.einsum("nke,eh->nkh", jnp.concatenate([psi, tcls], -1),
                               self.tl_clip[...])
      clip_logits = jnp.where(clip_valid[..., None], clip_logits, NEG)
    out = {"frame_logits": frame_logits, "clip_logits": clip_logits,
           "clip_logprob": jax.nn.log_softmax(clip_logits, axis=1)}
    out.update(tl_logprobs(frame_logits, clip_logits, frame_mask, c.clip_frames, c.tl_head))
    return out

  def _flat_vr(self, cls_n, frames, frame_mask, tcls):
    head = self.c.flat_vr_head
    theta = self.vr[...]
    if head == "cls":
      return cls_n @ theta
    if head == "tcls":
      return tcls @ theta
    return jnp.max(jnp.where(frame_mask, frames @ theta, NEG), axis=1)

  def _clip_encoder(self, phi_k, clip_valid, frame_query, q, q_mask, *, train, keys):
    """Ψ over φ_1..φ_K (Eq. 8): [N, K, S·D] -> ([N, K, S·D], grounded query [N, L, Dt]);
    ``q`` is Ψ's query stream [N, L, Dt]."""
    c = self.c
    k_in, k_self, k_cross = keys
    x, mask = self._clip_self(phi_k, clip_valid, train=train, keys=(k_in, k_self))
    if c.clip_query == "frame":
      w = clip_valid.astype(jnp.float32)[..., None, None] if self._per_clip else 1.0
      start = (jnp.sum(frame_query * w, axis=1)
               / jnp.maximum(jnp.sum(jnp.broadcast_to(w, frame_query.shape[:2] + (1, 1)),
                                     axis=1), 1.0))
    else:
      start = q
    return _cross_layers(self._clip_level, x, mask, start, q_mask, train=train, key=k_cross)

  @property
  def _clip_level(self) -> Level:
    """Ψ's transformer layers (Φ's with ``share_encoders``)."""
    return self.frame_level if self.clip_level is None else self.clip_level

  def _clip_self(self, phi_k, clip_valid, *, train, keys):
    """Ψ's input projections, positions, LayerNorm and self-attention layer over φ_1..φ_K:
    [N, K, S·D], [N, K] bool -> ([N, S, K, D], its key mask [N, S, K])."""
    c = self.c
    k_in, k_self = keys
    n, kk = phi_k.shape[:2]
    parts = jnp.split(phi_k, c.num_streams, axis=-1)
    x = jnp.stack([inp.finish(inp.project(p)) for p, inp in zip(parts, self.clip_inputs)],
                  axis=1)
    x = layers.dropout(x, c.dropout_rate, k_in)
    mask = jnp.broadcast_to(clip_valid[:, None], (n, c.num_streams, kk))
    return _self_layers(self._clip_level, x, mask, train=train, key=k_self), mask

  # -------------------------------------------------------------------------------------
  # Training forward pass and loss.

  def __call__(self, batch: Batch, *, train: bool,
               rngs: jax.Array | None = None) -> dict[str, jax.Array]:
    """VR over the positive and the sampled negatives, TL and MLM on the positive pairs.

    ``train=False`` draws the negatives with a fixed key and masks no token (deterministic).

    Returns:
      vr_logits [B, C] (column 0 = the positive pair), vr_valid [B, C], negatives [B, C]
      int32 (the batch row of each column's video), tl [B, F, 3], start / end [B, F],
      frame_logits [B, F, 3], clip_logits [B, K, heads] (``pair``'s, positive pairs),
      and with MLM: mlm_frame_logits [B, K', P, V], mlm_clip_logits [B, P, V],
      mlm_targets [B, P] int32, mlm_weights [B, P].
    """
    c = self.c
    key = rngs if (train and rngs is not None) else jax.random.key(0)
    k_mask, k_neg, k_text, k_video, k_pair, k_mlm = jax.random.split(key, 6)
    drop = (lambda k: k) if train else (lambda k: None)
    tokens, token_mask = batch["tokens"], batch["token_mask"].astype(bool)
    example_mask = batch.get("example_mask", jnp.ones(tokens.shape[:1], bool)).astype(bool)
    out: dict[str, jax.Array] = {}
    inputs = tokens
    if c.mlm and train:
      inputs, targets, weights, positions = self._mask(
          tokens, token_mask & example_mask[:, None], k_mask)
      out.update(mlm_targets=targets, mlm_weights=weights)
    q_in = inputs if c.masked_query_for_vr_tl else tokens
    query = self.encode_query({"tokens": q_in, "token_mask": token_mask}, train=train,
                              rngs=drop(k_text))
    video = self.encode_candidate(batch, train=train, rngs=drop(k_video))
    cols, valid = sample_negatives(batch["video_index"], example_mask, c.negatives, k_neg,
                                   c.negative_mode)
    b, ncol = cols.shape
    pairs_v = jax.tree.map(lambda x: jnp.take(x, cols.reshape(-1), axis=0), video)
    pairs_q = jax.tree.map(lambda x: jnp.repeat(x, ncol, axis=0), query)
    res = self.pair(pairs_q, pairs_v, train=train, rngs=drop(k_pair))
    pos = jax.tree.map(lambda x: x.reshape((b, ncol) + x.shape[1:])[:, 0], res)
    out.update(vr_logits=res["vr"].reshape(b, ncol), vr_valid=valid, negatives=cols,
               **{k: pos[k] for k in ("tl", "start", "end", "frame_logits", "clip_logits")})
    if c.mlm and train:
      if not c.masked_query_for_vr_tl:
        masked_q = self.encode_query({"tokens": inputs, "token_mask": token_mask},
                                     train=train, rngs=drop(k_mlm))
        pos = self.pair(masked_q, video, train=train, rngs=drop(jax.random.fold_in(k_mlm, 1)))
      out.update(self._mlm_logits(pos, positions))
    return out

  def _mask(self, tokens, valid, key):
    """BERT masking (models/mlm.py) capped at ``mlm_max_predictions`` tokens per query.

    Returns:
      (inputs [B, L], targets [B, P] int32, weights [B, P] float32 (1 at a masked token),
       positions [B, P] int32 (the masked tokens first)).
    """
    c = self.c
    inputs, selected = mlm.mask_tokens(tokens, valid, key, c.masking)
    # BERT's max_predictions_per_seq: only the first P selected tokens are masked.
    selected &= jnp.cumsum(selected, axis=1) <= c.mlm_max_predictions
    inputs = jnp.where(selected, inputs, tokens)
    p = min(c.mlm_max_predictions, tokens.shape[1])
    order = jnp.argsort(~selected, axis=1, stable=True)[:, :p]      # selected first
    weights = jnp.take_along_axis(selected, order, axis=1).astype(jnp.float32)
    targets = jnp.take_along_axis(tokens, order, axis=1).astype(jnp.int32)
    return inputs, targets, weights, order.astype(jnp.int32)

  def _mlm_logits(self, pos, positions):
    """Tied MLM logits [.., P, V] at the masked positions of Φ's / Ψ's grounded query."""
    c = self.c
    out = {}
    gather = lambda h, idx: jnp.take_along_axis(h, idx[..., None], axis=-2)
    if c.mlm_frame:
      fq = pos["frame_query"]                                          # [B, K', L, Dt]
      idx = jnp.broadcast_to(positions[:, None], fq.shape[:2] + positions.shape[1:])
      out["mlm_frame_logits"] = self.text.mlm_logits(
          gather(fq, idx).reshape(fq.shape[0], -1, fq.shape[-1])).reshape(
              fq.shape[:2] + positions.shape[1:] + (-1,))
    if c.mlm_clip and c.hierarchical:
      out["mlm_clip_logits"] = self.text.mlm_logits(gather(pos["clip_query"], positions))
    return out

  def loss(self, out: dict[str, jax.Array], batch: Batch,
           cfg: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Eq. 14: λ_VR ℓ_VR + λ_TL ℓ_TL + λ_MLM (ℓ_FM + ℓ_CM); see ``hammer_loss``."""
    return hammer_loss(out, batch, cfg, self.c)

  # -------------------------------------------------------------------------------------
  # Prediction functions (models/base.py Ranker + Localizer).

  # Corpus inference computes only what the heads read (README "Corpus inference"): Eq. 9
  # reads Ψ's clip outputs, which read Φ's clip-CLS rows of the "visual attends to the query"
  # block; a row of that block attends only to the query, so the other rows and the "query
  # attends to the visual stream" block are skipped, and the block's projections run once
  # per video (the CLS rows) and once per query (keys/values of the query) instead of once
  # per pair (``layers.TransformerBlock.cross_pairs``). Equal to ``pair``'s up to float
  # reassociation (tests/test_hammer_fast.py states the tolerance).

  @property
  def general_reason(self) -> str | None:
    """Why ``score`` / ``moment_logprobs`` run ``pair`` (the general path) for this
    config, or None when they use the factored path."""
    if self.c.hierarchical and self.c.clip_query == "frame":
      return ("clip_query='frame' starts Ψ's query stream from every row of Φ's grounded "
              "query, which needs Φ's query-attends-to-video block in full for every clip")
    return None

  def _use_general(self, fn: str) -> bool:
    """Whether ``fn`` takes the general path; says so in the log (once per trace)."""
    reason = self.general_reason
    if reason is not None:
      logging.info("%s.%s: the general path (pair on every tiled pair): %s",
                   type(self).__name__, fn, reason)
    return reason is not None

  def score(self, query: base.Encoding, candidate: base.Encoding) -> jax.Array:
    """[Bq, Bc] float32 VR logits f(v, h) (Eq. 9) of every pair; no pair's value depends
    on the others in the block. The factored path (see above) unless ``general_reason``."""
    if self._use_general("score"):
      return self.score_general(query, candidate)
    c = self.c
    q, q_mask = query["text"][:, None], query["text_mask"][:, None]    # [Bq, 1, L, ..]
    x, frame_mask = candidate["tokens"], candidate["frame_mask"]       # [Bc, S, T, D]
    bq, (bc, s) = q.shape[0], x.shape[:2]
    kk, m = c.num_clips, c.clip_frames
    theta = self.vr[...]
    if not c.hierarchical:                                             # one clip: T = F + 1
      if c.flat_vr_head == "tcls":
        tcls = _grounded_tcls(self.frame_level, q[..., :1, :], x[None],
                              candidate["token_mask"][None])
        return tcls @ theta
      rows = x[None, :, :, :1] if c.flat_vr_head == "cls" else x[None, :, :, 1:]
      vr = _grounded_rows(self.frame_level, rows, q, q_mask) @ theta   # [Bq, Bc, 1 | F]
      if c.flat_vr_head == "cls":
        return vr[..., 0]
      return jnp.max(jnp.where(frame_mask[None], vr, NEG), axis=-1)
    # φ_k: the clip-CLS rows (per clip: each clip's first token; per video: the first K).
    cls = (x.reshape(bc, s, kk, m + 1, -1)[:, :, :, 0] if self._per_clip
           else x[:, :, :kk])                                          # [Bc, S, K, D]
    phi = _grounded_rows(self.frame_level, cls[None], q, q_mask)       # [Bq, Bc, K, S·D]
    clip_valid = jnp.any(frame_mask.reshape(bc, kk, m), axis=-1)       # [Bc, K]
    psi_in, _ = self._clip_self(phi.reshape(bq * bc, kk, -1), jnp.tile(clip_valid, (bq, 1)),
                                train=False, keys=(None, None))        # [Bq·Bc, S, K, D]
    psi_q = query.get("clip_text", query["text"])[:, None]
    psi = _grounded_rows(self._clip_level, psi_in.reshape((bq, bc) + psi_in.shape[1:]),
                         psi_q, q_mask)                                # [Bq, Bc, K, S·D]
    return jnp.max(jnp.where(clip_valid[None], psi @ theta, NEG), axis=-1)

  def score_general(self, query: base.Encoding, candidate: base.Encoding) -> jax.Array:
    """``score`` through ``pair`` on the Bq·Bc tiled pairs (every option; the reference
    the factored path is tested against)."""
    bq, bc = query["text"].shape[0], candidate["tokens"].shape[0]
    q = jax.tree.map(lambda x: jnp.repeat(x, bc, axis=0), query)
    v = jax.tree.map(lambda x: jnp.tile(x, (bq,) + (1,) * (x.ndim - 1)), candidate)
    return self.pair(q, v)["vr"].reshape(bq, bc).astype(jnp.float32)

  def moment_logprobs(self, query: base.Encoding,
                      candidate: base.Encoding) -> dict[str, jax.Array]:
    """{"start": [B, F], "end": [B, F]} float32 log-probabilities of t_s / t_e for aligned
    pairs (row i with row i); -inf at padding frames. The factored path: Φ's
    visual-attends-to-query block with the query's keys/values once per pair (not per
    clip), and of each "query attends to ..." block (Φ's per clip, Ψ's) only the TCLS row
    that Eq. 11 / 12 read; ``pair`` when ``general_reason``."""
    if self._use_general("moment_logprobs"):
      return self.moment_logprobs_general(query, candidate)
    c = self.c
    q, q_mask = query["text"], query["text_mask"]                     # [N, L, Dt]
    x, x_mask, frame_mask = (candidate[k] for k in ("tokens", "token_mask", "frame_mask"))
    n, s = x.shape[:2]
    kk, m = c.num_clips, c.clip_frames
    clip_valid = jnp.any(frame_mask.reshape(n, kk, m), axis=-1)
    if self._per_clip:
      xs = x.reshape(n, s, kk, m + 1, -1).transpose(0, 2, 1, 3, 4)    # [N, K, S, M+1, D]
      ms = x_mask.reshape(n, s, kk, m + 1).transpose(0, 2, 1, 3)
      vis = _grounded_rows(self.frame_level, xs, q[:, None], q_mask[:, None])
      phi_k, frames = vis[:, :, 0], vis[:, :, 1:].reshape(n, kk * m, -1)
      tcls = _grounded_tcls(self.frame_level, q[:, None, :1], xs, ms)  # [N, K, Dt]
      tcls_frame = jnp.repeat(tcls, m, axis=1)
    else:
      vis = _grounded_rows(self.frame_level, x, q, q_mask)             # [N, K + F, S·D]
      phi_k, frames = vis[:, :kk], vis[:, kk:]
      tcls = _grounded_tcls(self.frame_level, q[:, :1], x, x_mask)     # [N, Dt]
      tcls_frame = jnp.broadcast_to(tcls[:, None], (n, c.max_frames, tcls.shape[-1]))
    psi = psi_tcls = None
    if c.hierarchical:
      psi_in, psi_mask = self._clip_self(phi_k, clip_valid, train=False, keys=(None, None))
      psi_q = query.get("clip_text", q)
      psi = _grounded_rows(self._clip_level, psi_in, psi_q, q_mask)    # [N, K, S·D]
      psi_tcls = _grounded_tcls(self._clip_level, psi_q[:, :1], psi_in, psi_mask)
    out = self._tl_heads(frames, tcls_frame, psi, psi_tcls, clip_valid, frame_mask)
    return {"start": out["start"], "end": out["end"]}

  def moment_logprobs_general(self, query: base.Encoding,
                              candidate: base.Encoding) -> dict[str, jax.Array]:
    """``moment_logprobs`` through ``pair`` (every option; the tests' reference)."""
    res = self.pair(query, candidate)
    return {"start": res["start"], "end": res["end"]}

  def localize(self, query: base.Encoding, candidate: base.Encoding,
               top_k: int) -> jax.Array:
    """The top_k moments of each aligned pair (§3.5, Eq. 5).

    Score of (s, e) = log p(t_s = s) + log p(t_e = e), over valid frames with
    e − s >= ``min_moment_frames`` (paper: t_e > t_s) and e − s + 1 <= ``max_moment_frames``
    (0: any); seconds by ``base.frames_to_seconds``.

    Returns:
      [B, top_k, 3] float32 (start s, end s, score), best first (score -inf where fewer
      than top_k moments are allowed).
    """
    return self.top_moments(self.moment_logprobs(query, candidate), candidate, top_k)

  def top_moments(self, lp: dict[str, jax.Array], candidate: base.Encoding,
                  top_k: int) -> jax.Array:
    """``localize``'s moments from ``moment_logprobs``'s {"start", "end"} [B, F]."""
    c = self.c
    f = lp["start"].shape[1]
    s_idx, e_idx = jnp.arange(f)[:, None], jnp.arange(f)[None, :]
    allowed = e_idx - s_idx >= c.min_moment_frames
    if c.max_moment_frames:
      allowed &= e_idx - s_idx + 1 <= c.max_moment_frames
    scores = lp["start"][:, :, None] + lp["end"][:, None, :]
    scores = jnp.where(allowed[None], scores, -jnp.inf).reshape(scores.shape[0], -1)
    best, flat = jax.lax.top_k(scores, top_k)
    start, end = flat // f, flat % f
    sec = base.frames_to_seconds(start, end, candidate["frame_seconds"][:, None],
                                candidate["duration"][:, None])
    return jnp.concatenate([sec, best[..., None]], axis=-1).astype(jnp.float32)


class FLAT(HAMMER):
  """FLAT (§4.1): HAMMER's frame encoder alone over the whole video; same heads (TL without
  the clip factor, VR per ``flat_vr_head``)."""
  HIERARCHICAL = False


def tl_logprobs(frame_logits: jax.Array, clip_logits: jax.Array, frame_mask: jax.Array,
                clip_frames: int, tl_head: str = "bio") -> dict[str, jax.Array]:
  """Eq. 10-12: frame-label and boundary log-probabilities from the heads' logits.

  Args:
    frame_logits: [N, F, 3] w·[Φ(x_t), Φ(TCLS; c_k)] for O, B, E (Eq. 12).
    clip_logits: [N, K, H] u·[Ψ(φ_k), Ψ(TCLS)] (Eq. 11), NEG at clips without a valid
      frame; H = 1 ("bio"), 2 ("boundary": start, end); K = 1 and zeros for FLAT.
    frame_mask: [N, F] bool.
    clip_frames: M (F = K·M).
    tl_head: "bio": log p(y_t) = log p(c_k) + log softmax_y(frame_logits)[y] (Eq. 10), and
      log p(t_s = t) = log p(y_t = B), log p(t_e = t) = log p(y_t = E); "boundary":
      log p_s(t) = log p_s(c_k) + log softmax over the valid frames t' of c_k of the B
      logits (likewise E with the last clip head), distributions over the video's frames.

  Returns:
    {"tl": [N, F, 3] log p(y_t) (boundary: [-inf, start, end]), "start", "end": [N, F]
    (-inf at padding frames)}.
  """
  n, f, _ = frame_logits.shape
  clip_lp = jax.nn.log_softmax(clip_logits, axis=1)
  clip_of_frame = lambda lp: jnp.repeat(lp, clip_frames, axis=1)    # [N, K] -> [N, F]
  if tl_head == "bio":
    tl = (jax.nn.log_softmax(frame_logits, axis=-1)
          + clip_of_frame(clip_lp[..., 0])[..., None])
    start, end = tl[..., 1], tl[..., 2]
  else:
    logits = jnp.where(frame_mask[..., None], frame_logits, NEG)
    per_clip = logits.reshape(n, f // clip_frames, clip_frames, 3)
    within = jax.nn.log_softmax(per_clip, axis=2).reshape(n, f, 3)
    start = within[..., 1] + clip_of_frame(clip_lp[..., 0])
    end = within[..., 2] + clip_of_frame(clip_lp[..., -1])
    tl = jnp.stack([jnp.full_like(start, -jnp.inf), start, end], axis=-1)
  start = jnp.where(frame_mask, start, -jnp.inf)
  end = jnp.where(frame_mask, end, -jnp.inf)
  return {"tl": tl, "start": start, "end": end}


def sample_negatives(video_index: jax.Array, example_mask: jax.Array, k: int,
                     key: jax.Array, mode: str = "sample") -> tuple[jax.Array, jax.Array]:
  """VR candidates of each query from the global batch (inside jit).

  ``"sample"``: k negatives per query, drawn with the step key so that each query's k are
  a uniform k-subset of the other rows *and* every row is drawn exactly k times in the
  batch: the rows are put in a random order π and query π(i) takes the rows π(i + s_j mod
  B) for k distinct shifts s_1..s_k drawn from 1..B−1. A drawn row of the query's own video
  (``video_index``) or a padding row (``example_mask``) is an invalid column. k: our
  choice 7 (``config.model.negatives``): a cross-encoder pays one cross-modal pass per
  pair, so a query costs 1 + k passes (1,024 per step at TVR's batch 128, against 16,384
  for all pairs). Why balanced (our choice; the paper only says "a set of positive and
  negative" videos, §3.4): the VR loss's gradient on a video's query-independent score is
  (its positive queries)·(1 − p) − Σ over the queries that drew it of p; with every row
  drawn k times this is 0 at uniform scores, as with all in-batch negatives. Drawing each
  query's k independently (each row drawn Binomial(B−1, k/(B−1)) times) leaves a
  zero-mean per-batch noise on that path (std ≈ 1/√k per video) which, at initialisation,
  is ~10^3 times the gradient of the query-video interaction: Adam then follows the noise
  and VR stays at log(1 + k) (measured on the moments demo; README).
  ``"all"``: every row of the batch (B columns after the positive); same-video rows and
  the query's own row are masked.

  Args:
    video_index: [B] int32 record index of each example's video.
    example_mask: [B] bool.
    k: negatives per query (``"sample"``); clipped to B − 1.
    key: the step key.
    mode: "sample" or "all".

  Returns:
    (columns [B, C] int32: column 0 is the query's own row (the positive), the others the
     negatives' rows (distinct, never the query's own row); valid [B, C] bool: column 0 =
     example_mask, a negative is valid when its video differs and it is real).
  """
  b = video_index.shape[0]
  rows = jnp.arange(b)
  ok = (video_index[None, :] != video_index[:, None]) & example_mask[None, :]
  if mode == "all":
    cols = jnp.broadcast_to(rows[None], (b, b))
    neg_valid = ok & (rows[None] != rows[:, None])
  else:
    k = min(k, b - 1)
    k_order, k_shift = jax.random.split(key)
    order = jax.random.permutation(k_order, b)                  # π: position -> row
    position = jnp.argsort(order)                               # π⁻¹: row -> position
    shifts = 1 + jax.random.choice(k_shift, b - 1, (k,), replace=False)
    cols = order[(position[:, None] + shifts[None, :]) % b]
    neg_valid = jnp.take_along_axis(ok, cols, axis=1)
  cols = jnp.concatenate([rows[:, None], cols], axis=1).astype(jnp.int32)
  valid = jnp.concatenate([example_mask[:, None], neg_valid], axis=1)
  return cols, valid


def hammer_loss(out: dict[str, jax.Array], batch: Batch, cfg: Any,
                c: HammerConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Eq. 14 over the global batch; every term is logged.

  * vr (Eq. 4, 9): −log softmax(f(v, h) over the positive and its valid negatives)[pos],
    mean over real examples.
  * tl (Eq. 6 with Eq. 10-12): ``cfg.tl_reduce="sum"`` (default, Eq. 6): −Σ_t log p(y_t =
    label_t) summed over the valid frames, mean over real examples; "mean": averaged over
    the frames too. With ``tl_head="boundary"``: −log p_s(start) − log p_e(end).
  * mlm_frame / mlm_clip (Eq. 13; FM / CM of Table 4): mean cross-entropy of the original
    ids at the masked positions (frame level: also over the clips that hold a valid frame).
  Weights ``cfg.weights`` (vr 1, tl 5, mlm 0.1: Table 5); mlm multiplies FM + CM.

  Returns:
    (scalar float32, {"vr", "tl", "mlm_frame", "mlm_clip" (those present)}).
  """
  w = cfg.weights
  real = batch.get("example_mask", jnp.ones(batch["labels"].shape[:1], bool))
  real = real.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(real), 1.0)
  logits = jnp.where(out["vr_valid"], out["vr_logits"], NEG)
  vr = -jax.nn.log_softmax(logits, axis=1)[:, 0]
  terms = {"vr": jnp.sum(vr * real) / count}
  frame_mask = batch["frame_mask"].astype(jnp.float32)
  if c.tl_head == "bio":
    labels = batch["labels"].astype(jnp.int32)
    ll = jnp.take_along_axis(out["tl"], labels[..., None], axis=-1)[..., 0]
    ll = jnp.where(frame_mask > 0, ll, 0.0)
    per = -jnp.sum(ll, axis=1)
    if cfg.get("tl_reduce", "sum") == "mean":
      per = per / jnp.maximum(jnp.sum(frame_mask, axis=1), 1.0)
  else:
    take = lambda lp, idx: jnp.take_along_axis(lp, idx[:, None].astype(jnp.int32), 1)[:, 0]
    per = -(take(out["start"], batch["start_frame"]) + take(out["end"], batch["end_frame"]))
  terms["tl"] = jnp.sum(per * real) / count
  total = w.vr * terms["vr"] + w.tl * terms["tl"]
  if "mlm_targets" in out:
    targets, weights = out["mlm_targets"], out["mlm_weights"] * real[:, None]
    if "mlm_frame_logits" in out:
      lg = out["mlm_frame_logits"]                                     # [B, K', P, V]
      ce = optax.softmax_cross_entropy_with_integer_labels(
          lg, jnp.broadcast_to(targets[:, None], lg.shape[:3]))
      clip_ok = _frame_query_valid(batch, c, lg.shape[1])
      wt = weights[:, None] * clip_ok[..., None]
      terms["mlm_frame"] = jnp.sum(ce * wt) / jnp.maximum(jnp.sum(wt), 1.0)
    if "mlm_clip_logits" in out:
      ce = optax.softmax_cross_entropy_with_integer_labels(out["mlm_clip_logits"], targets)
      terms["mlm_clip"] = jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    total = total + w.mlm * sum(terms.get(k, 0.0) for k in ("mlm_frame", "mlm_clip"))
  return total, terms


def _frame_query_valid(batch: Batch, c: HammerConfig, num: int) -> jax.Array:
  """[B, K'] float: which of Φ's grounded queries come from a clip with a valid frame."""
  fm = batch["frame_mask"].astype(bool)
  if num == 1:
    return jnp.any(fm, axis=1, keepdims=True).astype(jnp.float32)
  return jnp.any(fm.reshape(fm.shape[0], num, -1), axis=-1).astype(jnp.float32)
