"""Start-up shared by the console scripts: flags, logging, TF/JAX process setup.

Logging. The console (stderr) shows the progress bars, our own warnings (records logged from
``hvt_jax``, ``data_prep`` or ``configs``) and every library's errors; the printed results
go to stdout. hvt-train and hvt-eval also write the full log (INFO and above from every
library: the config, orbax's and TFDS's records, ...) to
``<workdir>/logs/<prog>.<YYYYmmdd-HHMMSS>.<pid>.log`` (absl's ``--log_dir`` instead when
given; a local temp dir for a remote workdir such as ``gs://``), opened once the run
directory exists, so a start that fails early writes nothing. ``--verbosity N`` (absl's
levels: -1 warning, 0 info, 1 debug) shows every library's records from that level up on
the console too, as absl does by default.
"""

from __future__ import annotations

import logging as py_logging
import os
import sys
import time
from typing import Callable

from absl import flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, e.g. configs/hse/activitynet_c3d.py[:arg].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, eval).")


_STARTED = []


def run_app(prog: str, main_fn: Callable[[list[str]], None]) -> None:
  """``absl.app.run(main_fn)``; a bad ``--config.<key>`` override (a typo'd or unknown field,
  a value of the wrong type: ml_collections raises while the flags are parsed) prints
  ``<prog>: error: ...`` and exits with status 2 instead of a traceback."""
  from absl import app  # pylint: disable=g-import-not-at-top
  _check_config_arg(prog)
  try:
    app.run(main_fn)
  except (AttributeError, KeyError, TypeError) as e:
    if _STARTED or os.environ.get("HVT_TRACEBACK"):
      raise
    while e.args and isinstance(e.args[0], BaseException):   # AttributeError(KeyError(...))
      e = e.args[0]
    msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    msg = " ".join(msg.replace("\\n", "\n").split())   # one line
    given = [a.split("=")[0] for a in sys.argv[1:] if a.startswith("--config.")]
    named = [g for g in given if g.rsplit(".", 1)[-1] in msg] or given
    where = f" (in {', '.join(named)})" if named else ""
    print(f"{prog}: error: bad --config override{where}: {msg}\n(set "
          "HVT_TRACEBACK=1 for the traceback)", file=sys.stderr)
    sys.exit(2)


def _check_config_arg(prog: str) -> None:
  """A config file's ``:arg`` the file rejects (a typo'd key, a value not among the valid
  ones: its ``get_config`` raises ValueError) prints ``<prog>: error: ...`` and exits 2,
  before absl parses the flags (which would print its own traceback)."""
  args = sys.argv[1:]
  spec = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
  if spec is None and "--config" in args[:-1]:
    spec = args[args.index("--config") + 1]
  if not spec:
    return
  path, _, arg = spec.partition(":")
  if not path.endswith(".py") or not os.path.isfile(path):
    return   # absl reports a missing file
  import importlib.util  # pylint: disable=g-import-not-at-top
  module_spec = importlib.util.spec_from_file_location("_hvt_config_check", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    module.get_config(arg or None)
  except ValueError as e:
    print(f"{prog}: error: --config {spec}: {e}", file=sys.stderr)
    sys.exit(2)


def startup() -> tuple[object, str]:
  """Validates flags, hides accelerators from TF, sets up the console and the log file
  (module docstring), joins a multi-process run if asked, logs the config."""
  _STARTED.append(True)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tf.data only: keep TF off the accelerators that JAX owns.
  tf.config.set_visible_devices([], "GPU")
  from hvt_jax import sharding  # pylint: disable=g-import-not-at-top
  prog = os.path.basename(sys.argv[0])
  for flag, value in (("--config", _CONFIG.value), ("--workdir", _WORKDIR.value)):
    if not value:
      print(f"{prog}: error: {flag} is required (see {prog} --helpfull)", file=sys.stderr)
      sys.exit(2)
  verbosity = flags.FLAGS.verbosity if flags.FLAGS["verbosity"].present else None
  console_logging(verbosity, log_file=_log_file_path(prog, _WORKDIR.value))
  sharding.maybe_initialize_distributed()
  logging.info("config:\n%s", _CONFIG.value)
  return _CONFIG.value, _WORKDIR.value


# Where our own code lives: its warnings reach the console by default.
_OWN_DIRS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), d, "") for d in ("hvt_jax", "data_prep", "configs"))


