"""hvt-export --workdir RUN [--step N|best] --output DIR: a model to share, for inference.

Writes DIR as a parameters-only checkpoint (``hvt_jax.checkpoints``: ``DIR/<N>/`` and
``DIR/model.json``, no optimizer state) of the run's latest step, step N or its best
(``RUN/best``), plus what it needs besides the dataset's splits:

* ``DIR/config.py``: the run's recorded config (its latest ``config*.json``), a config file
  for ``--config``; the text tower's checkpoint, if any, points at ``DIR/text``;
* ``DIR/vocab/``: the dataset's vocabulary and metadata (``vocab.txt``, ``metadata.json``:
  tokenizer, vocabulary size, splits);
* ``DIR/text/``: the Hugging Face text tower's config and tokenizer files (not its weights,
  which are in the parameters), for models with one.

``hvt-eval --config DIR/config.py --workdir DIR`` evaluates it (on the dataset of
``config.input.data_dir``, or another one given with ``--config.input.data_dir``) and
``config.init_from`` reads it (``{"source": DIR, "format": "checkpoint"}``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
from collections.abc import Sequence

CONFIG_TEMPLATE = '''"""The config of an hvt_jax export: {source}, step {step} (hvt-export).

  hvt-eval --config {here}/config.py --workdir {here} [--config.input.data_dir=DATA]
"""

import json
import os

import ml_collections

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG = json.loads({config!r})


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict(_CONFIG)
{text}  return c
'''

_TEXT_LINES = (  # the text tower's config and tokenizer, exported beside config.py
    '  c.model.text.checkpoint = os.path.join(_HERE, "text")\n')

# Files of a Hugging Face checkpoint directory that are weights (in the parameters already).
_WEIGHTS = (".safetensors", ".bin", ".h5", ".msgpack", ".ckpt", ".pt", ".pth", ".onnx")


def export(workdir: str, output: str, step: int | str | None = None) -> str:
  """Writes the export (module doc) of ``workdir``'s step ``step`` (None: the latest; an int;
  ``"best"``) to ``output``; returns ``output``.

  Raises:
    FileNotFoundError: no run, no recorded config, no such step, or the dataset or text
      checkpoint the config names is missing.
    ValueError: ``output`` exists and is not empty, or the step is incomplete.
  """
  from hvt_jax import checkpoints, train  # pylint: disable=g-import-not-at-top
  from hvt_jax.input import pipeline, reader  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
    raise ValueError(f"--output {output} exists and is not empty: give a new directory")
  recorded = train.recorded_config(workdir)
  step_dir, step = train.locate(workdir, step)
  config = ml_collections.ConfigDict(recorded)
  data_dir = pipeline.dataset_info(config)[0]
  text = str(config.model.get("text", {}).get("checkpoint") or "")
  text_dir = None
  if text:
    from hvt_jax.models import text as text_lib  # pylint: disable=g-import-not-at-top
    text_dir = text_lib.resolve_checkpoint(text)
  params = checkpoints.restore(step_dir)["params"]
  info = {"source": os.path.abspath(workdir), "source_step_dir": step_dir,
          "exported": datetime.datetime.now().isoformat()}
  if checkpoints.params_only(step_dir):      # best/: its metric and metrics
    info.update({k: v for k, v in checkpoints.params_info(os.path.dirname(step_dir)).items()
                 if k not in ("step", "params")})
  tmp = f"{os.path.abspath(output).rstrip(os.sep)}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(os.path.join(tmp, "vocab"))
  for name in (reader.VOCAB_FILE, reader.METADATA_FILE):
    if os.path.exists(os.path.join(data_dir, name)):
      shutil.copy2(os.path.join(data_dir, name), os.path.join(tmp, "vocab", name))
  if text_dir is not None:
    os.makedirs(os.path.join(tmp, "text"))
    for name in sorted(os.listdir(text_dir)):
      path = os.path.join(text_dir, name)
      if os.path.isfile(path) and not name.endswith(_WEIGHTS) and not name.startswith("."):
        shutil.copy2(path, os.path.join(tmp, "text", name))
  out = os.path.abspath(output)
  with open(os.path.join(tmp, "config.py"), "w", encoding="utf-8") as f:
    f.write(CONFIG_TEMPLATE.format(source=os.path.abspath(workdir), step=step, here=out,
                                   config=json.dumps(recorded, sort_keys=True),
                                   text=_TEXT_LINES if text_dir is not None else ""))
  checkpoints.save_params(tmp, params, step, info)   # model.json last: the commit
  if os.path.isdir(out):
    os.rmdir(out)                                    # empty (checked above)
  os.rename(tmp, out)
  return out


def main(argv: Sequence[str] | None = None) -> None:
  """Entry point of ``hvt-export``; a user error prints ``hvt-export: error: ...`` (exit 2)."""
  parser = argparse.ArgumentParser(prog="hvt-export", description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="The run directory (hvt-train's).")
  parser.add_argument("--step", default=None,
                      help="A step number or 'best' (RUN/best); default: the latest step.")
  parser.add_argument("--output", required=True, help="The new export directory.")
  args = parser.parse_args(argv)
  step = args.step
  if step is not None and step != "best":
    if not step.isdigit():
      parser.error(f"--step={step!r}: a step number or 'best'")
    step = int(step)
  from hvt_jax.cli import common  # pylint: disable=g-import-not-at-top
  common.console_logging()
  try:
    out = export(args.workdir, args.output, step)
  except (ValueError, FileNotFoundError) as e:
    print(f"hvt-export: error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"hvt-export: wrote {out}")


if __name__ == "__main__":
  main()
