"""MCHA: multi-modal cues with hierarchical alignment (Wang et al., IJCAI 2021).

the IJCAI 2021 paper (Wang et al., "Dig into Multi-modal Cues for Video Retrieval with
Hierarchical Alignment"); no public code exists, so every
choice the paper leaves open is a config key (``MCHAConfig``) with its default and reason.

Video (§3.1). Each expert j (MSR-VTT/LSMDC: MMT's 7, ActivityNet: 2) has its own linear
projection F_j to d_uni (Eq. 1) and its own modality transformer Ψ_j (2 layers, 4 heads,
hidden 1024, MLP 3072, dropout 0.1: ``layers.TransformerStack``, post-LN as Vaswani et
al.). Its input is [aggregate token, feature tokens] with
  feature embeddings  E^f = [maxpool(F_j(m_j)), F_j(m_j)]      (Eq. 1 and §3.1)
  temporal embeddings E^t = table_j[temporal id]               (MMT's ids, below)
  m_in = Drop(LN(E^f + E^t))                                   (MMT's BERT embeddings)
and V_rep_j = Ψ_j(m_in) at the aggregate token's position (Eq. 2's "[CLS]", read as MMT
reads its per-expert outputs). Temporal ids (MMT ``base_dataset.py``): 0 for the aggregate
token, 1 for padding and untimed rows (the view's ``untimed_experts``), floor(row mid-time
s) + 2 for timed rows, clamped at ``max_temporal_id`` (31 MSR-VTT/LSMDC, 101 ActivityNet).
Where the paper speaks, it is the default; MMT's code is one key away:
``projection_l2=False`` (default, Eq. 1: F_j is a plain linear layer) or True (MMT's
``ReduceDim``: F_j(x) L2-normalised, the aggregate token too);
``agg_pool="projected"`` (default, §3.1: m^agg-f = maxpool(m^uni), the max over the expert's
projected feature tokens, i.e. the ≤ ``max_feature_tokens`` rows the view keeps) or
``"raw"`` (MMT's ``out_tok="mxp"``: F_j applied to the max over *all* the expert's rows,
which the view pools before it subsamples: ``<e>_pool``).

A missing expert (no rows in the record, ``expert_mask`` False): its slot's values are
replaced before any arithmetic (so neither values nor NaN leak), its tokens are masked as
attention keys in Ψ_j and Ψ^H and it is excluded from the LAM softmax (α = 0), as MMT masks
its tokens. Its holistic weight is paper-silent: ``keep_missing_modalities=True`` (default,
MMT's setting in every published config) keeps the text-derived weight w_j, and its S^h term
is the cosine with Ψ^H's output at its slot (input 0 plus its type embedding, attending to
the available experts), as MMT scores the missing expert's token; ``False`` zeroes w_j and
renormalises over the available experts (its S^h term is exactly 0).

Text (§3.1, Eq. 10). The shared ``text.TextEncoder`` (paper: bert-base-uncased fine-tuned
with dropout 0.1, the configs' default; ``config.model.text.checkpoint``). T^w = its
token outputs projected to d_uni; LAM words are the real tokens other than [CLS] and [SEP]
(our choice: they are not words; ``lam_special_tokens=True`` keeps them).

Local Alignment Module (§3.2), per (text, video) pair, K steps (Eq. 7), T^w_0 = T^w:
  s_ij = cos(w_i, m_j)                                           (Eq. 3)
  s̄_ij = relu(s_ij) / (sqrt(Σ_i relu(s_ij)^2) + ε)   over words  (Eq. 4; ε as SCAN's l2norm)
  α_ij = softmax_j(λ s̄_ij) over available experts, a_i = Σ_j α_ij m_j   (Eq. 5, λ = 9)
  g_i = σ(F_g[w_i, a_i] + b_g), o_i = tanh(F_o[w_i, a_i] + b_o)
  w*_i = g_i w_i + (1 - g_i) o_i                                  (Eq. 6)
  S = Σ_k Σ_i cos(w_ki, a_ki)                                      (Eq. 8)
``lam_word_states="input"`` (default: the word states that attended, T^w_{k-1}, as Eq. 8's
prose reads, "the attended vector a_i and each word embedding w_i", and as IMRAM, whose
gate Eq. 6 follows, scores each step's query) or ``"updated"`` (the printed subscript read as
T^w_k, the step's output: o_i = tanh(F_o[w_i, a_i]) can copy a_i, so cos(w_ki, a_ki) can
approach 1 for every pair; on the demo this score collapsed to chance);
``lam_word_reduce="sum"`` (Eq. 8) or ``"mean"`` over valid words.

Holistic Ranking Module (§3.3). Ψ^H over [maxpool_j V_rep_j, V_rep_1..n] (Eq. 11; masked to
available experts, plus a learned per-expert type embedding so Ψ^H knows which slot is which
modality: our choice, MMT's token types). ``holistic_output="modalities"`` (default, MMT):
per-expert text embeddings T^g_j = GEU_j(T^c) (Eq. 10, Miech et al.'s gated embedding
unit without MMT's BatchNorm: y = W x + b, y ⊙ σ(W' y + b'), L2; MMT's ``txt_pro="gbn"`` adds
a BatchNorm before σ, not implemented), per-expert weights w_j = softmax_j(Linear_j(T^c))
(MMT's text-derived weights; Table 5's "modality importance"; with
``keep_missing_modalities=False`` × available_j, renormalised), and
S^h = Σ_j w_j cos(T^g_j, V^h_j). ``"aggregate"``: S^h = cos(GEU(T^c), V^h_0).

Loss (Eq. 13): L = L_Mar(S^h, Θ = 0.05, all negatives, both directions) + β L_Tri(S, Δ = 0.2,
hardest negative, both directions), each ``losses.bidirectional_hinge``; ``reduce="sum"`` as
Eq. 9/12 write (β was tuned for it), ``"mean"`` (MMT's) per term. Both terms are logged
unweighted (``mar``, ``tri``).
Inference score ``score``: "holistic", "local" or "sum" (S^h + score_local_weight · S).
Ablations (Table 4): ``lam=False``, ``hrm=False``, ``lam_steps=1|2``,
``modality_transformer="shared"`` (one multi-modal transformer over all experts' tokens with
expert-type embeddings, MMT's, instead of the modality-specific ones).

Corpus scoring (``encode_query``/``encode_candidate``/``score``): everything one-sided is
computed once per text or video: unit vectors, the word half of F_g/F_o at step 1, and the
video half of F_g/F_o applied to V_rep (F[w, a] = W_w w + W_a Σ_j α_j m_j = W_w w + Σ_j α_j
(W_a m_j)). Per pair remain the α-mixing and, from step 2 on, the word half of F_g/F_o.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from hvt_jax import losses
from hvt_jax.models import base, layers, text

Batch = dict[str, jax.Array]

SCORES = ("holistic", "local", "sum")
WORD_STATES = ("updated", "input")
REDUCES = ("sum", "mean")
AGG_POOLS = ("raw", "projected")
TRANSFORMERS = ("specific", "shared")
HOLISTIC_OUTPUTS = ("modalities", "aggregate")


@dataclasses.dataclass(frozen=True)
class MCHAConfig:
  """Architecture (paper §4.2 defaults). ``experts``/``expert_dims`` come from the data."""
  experts: tuple[str, ...]
  expert_dims: tuple[int, ...]
  text: text.TextConfig
  d_uni: int = 1024
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 3072
  dropout_rate: float = 0.1
  max_temporal_id: int = 31
  projection_l2: bool = False
  agg_pool: str = "projected"
  keep_missing_modalities: bool = True
  modality_transformer: str = "specific"
  lam: bool = True
  hrm: bool = True
  lam_steps: int = 3
  lam_lambda: float = 9.0
  lam_eps: float = 1e-8
  lam_word_states: str = "input"
  lam_word_reduce: str = "sum"
  lam_special_tokens: bool = False
  holistic_output: str = "modalities"
  score: str = "holistic"
  score_local_weight: float = 1e-4
  init_std: float = 0.02
  dtype: str = "float32"

  def __post_init__(self):
    for name, valid in (("agg_pool", AGG_POOLS), ("modality_transformer", TRANSFORMERS),
                        ("lam_word_states", WORD_STATES), ("lam_word_reduce", REDUCES),
                        ("holistic_output", HOLISTIC_OUTPUTS), ("score", SCORES)):
      if getattr(self, name) not in valid:
        raise ValueError(f"config.model.{name}={getattr(self, name)!r}; valid: {valid}")
    if not self.lam and not self.hrm:
      raise ValueError("config.model: lam=False and hrm=False leave no score")
    if self.score in ("local", "sum") and not self.lam:
      raise ValueError(f"config.model.score={self.score!r} needs lam=True")
    if self.score in ("holistic", "sum") and not self.hrm:
      raise ValueError(f"config.model.score={self.score!r} needs hrm=True")
    if self.lam_steps < 1:
      raise ValueError(f"config.model.lam_steps={self.lam_steps}: K must be >= 1")
    if len(self.experts) != len(self.expert_dims) or not self.experts:
      raise ValueError(f"experts {self.experts} and dims {self.expert_dims} do not match")
    if self.max_temporal_id < 2:
      raise ValueError(f"config.model.max_temporal_id={self.max_temporal_id}: ids 0 and 1 "
                       "are reserved (aggregate, untimed); it must be >= 2")

  def transformer(self) -> layers.TransformerConfig:
    return layers.TransformerConfig(
        embed_dim=self.d_uni, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
        dropout_rate=self.dropout_rate, attention_dropout_rate=self.dropout_rate,
        layer_norm_eps=1e-12, dtype=jnp.dtype(self.dtype))


class GatedEmbedding(nnx.Module):
  """Miech et al. 2018's gated embedding unit: y = W x + b; y ⊙ σ(W' y + b'), L2-normalised."""

  def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs, init: layers.Initializer,
               dtype: Any = jnp.float32):
    self.fc = layers.Linear(in_dim, out_dim, ("embed", None), init=init, rngs=rngs, dtype=dtype)
    self.gate = layers.Linear(out_dim, out_dim, (None, "embed"), init=init, rngs=rngs,
                              dtype=dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., in] -> [..., out] float32 unit vectors."""
    y = self.fc(x)
    return losses.unit(y * jax.nn.sigmoid(self.gate(y)))


class MCHA(nnx.Module):
  """The model; see the module docstring for every equation and option.

  Batch (``families/mcha/view.py``), for each expert e: ``<e>_features`` [B, F_e, D_e] float32,
  ``<e>_mask`` [B, F_e] bool, ``<e>_time`` [B, F_e] int32 temporal ids (1 = untimed/pad),
  ``<e>_pool`` [B, D_e] max over all the expert's rows; ``expert_mask`` [B, n] bool;
  ``tokens``/``token_mask`` [B, L] (one caption per example); ``example_mask`` [B].
  """

  # The prediction functions evaluators may ask for (models.base.PredictFns).
  PREDICT_FNS = ("encode_query", "encode_candidate", "score", "holistic_score", "local_score",
                 "modality_weights")

  def __init__(self, cfg: MCHAConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, n, dt = cfg.d_uni, len(cfg.experts), cfg.dtype
    tcfg = cfg.transformer()
    # Every kernel and table: N(0, init_std²), BERT's initializer_range.
    init = jax.nn.initializers.normal(cfg.init_std)
    linear = functools.partial(layers.Linear, init=init, rngs=rngs, dtype=dt)
    self.text = text.TextEncoder(cfg.text, rngs=rngs)
    self.projections = nnx.List([linear(dim, d, (None, "embed")) for dim in cfg.expert_dims])
    shared = cfg.modality_transformer == "shared"
    tables = 1 if shared else n
    normal = lambda shape: layers.normal(rngs.params(), shape, cfg.init_std)
    self.temporal = nnx.List([layers.param(normal((cfg.max_temporal_id + 1, d)),
                                           (None, "embed")) for _ in range(tables)])
    self.input_norms = nnx.List([layers.LayerNorm(d) for _ in range(tables)])
    self.modality = nnx.List([layers.TransformerStack(tcfg, cfg.num_layers, rngs=rngs)
                              for _ in range(tables)])
    self.expert_types = layers.param(normal((n, d)), (None, "embed"))
    if cfg.hrm:
      self.holistic = layers.TransformerStack(tcfg, cfg.num_layers, rngs=rngs)
      outs = n if cfg.holistic_output == "modalities" else 1
      self.text_geu = nnx.List([GatedEmbedding(cfg.text.hidden, d, rngs=rngs, init=init,
                                               dtype=dt) for _ in range(outs)])
      self.weights_fc = linear(cfg.text.hidden, n, ("embed", None))
    if cfg.lam:
      self.word_proj = linear(cfg.text.hidden, d, ("embed", None))
      # F_g, F_o of Eq. 6 split into their word half (with b_g, b_o) and attended-vector
      # half: F[w, a] + b = (W_w w + b) + W_a a.
      self.gate_w = linear(d, d, ("embed", None))
      self.gate_a = linear(d, d, ("embed", None), use_bias=False)
      self.fuse_w = linear(d, d, ("embed", None))
      self.fuse_a = linear(d, d, ("embed", None), use_bias=False)

  @classmethod
  def create(cls, config: Any, meta: dict[str, Any], *, rngs: nnx.Rngs) -> "MCHA":
    """Experts from ``config.input.experts`` (each must be a dataset modality)."""
    experts = tuple(config.input.experts)
    missing = [e for e in experts if e not in meta["modalities"]]
    if missing:
      raise ValueError(f"config.input.experts {missing} not in the dataset (modalities: "
                       f"{sorted(meta['modalities'])})")
    m = dict(config.model)
    m.pop("name")
    tower = text.TextConfig.from_model_config(m.pop("text"), int(meta["vocab_size"]),
                                              dtype=m.get("dtype", "float32"))
    cfg = MCHAConfig(experts=experts,
                     expert_dims=tuple(int(meta["modalities"][e]) for e in experts),
                     text=tower, **m)
    return cls(cfg, rngs=rngs)

  @classmethod
  def pretrained_entries(cls, config: Any, data_dir: str | None) -> list[dict[str, Any]]:
    """The checkpoint ``config.model.text.checkpoint`` names, loaded into ``text``."""
    del data_dir
    return text.tower_entries(config)

  # ------------------------------------------------------------------------------------
  # Video side.

  def _project(self, j: int, x: jax.Array) -> jax.Array:
    """F_j: [..., D_j] -> [..., d_uni]; L2-normalised with ``projection_l2`` (MMT)."""
    u = self.projections[j](x)
    return losses.unit(u) if self.cfg.projection_l2 else u

  def _video_rep(self, batch: Batch, train: bool, key: jax.Array | None) -> jax.Array:
    """V_rep [B, n, d] (Eq. 1-2); rows of missing experts are 0 (and masked downstream)."""
    cfg = self.cfg
    avail = batch["expert_mask"].astype(bool)
    shared = cfg.modality_transformer == "shared"
    seqs, masks = [], []
    for j, e in enumerate(cfg.experts):
      t = 0 if shared else j
      ok = avail[:, j]
      fmask = batch[f"{e}_mask"].astype(bool) & ok[:, None]
      x = jnp.where(fmask[..., None], batch[f"{e}_features"], 0.0)
      u = self._project(j, x)                                              # Eq. 1
      if cfg.agg_pool == "raw":
        agg = self._project(j, jnp.where(ok[:, None], batch[f"{e}_pool"], 0.0))
      else:
        agg = layers.masked_max(u, fmask)
      tokens = jnp.concatenate([agg[:, None], u], axis=1)
      tid = jnp.clip(batch[f"{e}_time"].astype(jnp.int32), 1, cfg.max_temporal_id)
      tid = jnp.concatenate([jnp.zeros_like(tid[:, :1]), tid], axis=1)
      h = tokens + jnp.take(self.temporal[t][...], tid, axis=0)
      if shared:
        h = h + self.expert_types[...][j]
      seqs.append(h)
      masks.append(jnp.concatenate([ok[:, None], fmask], axis=1))
    keys = [None] * (len(seqs) + 1) if key is None else list(jax.random.split(key, len(seqs) + 1))
    if shared:
      h = self.input_norms[0](jnp.concatenate(seqs, axis=1))
      h = layers.dropout(h, cfg.dropout_rate, keys[-1])
      out = self.modality[0](h, jnp.concatenate(masks, axis=1), train=train, rngs=keys[0])
      starts = [0]
      for s in seqs[:-1]:
        starts.append(starts[-1] + s.shape[1])
      rep = jnp.stack([out[:, s] for s in starts], axis=1)
    else:
      reps = []
      for j, (h, m) in enumerate(zip(seqs, masks)):
        h = layers.dropout(self.input_norms[j](h), cfg.dropout_rate,
                           None if keys[j] is None else jax.random.fold_in(keys[j], 1))
        reps.append(self.modality[j](h, m, train=train, rngs=keys[j])[:, 0])  # Eq. 2
      rep = jnp.stack(reps, axis=1)
    return jnp.where(avail[..., None], rep, 0.0)

  def _video(self, batch: Batch, train: bool = False,
             key: jax.Array | None = None) -> base.Encoding:
    """Everything that depends on the video only (``encode_candidate``)."""
    cfg = self.cfg
    k_rep = k_hol = None
    if key is not None:
      k_rep, k_hol = jax.random.split(key)
    avail = batch["expert_mask"].astype(bool)
    rep = self._video_rep(batch, train, k_rep)
    out = {"avail": avail}
    if cfg.hrm:                                                             # Eq. 11
      agg = layers.masked_max(rep, avail)
      seq = jnp.concatenate([agg[:, None], rep + self.expert_types[...][None]], axis=1)
      mask = jnp.concatenate([jnp.any(avail, axis=1, keepdims=True), avail], axis=1)
      vh = self.holistic(seq, mask, train=train, rngs=k_hol)
      out["holistic"] = losses.unit(vh[:, 1:] if cfg.holistic_output == "modalities"
                                    else vh[:, :1])
    if cfg.lam:
      out["rep"] = rep
      out["rep_unit"] = losses.unit(rep)
      out["gate_v"] = self.gate_a(rep)       # W_a m_j: Σ_j α_j (W_a m_j) = W_a a
      out["fuse_v"] = self.fuse_a(rep)
    return out

  # ------------------------------------------------------------------------------------
  # Text side.

  def _text(self, batch: Batch, train: bool = False,
            key: jax.Array | None = None) -> base.Encoding:
    """Everything that depends on the text only (``encode_query``)."""
    cfg = self.cfg
    k_text = k_w = None
    if key is not None:
      k_text, k_w = jax.random.split(key)
    mask = batch["token_mask"].astype(bool)
    hidden = self.text(batch["tokens"], mask, train=train, rngs=k_text)
    out = {}
    if cfg.hrm:
      cls = hidden.cls
      out["text_holistic"] = jnp.stack([g(cls) for g in self.text_geu], axis=1)  # Eq. 10
      logits = self.weights_fc(layers.dropout(cls, cfg.dropout_rate, k_w))
      out["weight_probs"] = jax.nn.softmax(logits, axis=-1)
    if cfg.lam:
      words = self.word_proj(hidden.hidden)
      pos = jnp.arange(mask.shape[1])[None]
      last = jnp.sum(mask, axis=1, keepdims=True) - 1
      word_mask = mask if cfg.lam_special_tokens else mask & (pos > 0) & (pos != last)
      out["words"] = jnp.where(word_mask[..., None], words, 0.0)
      out["word_mask"] = word_mask
      out["gate_w"] = self.gate_w(words)
      out["fuse_w"] = self.fuse_w(words)
    return out

  def encode_query(self, batch: Batch) -> base.Encoding:
    """Captions / paragraphs -> one-sided encodings (deterministic)."""
    return self._text(batch)

  def encode_candidate(self, batch: Batch) -> base.Encoding:
    """Videos -> one-sided encodings (deterministic)."""
    return self._video(batch)

  # ------------------------------------------------------------------------------------
  # Pairwise part.

  def modality_weights(self, query: base.Encoding, cand: base.Encoding) -> jax.Array:
    """[Bq, Bc, n] holistic modality weights w_j: the text softmax (``keep_missing_modalities``,
    MMT), or the text softmax × availability renormalised over available experts (exactly 0
    for a missing expert; all 0 if none is available)."""
    probs = query["weight_probs"][:, None, :]
    if self.cfg.keep_missing_modalities:
      return jnp.broadcast_to(probs, probs.shape[:1] + cand["avail"].shape)
    w = probs * cand["avail"][None].astype(jnp.float32)
    return w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-12)

  def holistic_score(self, query: base.Encoding, cand: base.Encoding) -> jax.Array:
    """S^h [Bq, Bc] float32 (Eq. 10-11 with MMT's weighted per-expert cosines)."""
    cos = jnp.einsum("qjd,cjd->qcj", query["text_holistic"], cand["holistic"],
                     precision=jax.lax.Precision.HIGHEST)
    if self.cfg.holistic_output == "aggregate":
      return cos[..., 0]
    if not self.cfg.keep_missing_modalities:
      cos = jnp.where(cand["avail"][None], cos, 0.0)
    return jnp.sum(self.modality_weights(query, cand) * cos, axis=-1)

  def local_score(self, query: base.Encoding, cand: base.Encoding) -> jax.Array:
    """S(T^w, V_rep) [Bq, Bc] float32 of Eq. 3-8 for every pair (fast path).

    Shapes: q = Bq texts with L words, c = Bc videos with n experts, d = d_uni; the
    per-pair tensors are [Bq, Bc, L, d]. Positions where ``word_mask`` is False are never
    read into the score, so the token axis of ``words``/``word_mask``/``gate_w``/``fuse_w``
    may be cut past a block's longest caption (the evaluator's ``trim_tokens``,
    ``configs/mcha/__init__.py``): the same score up to float32 reassociation.
    """
    cfg = self.cfg
    hp = jax.lax.Precision.HIGHEST
    wmask = query["word_mask"][:, None, :, None]                          # [q, 1, L, 1]
    avail = cand["avail"][None, :, None, :]                               # [1, c, 1, n]
    words = query["words"][:, None]                                       # [q, 1, L, d]
    gate_w, fuse_w = query["gate_w"][:, None], query["fuse_w"][:, None]
    total = 0.0
    for k in range(cfg.lam_steps):
      if k == 0:   # T^w_0 is one-sided: [q, L, d] x [c, n, d]
        s = jnp.einsum("qld,cjd->qclj", losses.unit(query["words"]), cand["rep_unit"],
                       precision=hp)
      else:
        s = jnp.einsum("qcld,cjd->qclj", losses.unit(words), cand["rep_unit"],
                       precision=hp)                                              # Eq. 3
      r = jnp.where(wmask, jax.nn.relu(s), 0.0)
      # Eq. 4; the max keeps the gradient finite where every word's relu(s) is 0.
      sumsq = jnp.maximum(jnp.sum(r * r, axis=2, keepdims=True), 1e-30)
      sbar = r / (jnp.sqrt(sumsq) + cfg.lam_eps)
      logits = jnp.where(avail, cfg.lam_lambda * sbar, jnp.finfo(jnp.float32).min)
      alpha = jnp.where(avail, jax.nn.softmax(logits, axis=-1), 0.0)      # Eq. 5
      a = jnp.einsum("qclj,cjd->qcld", alpha, cand["rep"], precision=hp)
      last = k == cfg.lam_steps - 1
      new = None
      if not last or cfg.lam_word_states == "updated":                   # Eq. 6
        g = jax.nn.sigmoid(gate_w + jnp.einsum("qclj,cjd->qcld", alpha, cand["gate_v"],
                                               precision=hp))
        o = jnp.tanh(fuse_w + jnp.einsum("qclj,cjd->qcld", alpha, cand["fuse_v"],
                                         precision=hp))
        new = g * words + (1.0 - g) * o
      state = new if cfg.lam_word_states == "updated" else words
      cos = jnp.sum(losses.unit(state) * losses.unit(a), axis=-1)              # Eq. 8
      cos = jnp.where(wmask[..., 0], cos, 0.0)
      step = jnp.sum(cos, axis=-1)
      if cfg.lam_word_reduce == "mean":
        step = step / jnp.maximum(jnp.sum(wmask[..., 0], axis=-1), 1)
      total = total + step
      if not last:                                                        # Eq. 7
        words = new
        gate_w = self.gate_w(words)
        fuse_w = self.fuse_w(words)
    return total

  def score(self, query: base.Encoding, cand: base.Encoding) -> jax.Array:
    """[Bq, Bc] float32 inference score (``config.model.score``)."""
    cfg = self.cfg
    if cfg.score == "holistic":
      return self.holistic_score(query, cand)
    if cfg.score == "local":
      return self.local_score(query, cand)
    return self.holistic_score(query, cand) + cfg.score_local_weight * self.local_score(
        query, cand)

  # ------------------------------------------------------------------------------------
  # Training.

  def __call__(self, batch: Batch, *, train: bool = False,
               rngs: jax.Array | None = None) -> dict[str, jax.Array]:
    """All B x B similarities of a batch (one caption per video).

    Returns:
      ``holistic`` [B, B] S^h (hrm), ``local`` [B, B] S (lam), rows texts, columns videos;
      ``modality_weights`` [B, n] of the matching pairs (hrm, modalities output).
    """
    k_text = k_video = None
    if train and rngs is not None:
      k_text, k_video = jax.random.split(rngs)
    q = self._text(batch, train, k_text)
    c = self._video(batch, train, k_video)
    out = {}
    if self.cfg.hrm:
      out["holistic"] = self.holistic_score(q, c)
      if self.cfg.holistic_output == "modalities":
        w = self.modality_weights(q, c)
        out["modality_weights"] = jnp.diagonal(w, axis1=0, axis2=1).T
    if self.cfg.lam:
      out["local"] = self.local_score(q, c)
    return out

  def loss(self, out: dict[str, jax.Array], batch: Batch,
           cfg: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Eq. 13: L_Mar(S^h) + β L_Tri(S); terms logged unweighted as ``mar`` and ``tri``."""
    ex, groups = batch["example_mask"].astype(bool), batch.get("video_index")
    terms, total = {}, 0.0
    if "holistic" in out:
      terms["mar"] = losses.bidirectional_hinge(out["holistic"], ex, cfg.margin_mar,
                                                reduce=cfg.reduce, groups=groups)
      total = total + terms["mar"]
    if "local" in out:
      terms["tri"] = losses.bidirectional_hinge(out["local"], ex, cfg.margin_tri,
                                                hardest_negative=True, reduce=cfg.reduce,
                                                groups=groups)
      total = total + cfg.beta * terms["tri"]
    return total, terms
