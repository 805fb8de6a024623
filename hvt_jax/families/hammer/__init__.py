"""HAMMER and its flat baseline FLAT (moment localization in a video corpus): models and
views; evaluated by the shared ``moments`` evaluator (README.md here)."""

from __future__ import annotations

from hvt_jax import families
from hvt_jax.evaluation import tables
from hvt_jax.families.hammer import model, view
from hvt_jax.input import pipeline

_HAMMER = pipeline.View(view.hammer_view, per_row="tokens",
                        stat_keys=("truncated", "empty_segments", "zero_length"))

# The demo's tables: the paper's Tables 1-3 columns, and Fig. 2-3 per duration bucket.
MOMENT_COLUMNS = ("vr/R@1", "vr/R@10", "vr/R@100", "vr/MdR", "tl/mIoU", "tl/R@1@IoU0.5",
                  "svmr/R@1@IoU0.5", "svmr/R@1@IoU0.7", "vcmr/R@1@IoU0.5",
                  "vcmr/R@10@IoU0.5", "vcmr/R@100@IoU0.5", "vcmr/R@10@IoU0.7")
BUCKET_COLUMNS = ("num_queries", "vr/MdR", "vr/R@10", "tl/mIoU", "vcmr/R@10@IoU0.5",
                  "vcmr/R@100@IoU0.5", "vcmr/R@100@IoU0.7")


def moment_tables(results: dict[str, list[dict[str, float]]]) -> str:
  """The HAMMER/FLAT tables: overall, then one row per (model, duration bucket)."""
  lines = ["Moment localization in the demo corpus (val): VR, single-video TL, SVMR, VCMR",
           tables.mean_std_table(results, MOMENT_COLUMNS)]
  buckets: dict[str, list[dict[str, float]]] = {}
  for name, runs in results.items():
    names = sorted({k.split("/")[1] for k in runs[0] if k.startswith("by_duration/")},
                   key=lambda b: float(b.split("-")[0].rstrip("s+")))   # by lower edge
    for b in names:
      buckets[f"{name} {b}"] = [{c: r[f"by_duration/{b}/{c}"] for c in BUCKET_COLUMNS
                                 if f"by_duration/{b}/{c}" in r} for r in runs]
  if buckets:
    lines += ["", "By video duration (buckets: quartiles of the queries' video durations)",
              tables.mean_std_table(buckets, BUCKET_COLUMNS)]
  return "\n".join(lines)


FAMILY = families.Family(
    name="hammer",
    models={"hammer": model.HAMMER, "flat": model.FLAT},
    # Training: one example per (sentence, video); evaluation (the moments evaluator's
    # ``video_view``/``query_view``): one example per video, one per query (text only).
    views={"hammer": _HAMMER, "flat": _HAMMER,
           "video": pipeline.View(view.video_view),
           "query": pipeline.View(view.query_view, per_row="tokens",
                                  host_keys=("sentence_id",), stat_keys=("truncated",))},
    demo=families.Demo(models=("hammer", "flat"), config="configs/hammer/demo.py",
                       dataset="moments", report=moment_tables),
)
