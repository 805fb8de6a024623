"""MCHA: multi-expert text-video retrieval with hierarchical alignment: model and views;
evaluated by the shared retrieval evaluator with texts of their own (README.md here)."""

from __future__ import annotations

from hvt_jax import families
from hvt_jax.evaluation import tables
from hvt_jax.families.mcha import model, view
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
    # Training: the experts and one sampled caption per video. Evaluation (the retrieval
    # evaluator's video_view/query_view): the videos; every caption, or one paragraph.
    views={"mcha": pipeline.View(view.train_view, stat_keys=("truncated",)),
           "video": pipeline.View(view.video_view, stat_keys=("truncated",)),
           "caption": pipeline.View(view.caption_view, per_row="tokens",
                                    stat_keys=("truncated",)),
           "paragraph": pipeline.View(view.paragraph_view, stat_keys=("truncated",))},
    # hvt-demo --models mcha: MCHA and Table 4's "w/o LAM" and "w/o HRM" side by side.
    demo=families.Demo(models=("mcha",), config="configs/mcha/demo.py", dataset="experts",
                       report=demo_report,
                       ablations=(("w/o LAM", "lam=false"), ("w/o HRM", "hrm=false"))),
)
