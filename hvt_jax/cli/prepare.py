"""`hvt-prepare <dataset> --output DATA_DIR [flags]`: converts a dataset to canonical TFRecords.

The friendly front end of the TFDS builders in `data_prep/` (`tfds build` runs the same
builders from a manual_dir): each dataset module exposes `add_arguments(parser)` and
`run(args) -> dataset dir`, which fills its builder from the flags (`--num-workers N` /
`--beam-options` run it on Apache Beam). Each is registered by name in `CONVERTERS` (module
paths, imported only when that dataset is converted, so one converter's optional
dependencies never break another). `hvt-prepare demo --output DIR` writes the synthetic demo dataset.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> converter module. Append one line per dataset.
CONVERTERS: dict[str, str] = {
    "demo": "data_prep.demo",
    "activitynet_captions": "data_prep.activitynet_captions",
    "msrvtt": "data_prep.mmt_experts",
    "lsmdc": "data_prep.mmt_experts",
    "activitynet_experts": "data_prep.mmt_experts",
    "activitynet_labels": "data_prep.activitynet_labels",
    "didemo": "data_prep.didemo",
    "tvr": "data_prep.tvr",
}


def _converter(name: str):
  if name not in CONVERTERS:
    raise SystemExit(f"hvt-prepare: unknown dataset {name!r}; valid: "
                     f"{', '.join(sorted(CONVERTERS))}")
  return importlib.import_module(CONVERTERS[name])


def build_parser(dataset: str | None = None) -> argparse.ArgumentParser:
  """The argument parser; only `dataset`'s converter is imported to add its flags."""
  parser = argparse.ArgumentParser(
      prog="hvt-prepare",
      description="Convert a dataset to hvt_jax TFRecords (canonical schema).")
  sub = parser.add_subparsers(dest="dataset", metavar="DATASET",
                              help=f"one of: {', '.join(sorted(CONVERTERS))}")
  sub.required = True
  for name in sorted(CONVERTERS):
    p = sub.add_parser(name, help=f"convert {name} ({CONVERTERS[name]})")
    if name == dataset:
      _converter(name).add_arguments(p)
      p.add_argument("--verbosity", "-v", type=int, default=None,
                     help="also show every library's log records from this absl level up "
                          "(-1 warning, 0 info, 1 debug); default: our own warnings and "
                          "every library's errors")
  return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The parsed flags of `argv` (arguments without the program name; default
  sys.argv[1:]); an unknown dataset exits with the list of valid names."""
  argv = list(sys.argv[1:] if argv is None else argv)
  dataset = next((a for a in argv if not a.startswith("-")), None)
  if dataset is not None and dataset not in CONVERTERS:
    _converter(dataset)  # Exits with the list of valid names.
  return build_parser(dataset).parse_args(argv)


def prepare(argv: Sequence[str] | None = None) -> str:
  """Parses `argv` and runs the named converter.

  Args:
    argv: arguments without the program name (default: sys.argv[1:]).

  Returns:
    The dataset directory written.
  """
  args = parse_args(argv)
  return _converter(args.dataset).run(args)


def main(argv: Sequence[str] | None = None) -> None:
  """Entry point of the `hvt-prepare` console script (returns None: exit status 0).

  A console-script wrapper calls `sys.exit(main())`, which would turn a returned path into
  an error exit, so the dataset dir is printed by the converter instead. A user error (bad
  flag value, missing/corrupt annotation or feature file: ValueError or OSError, which
  includes FeatureFileError) prints `hvt-prepare: error: <message>` to stderr and exits with
  status 2, like argparse's own errors, instead of a traceback. The console shows TFDS's
  progress bars, the summary, our own warnings and every library's errors
  (`hvt_jax.cli.common.console_logging`; `--verbosity N` shows more).
  """
  from hvt_jax.cli import common  # pylint: disable=g-import-not-at-top
  try:
    args = parse_args(argv)
    common.console_logging(args.verbosity)
    _converter(args.dataset).run(args)
  except (ValueError, OSError) as e:
    print(f"hvt-prepare: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
