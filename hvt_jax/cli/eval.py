"""hvt-eval --config ... --workdir DIR [--step N|best] [--split NAME] [--follow ...].

Evaluates a checkpoint, prints a table and writes DIR/eval/<split>/metrics.json (+ plots).
``--workdir`` may also be a parameters-only checkpoint (an ``hvt-export`` directory).

With ``--follow``: an evaluation job beside the trainer (``hvt_jax.follow``): evaluates each
checkpoint as it is committed, writes DIR/eval/<split>/step_<N>/metrics.json, logs to
TensorBoard in DIR/eval/follow-<splits>/, keeps DIR/best (``config.evals.<name>.best``), and
stops after the run's final step or ``--timeout`` seconds without a new checkpoint.
"""

from __future__ import annotations

import sys

from absl import flags

from hvt_jax import train
from hvt_jax.cli import common

_STEP = flags.DEFINE_string("step", None, "Checkpoint step, or 'best' (default: latest).")
_SPLIT = flags.DEFINE_multi_string("split", None, "Split(s) to evaluate (default: config.evals).")
_FOLLOW = flags.DEFINE_bool("follow", False, "Evaluate each checkpoint as the trainer commits "
                            "it, until training finishes (docs/evaluation.md).")
_TIMEOUT = flags.DEFINE_float("timeout", 3600.0, "--follow: stop after this many seconds "
                              "without a new checkpoint.")
_LATEST_ONLY = flags.DEFINE_bool("latest_only", False, "--follow: when behind, evaluate only "
                                 "the newest checkpoint (skip the ones in between).")
_POLL = flags.DEFINE_float("poll", 10.0, "--follow: seconds between looks for new "
                           "checkpoints.")


def _main(argv):
  del argv
  common.user_errors("hvt-eval", _run)


def _step(value: str | None) -> int | str | None:
  """--step: None, "best" or a step number (else a ValueError naming the flag)."""
  if value is None or value == "best":
    return value
  if not value.isdigit():
    raise ValueError(f"--step={value!r}: a step number or 'best'")
  return int(value)


def check_modes(given: set[str], step: int | str | None) -> str:
  """The mode of a command line: "query", "follow" or "eval".

  Args:
    given: the names of the flags given on the command line.
    step: ``--step`` (``_step``).

  Raises:
    ValueError: an option of one mode given in another (it would be silently ignored):
      --timeout/--latest_only/--poll without --follow, --top-k without --query/--queries,
      --query with --follow, --step with --follow.
  """
  query, follow = bool(given & {"query", "queries"}), "follow" in given
  for name in ("timeout", "latest_only", "poll"):
    if name in given and not follow:
      raise ValueError(f"--{name} is an option of --follow")
  if "top-k" in given and not query:
    raise ValueError("--top-k is an option of --query / --queries")
  if query and follow:
    raise ValueError("--query answers from one checkpoint: drop --follow")
  if follow and step is not None:
    raise ValueError("--follow evaluates every new step: drop --step")
  return "query" if query else "follow" if follow else "eval"


def _run():
  config, workdir = common.startup()
  step = _step(_STEP.value)
  given = {f.name for f in (_TIMEOUT, _LATEST_ONLY, _POLL, _TOP_K, _FOLLOW)
           if flags.FLAGS[f.name].present and (f is not _FOLLOW or _FOLLOW.value)}
  given |= {name for name, flag in (("query", _QUERY), ("queries", _QUERIES)) if flag.value}
  mode = check_modes(given, step)
  if mode == "query":
    return _query(config, workdir, step)
  if mode == "follow":
    from hvt_jax import follow  # pylint: disable=g-import-not-at-top

    def show(n, results):
      print(f"{workdir}: checkpoint step {n}")
      print(common.results_table(config.model.name, results), flush=True)

    follow.follow(config, workdir, splits=_SPLIT.value, timeout=_TIMEOUT.value,
                  latest_only=_LATEST_ONLY.value, poll=_POLL.value,
                  say=lambda line: print(f"hvt-eval: {line}", file=sys.stderr, flush=True),
                  on_result=show)
    return
  best = step == "best"
  step, results = train.evaluate_checkpoint(config, workdir, step=step, splits=_SPLIT.value)
  print(f"{workdir}: checkpoint step {step}{' (best)' if best else ''}")
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


def _query(config, workdir, step):
  from hvt_jax.evaluation import query  # pylint: disable=g-import-not-at-top
  texts = query.read_queries(_QUERY.value, _QUERIES.value)
  step, answers = query.run(config, workdir, texts, step=step, splits=_SPLIT.value,
                            top_k=_TOP_K.value)
  print(query.format_answers(answers, step))


if __name__ == "__main__":
  main()
