"""Pretrained word vectors (GloVe / word2vec text format) as an init matrix for a word vocabulary.

HSE-style models initialise their word embedding from GloVe. This module streams a text-format
vectors file once, keeps only the rows of words in the dataset's vocabulary and reports the
out-of-vocabulary (OOV) rate, so a 5 GB `glove.840B.300d.txt` never has to fit in memory.

Accepted formats (detected from the first line):
- GloVe: `word v1 ... vD` per line, no header.
- word2vec text: a `count dim` header line, then GloVe-like lines. (Binary word2vec is rejected.)

Rules, chosen so that a bad file fails loudly and a real file loads:
- A line with fewer than D values, a value that is not a finite number, or a line with extra
  *numeric* fields (a dimension mismatch) is an error naming the file and line number. A mismatch
  between the file's dimension and an expected `dim` is an error.
- glove.840B.300d contains keys with spaces (`. . .`, `at name@domain.com`): a line with extra
  *non-numeric* leading fields is read as a multi-word key (it can only match a vocabulary entry
  that contains spaces) and counted in the report as `multiword_lines`.
- Lines that are not valid UTF-8 are skipped and counted (`undecodable_lines`): a word with
  invalid bytes cannot match a vocabulary entry. An undecodable first line is an error (binary
  file).
- The first occurrence of a duplicated word wins (`duplicate_words`). Values are parsed and checked
  for the lines whose word is used; every line's field count is checked.
- A vocabulary word missing in exact form but present with other casing (cased GloVe) takes the
  first such row (`case_fallback`).
- `<pad>` gets a zero row; `<unk>` and every OOV word get N(0, oov_std^2) rows from `seed`.
  Special tokens are not counted as OOV.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

PAD = "<pad>"
UNK = "<unk>"
SPECIAL_WORDS = (PAD, UNK)
WORD_VECTORS_FILE = "word_vectors.npy"
WORD_VECTORS_REPORT = "word_vectors_report.json"
_MAX_EXAMPLES = 20


def _parse_values(fields: Sequence[bytes], path: str, line_no: int) -> np.ndarray:
  try:
    vec = np.array([float(x) for x in fields], dtype=np.float32)
  except ValueError as e:
    raise ValueError(f"{path}:{line_no}: malformed vector value ({e})") from e
  if not np.all(np.isfinite(vec)):
    raise ValueError(f"{path}:{line_no}: non-finite value in vector")
  return vec


def _is_number(field: bytes) -> bool:
  try:
    float(field)
  except ValueError:
    return False
  return True


def _detect_header(first: list[bytes]) -> tuple[int, int] | None:
  if len(first) == 2 and first[0].isdigit() and first[1].isdigit():
    return int(first[0]), int(first[1])
  return None


def load_word_vectors(path: str, vocab: Sequence[str], *,
                      counts: Mapping[str, int] | None = None, dim: int | None = None,
                      seed: int = 0, oov_std: float = 0.1) -> tuple[np.ndarray, dict[str, Any]]:
  """Builds a [V, D] embedding init matrix for `vocab` from a text-format vectors file.

  Args:
    path: GloVe or word2vec *text* vectors file.
    vocab: id -> word, e.g. the dataset's word vocabulary (`<pad>` = 0, `<unk>` = 1).
    counts: optional word -> occurrence count (e.g. train-split token counts) for the
      token-level OOV rate.
    dim: expected vector dimension; None accepts the file's.
    seed: seed for the OOV rows.
    oov_std: standard deviation of the OOV rows.

  Returns:
    (matrix, report): matrix is float32 [V, D]; report is
    {"oov_count", "oov_rate" (over vocabulary word types, specials excluded),
     "token_oov_rate" (over `counts` occurrences, words absent from `vocab` included since
     they encode as `<unk>`; None without counts), "examples" (up to 20
     OOV words, most frequent first when counts are given), "vocab_size", "dim", "found",
     "case_fallback", "duplicate_words", "multiword_lines", "undecodable_lines", "lines",
     "format", "file"}.

  Raises:
    ValueError: malformed line, dimension mismatch, binary or empty file (naming the file and
      line).
  """
  vocab_index = {w: i for i, w in enumerate(vocab)}
  lower_index: dict[str, list[int]] = {}
  for w, i in vocab_index.items():
    lower_index.setdefault(w.lower(), []).append(i)
  found: dict[int, np.ndarray] = {}
  fallback: dict[int, np.ndarray] = {}
  stats = {"duplicate_words": 0, "multiword_lines": 0, "undecodable_lines": 0}
  fmt = "glove"
  file_dim = None
  header_count = None
  n_vectors = 0
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, start=1):
      raw = raw.rstrip(b"\r\n")
      if line_no == 1:
        try:
          raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise ValueError(f"{path}:1: not a text-format vectors file (binary word2vec is not "
                           f"supported): {e}") from e
        header = _detect_header(raw.split())
        if header is not None:
          fmt = "word2vec"
          header_count, file_dim = header
          continue
      if not raw.strip():
        raise ValueError(f"{path}:{line_no}: empty line")
      fields = raw.rstrip().split(b" ")
      if b"" in fields:
        raise ValueError(f"{path}:{line_no}: empty field (repeated or leading space)")
      if file_dim is None:
        file_dim = len(fields) - 1
        if file_dim < 1:
          raise ValueError(f"{path}:{line_no}: a vector line needs a word and values")
      if dim is not None and file_dim != dim:
        raise ValueError(f"{path}: vectors have dimension {file_dim}, expected {dim}")
      n_extra = len(fields) - 1 - file_dim
      if n_extra < 0:
        raise ValueError(f"{path}:{line_no}: {len(fields) - 1} values, expected {file_dim} "
                         "(dimension mismatch or truncated line)")
      if n_extra > 0:
        if all(_is_number(x) for x in fields[1:1 + n_extra]):
          raise ValueError(f"{path}:{line_no}: {len(fields) - 1} values, expected {file_dim} "
                           "(dimension mismatch)")
        stats["multiword_lines"] += 1
      n_vectors += 1
      try:
        word = b" ".join(fields[:1 + n_extra]).decode("utf-8")
      except UnicodeDecodeError:
        stats["undecodable_lines"] += 1
        continue
      idx = vocab_index.get(word)
      if idx is not None:
        if idx in found:
          stats["duplicate_words"] += 1
          continue
        found[idx] = _parse_values(fields[1 + n_extra:], path, line_no)
        continue
      for j in lower_index.get(word.lower(), ()):
        if j not in fallback and j not in found:
          fallback[j] = _parse_values(fields[1 + n_extra:], path, line_no)
  if file_dim is None or n_vectors == 0:
    raise ValueError(f"{path}: no vectors found")
  if header_count is not None and header_count != n_vectors:
    raise ValueError(f"{path}: word2vec header announces {header_count} vectors, file has "
                     f"{n_vectors} (truncated file?)")

  rng = np.random.default_rng(seed)
  # Draw every row up front so an OOV word's init does not depend on which other words hit.
  matrix = rng.normal(0.0, oov_std, size=(len(vocab), file_dim)).astype(np.float32)
  case_fallback = 0
  oov_words = []
  for i, w in enumerate(vocab):
    if w == PAD:
      matrix[i] = 0.0
    elif i in found:
      matrix[i] = found[i]
    elif i in fallback:
      matrix[i] = fallback[i]
      case_fallback += 1
    elif w not in SPECIAL_WORDS:
      oov_words.append(w)
  n_words = sum(1 for w in vocab if w not in SPECIAL_WORDS)
  token_oov_rate = None
  if counts is not None:
    total = sum(c for w, c in counts.items() if w not in SPECIAL_WORDS)
    oov_set = set(oov_words)
    missed = sum(c for w, c in counts.items() if w in oov_set or
                 (w not in vocab_index and w not in SPECIAL_WORDS))
    token_oov_rate = missed / total if total else 0.0
    oov_words.sort(key=lambda w: (-counts.get(w, 0), w))
  report = {
      "oov_count": len(oov_words),
      "oov_rate": len(oov_words) / n_words if n_words else 0.0,
      "token_oov_rate": token_oov_rate,
      "examples": oov_words[:_MAX_EXAMPLES],
      "vocab_size": len(vocab),
      "dim": file_dim,
      "found": len(found),
      "case_fallback": case_fallback,
      "lines": n_vectors,
      "format": fmt,
      "file": os.path.abspath(path),
      **stats,
  }
  logging.info("word vectors %s: %d/%d words found, OOV rate %.2f%%", path,
               len(found) + case_fallback, n_words, 100 * report["oov_rate"])
  return matrix, report


def _write_matrix(matrix: np.ndarray, path: str) -> None:
  # Through a file object: np.save appends ".npy" to a path without it.
  with open(path, "wb") as f:
    np.save(f, np.asarray(matrix, np.float32))


def _write_report(report: Mapping[str, Any], path: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)


@dataclasses.dataclass(frozen=True)
class WordVectors:
  """An embedding init matrix and its OOV report, to be stored with a dataset.

  Attributes:
    matrix: float32 [V, D], row id = vocabulary id (see `load_word_vectors`).
    report: the OOV report of `load_word_vectors`.
  """
  matrix: np.ndarray
  report: dict

  def metadata(self) -> dict[str, Any]:
    """The report as stored in the dataset (metadata extra and report file): `output` is the
    .npy file name inside the dataset dir."""
    return dict(self.report, output=WORD_VECTORS_FILE)

  def files(self) -> dict[str, Callable[[str], None]]:
    """`extra_files` of a `builder.Plan`: word_vectors.npy and its report, written inside
    the dataset's atomic write."""
    return {WORD_VECTORS_FILE: functools.partial(_write_matrix, self.matrix),
            WORD_VECTORS_REPORT: functools.partial(_write_report, self.metadata())}


def format_report(report: Mapping[str, Any]) -> str:
  """One-paragraph human-readable OOV summary for the CLI.

  Args:
    report: a report from `load_word_vectors`.

  Returns:
    Text.
  """
  tok = report.get("token_oov_rate")
  tok_txt = "" if tok is None or math.isnan(tok) else f", token OOV rate {100 * tok:.2f}%"
  return (f"word vectors ({report['format']}, dim {report['dim']}): "
          f"{report['found'] + report['case_fallback']} of {report['vocab_size']} vocabulary "
          f"entries found ({report['case_fallback']} by case fallback), {report['oov_count']} OOV "
          f"words ({100 * report['oov_rate']:.2f}% of types{tok_txt}); examples: "
          f"{', '.join(report['examples'][:10])}")
