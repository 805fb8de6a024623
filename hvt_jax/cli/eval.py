"""hvt-eval --config ... --workdir DIR [--step N] [--split NAME].

Evaluates a checkpoint, prints a table and writes DIR/eval/<split>/metrics.json (+ plots).
"""

from __future__ import annotations

from absl import flags

from hvt_jax import train
from hvt_jax.cli import common

_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_SPLIT = flags.DEFINE_multi_string("split", None, "Split(s) to evaluate (default: config.evals).")


def _main(argv):
  del argv
  common.user_errors("hvt-eval", _run)


def _run():
  config, workdir = common.startup()
  if _QUERY.value or _QUERIES.value: return _query(config, workdir)
  step, results = train.evaluate_checkpoint(config, workdir, step=_STEP.value,
                                            splits=_SPLIT.value)
  print(f"{workdir}: checkpoint step {step}")
  print(common.results_table(config.model.name, results))


def main():
  common.run_app("hvt-eval", _main)


# --------------------------------------------------------------------------------------
# Free-text queries against the evaluated corpus (hvt_jax.evaluation.query).

_QUERY = flags.DEFINE_multi_string(
    "query", None, "Free-text query (repeatable): prints the top videos of the split (and, "
    "for moment models, the top moments) instead of evaluating.")
_QUERIES = flags.DEFINE_string("queries", None, "File of free-text queries, one per line.")
_TOP_K = flags.DEFINE_integer("top-k", 5, "Videos (and moments) printed per query.")


def _query(config, workdir):
  from hvt_jax.evaluation import query  # pylint: disable=g-import-not-at-top
  texts = query.read_queries(_QUERY.value, _QUERIES.value)
  step, answers = query.run(config, workdir, texts, step=_STEP.value, splits=_SPLIT.value,
                            top_k=_TOP_K.value)
  print(query.format_answers(answers, step))


if __name__ == "__main__":
  main()