class _OwnWarningsAndErrors(py_logging.Filter):
  """The default console: warnings logged by our own code, errors logged by anyone."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.ERROR:
      return True
    # A captured Python warning (logging.captureWarnings) starts with the warning's file.
    where = str(record.args[0]) if record.name == "py.warnings" and record.args else (
        record.pathname)
    return record.levelno >= py_logging.WARNING and os.path.abspath(where.split(":")[0]
                                                                    ).startswith(_OWN_DIRS)


class _Stderr(py_logging.StreamHandler):
  """The console handler of the argparse tools: ``sys.stderr`` as it is at each record."""

  def emit(self, record: py_logging.LogRecord) -> None:
    self.stream = sys.stderr
    super().emit(record)


class _RunLog(py_logging.Handler):
  """The log file ``path``, opened (its directory made) once the directory above its
  directory exists, e.g. ``<workdir>`` for ``<workdir>/logs/x.log``; the records before
  that are kept and written first, so a run that fails before making its workdir leaves
  nothing behind."""

  def __init__(self, path: str):
    super().__init__()
    self.path, self.wait_for = path, os.path.dirname(os.path.dirname(path))
    self.setFormatter(logging.PythonFormatter())
    self._pending: list[str] = []
    self._stream = None

  @property
  def opened(self) -> bool:
    return self._stream is not None

  def emit(self, record: py_logging.LogRecord) -> None:
    try:
      text = self.format(record) + "\n"
      if self._stream is None:
        if not os.path.isdir(self.wait_for):
          self._pending.append(text)
          return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._stream = open(self.path, "a", encoding="utf-8")
        self._stream.write("".join(self._pending))
        self._pending = []
      self._stream.write(text)
      self._stream.flush()
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)

  def close(self) -> None:
    with self.lock:
      if self._stream is not None:
        self._stream.close()
        self._stream = None
    super().close()


_HANDLERS: dict[str, py_logging.Handler] = {}


def _log_file_path(prog: str, workdir: str) -> str:
  """``<workdir>/logs/<prog>.<time>.<pid>.log`` (``--log_dir`` when given; a local temp dir
  for a remote workdir)."""
  if flags.FLAGS.log_dir:
    log_dir = flags.FLAGS.log_dir
  elif "://" in workdir:
    log_dir = logging.find_log_dir()
  else:
    log_dir = os.path.join(os.path.abspath(workdir), "logs")
  return os.path.join(log_dir, f"{prog}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}.log")


def console_logging(verbosity: int | None = None, log_file: str | None = None) -> None:
  """Sets up the console (and the log file) as the module docstring says.

  Idempotent: a second call (a console script's ``main`` run again in one process)
  replaces what the first one set up.

  Args:
    verbosity: None: the console shows our own warnings and every library's errors; an absl
      level (-1 warning, 0 info, 1 debug): every library's records from that level up.
    log_file: where the full log (INFO and above, or ``verbosity``'s level if lower) goes;
      None: no log file. Opened once the directory above its directory exists.
  """
  from absl.logging import converter  # pylint: disable=g-import-not-at-top
  root = py_logging.getLogger()
  old = _HANDLERS.pop("file", None)
  if old is not None:
    root.removeHandler(old)
    old.close()
  absl_handler = logging.get_absl_handler()
  if absl_handler in root.handlers:          # absl.app: absl's stderr handler
    console = absl_handler
  else:                                      # argparse tools: our own stderr handler
    console = _HANDLERS.get("console")
    if console is None:
      for h in [h for h in root.handlers if isinstance(h, py_logging.StreamHandler)
                and h.stream in (sys.stderr, sys.__stderr__)]:
        root.removeHandler(h)                # e.g. a library's logging.basicConfig
      console = _HANDLERS["console"] = _Stderr()
      console.setFormatter(logging.PythonFormatter())
      root.addHandler(console)
  for f in [f for f in console.filters if isinstance(f, _OwnWarningsAndErrors)]:
    console.removeFilter(f)
  if verbosity is None:
    console.addFilter(_OwnWarningsAndErrors())
    console.setLevel(py_logging.WARNING)
    level = py_logging.WARNING
  else:
    level = converter.absl_to_standard(verbosity)
    console.setLevel(level)
  if log_file is not None:
    level = min(level, py_logging.INFO)
    _HANDLERS["file"] = _RunLog(log_file)
    root.addHandler(_HANDLERS["file"])
  root.setLevel(level)
  py_logging.getLogger("absl").setLevel(py_logging.NOTSET)   # absl's records follow root
  py_logging.captureWarnings(True)


def log_file() -> str | None:
  """The log file of this run once it has been opened, else None."""
  handler = _HANDLERS.get("file")
  return handler.path if handler is not None and handler.opened else None


def user_errors(prog: str, fn: Callable[[], None]) -> None:
  """Runs ``fn``; a user error (bad config field, missing data or checkpoint, a refused
  resume, a non-finite step) prints ``<prog>: error: <message>`` to stderr and exits with
  status 2 (1 for a non-finite step), like hvt-prepare, instead of a traceback.
  ``HVT_TRACEBACK=1`` re-raises for the full traceback."""
  try:
    fn()
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    if os.environ.get("HVT_TRACEBACK"):
      raise
    logging.info("%s failed", prog, exc_info=True)
    print(f"{prog}: error: {e}\n(set HVT_TRACEBACK=1 for the traceback)", file=sys.stderr)
    _print_log_file(prog)
    sys.exit(1 if isinstance(e, FloatingPointError) else 2)
  _print_log_file(prog)


def _print_log_file(prog: str) -> None:
  if log_file() is not None:
    print(f"{prog}: full log in {log_file()}", file=sys.stderr)


def results_table(model: str, results: dict[str, float]) -> str:
  """``{split/prefix/metric: v}`` -> one row per split; columns come from the metrics."""
  from hvt_jax.evaluation import tables  # pylint: disable=g-import-not-at-top
  rows: dict[str, dict[str, float]] = {}
  for key, value in results.items():
    split, _, name = key.partition("/")
    rows.setdefault(f"{model} {split}", {})[name] = value
  columns = list(dict.fromkeys(c for r in rows.values() for c in tables.metric_columns(r)))
  return tables.format_table(rows, columns)
