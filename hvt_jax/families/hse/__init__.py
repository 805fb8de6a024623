"""HSE and its flat baseline FSE (Zhang et al., ECCV 2018), with the HSE heads
(action classifier, captioner): models, views, HSE-only evaluators (README.md here)."""

from __future__ import annotations

from hvt_jax import families
from hvt_jax.evaluation import tables
from hvt_jax.families.hse import captioning, classification, heads, model, tasks, view
from hvt_jax.input import pipeline

_STATS = ("truncated", "empty_segments")
_HSE = pipeline.View(view.hse_view, stat_keys=_STATS)


def demo_report(results: dict[str, list[dict[str, float]]]) -> str:
  """hvt-demo's tables: p2v/v2p retrieval (without R@10), then any other evaluation."""
  columns = list(dict.fromkeys(c for runs in results.values() for m in runs
                               for c in tables.metric_columns(m) if not c.endswith("R@10")))
  ranking = [c for c in columns if c.split("/")[0] in ("p2v", "v2p")]
  lines = ["Paragraph->video (p2v) and video->paragraph (v2p) retrieval on the demo val split",
           tables.mean_std_table(results, ranking)]
  rest = [c for c in columns if c not in ranking]
  if rest:   # the other evaluators of the demo config (zero-shot, ...); curves: eval/val/
    lines += ["", "Other evaluations on the same split", tables.mean_std_table(results, rest)]
  return "\n".join(lines)


FAMILY = families.Family(
    name="hse",
    models={"hse": model.HSE, "fse": model.FSE, "hse_classifier": heads.HSEClassifier,
            "hse_captioner": heads.HSECaptioner},
    views={"hse": _HSE, "fse": _HSE,
           "hse_classifier": pipeline.View(view.labelled_view, stat_keys=_STATS),
           "hse_captioner": pipeline.View(view.caption_view, host_keys=("references",),
                                          stat_keys=_STATS),
           # The retrieval evaluator's incomplete observation (observe_first=N): a factory.
           "observe_first": tasks.observe_first_view},
    evaluators={**tasks.EVALUATORS, "classify": classification.ClassificationEvaluator,
                "caption": captioning.CaptioningEvaluator},
    demo=families.Demo(models=("hse", "fse"), config="configs/hse/demo.py", dataset="hse",
                       report=demo_report),
)
