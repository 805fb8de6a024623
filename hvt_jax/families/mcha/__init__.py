"""MCHA: multi-expert text-video retrieval with hierarchical alignment: model, view and
its multi-caption retrieval evaluator (README.md here)."""

from __future__ import annotations

from hvt_jax import families
from hvt_jax.evaluation import tables
from hvt_jax.families.mcha import model, retrieval, view
from hvt_jax.input import pipeline


def demo_report(results: dict[str, list[dict[str, float]]]) -> str:
  """hvt-demo's table: text->video and video->text retrieval."""
  columns = list(dict.fromkeys(c for runs in results.values() for m in runs
                               for c in tables.metric_columns(m)))
  return "\n".join(["Text->video (t2v) and video->text (v2t) retrieval on the demo val split",
                    tables.mean_std_table(results, columns)])


FAMILY = families.Family(
    name="mcha",
    models={"mcha": model.MCHA},
    views={"mcha": pipeline.View(view.train_view, stat_keys=("truncated",))},
    evaluators=retrieval.EVALUATORS,
    demo=families.Demo(models=("mcha",), config="configs/mcha/demo.py", dataset="experts",
                       report=demo_report),
)
