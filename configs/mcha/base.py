"""MCHA (hvt_jax/models/mcha.py): the paper's §4.2 settings. The model's docstring names
every equation, masking rule and option; the choices the paper leaves open are keys here
with their defaults.

``make(arg, ...)`` is the recipe behind ``configs/mcha/*.py`` (not a config file).
``arg``: ``runlocal`` (tiny sizes: tests), ``fsdp``, and Table 4's ablations: ``lam=false``
(w/o LAM), ``hrm=false`` (w/o HRM), ``k=1|2`` (LAM steps), ``shared`` (one multi-modal
transformer instead of the modality-specific ones, "w/o MSTs"); ``score=holistic|local|sum``
picks the inference score.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common
from hvt_jax.models import text

ARGS = dict(runlocal=False, fsdp=False, lam=True, hrm=True, k=int, shared=False,
            score=str)
# MMT's seven MSR-VTT/LSMDC experts; face, ocr and speech rows carry no time in MMT.
MMT_EXPERTS = ("face", "ocr", "rgb", "s3d", "scene", "speech", "vggish")
MMT_UNTIMED = ("face", "ocr", "speech")


def make(arg: str | None, *, data_dir: str, experts: tuple[str, ...],
         untimed_experts: tuple[str, ...] = (), eval_split: str = "test",
         max_tokens: int = 30, max_words: int = 30, max_temporal_id: int = 31,
         paragraph: bool = False, beta: float = 1e-4,
         decay_rate: float = 0.95) -> ml_collections.ConfigDict:
  """MCHA on ``data_dir`` with ``experts`` (§4.2: 30 feature tokens and 30 words on
  MSR-VTT/LSMDC, 100 and 100 on ActivityNet; β 1e-4 / 1e-5; lr ×0.95 / ×0.90 per 1k steps)."""
  a = common.parse_arg(arg, **ARGS)
  c = ml_collections.ConfigDict()
  common.trainer_defaults(c, fsdp=a.fsdp)
  c.model = dict(
      name="mcha",
      # Paper: bert-base-uncased fine-tuned with dropout 0.1; offline default MiniLM (any HF
      # BERT directory works; num_layers keeps its first k layers).
      text=dict(checkpoint=text.DEFAULT_CHECKPOINT, num_layers=config_dict.placeholder(int),
                dropout_rate=0.1, attention_dropout_rate=0.1),
      d_uni=1024, num_layers=2, num_heads=4, mlp_dim=3072, dropout_rate=0.1,
      max_temporal_id=max_temporal_id,
      agg_pool="raw",                    # MMT: F_j(max over all rows) | "projected"
      modality_transformer="specific",   # | "shared" (Table 4 "w/o MSTs")
      lam=True, hrm=True,
      lam_steps=3, lam_lambda=9.0, lam_eps=1e-8,
      lam_word_states="input",           # the states that attended (IMRAM) | "updated"
      lam_word_reduce="sum",             # Eq. 8 | "mean"
      lam_special_tokens=False,          # [CLS]/[SEP] are not words
      holistic_output="modalities",      # MMT-style weighted experts | "aggregate"
      score="holistic",                  # "Holistic Ranking Module" | "local" | "sum"
      score_local_weight=beta,           # score="sum": S^h + this × S
      dtype="float32")
  c.input = dict(data_dir=data_dir, dataset="", train_split="train", experts=tuple(experts),
                 untimed_experts=tuple(untimed_experts), max_feature_tokens=max_tokens,
                 max_words=max_words, paragraph=paragraph, shuffle_buffer=4096)
  # Eq. 13: Θ = 0.05 (Eq. 12), Δ = 0.2 (Eq. 9), sums as written ("mean": MMT's).
  c.loss = dict(margin_mar=0.05, margin_tri=0.2, beta=beta, reduce="sum")
  # Adam 5e-5, ×decay_rate every 1,000 steps, 100k steps, batch 32 (§4.2).
  c.schedule = dict(name="exponential_steps", learning_rate=5e-5, decay_rate=decay_rate,
                    transition_steps=1000)
  c.optax = dict(b1=0.9, b2=0.999, eps=1e-8, grad_clip=0.0)
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_train_steps = 100_000
  c.num_epochs = 0
  # Texts of their own: every caption (or one paragraph) a query; v2t = best of a video's
  # captions; the experts' holistic weights (Table 5).
  c.evals = dict(test=dict(type="retrieval", split=eval_split, pred="score",
                           prefix="t2v", reverse_prefix="v2t", video_view="video",
                           query_view="paragraph" if paragraph else "caption",
                           caption_index_file="", modality_weights=True,
                           top_k=10, log_steps=0, query_block=16, cand_block=64))
  c.model.lam, c.model.hrm = a.lam, a.hrm
  if not a.hrm:
    c.model.score = "local"
  if not a.lam:
    c.model.score = "holistic"
  if a.k is not None:
    c.model.lam_steps = a.k
  if a.shared:
    c.model.modality_transformer = "shared"
  if a.score:
    c.model.score = a.score
  if a.runlocal:
    # One layer per transformer keeps the step's compile time down (tests).
    c.model.text = dict(text.RUNLOCAL, num_layers=1, dropout_rate=0.1,
                        attention_dropout_rate=0.1)
    c.model.update(d_uni=32, num_heads=4, mlp_dim=64, num_layers=1)
    c.input.update(max_feature_tokens=6, max_words=12, shuffle_buffer=64)
    common.runlocal_trainer(c)
    c.evals.test.update(query_block=8, cand_block=8)
  return c
