"""Sentence normalisation and the word-level tokenizer/vocabulary shared by all converters.

The word tokenizer is the one HSE-style models use with a learned (or GloVe-initialised)
embedding table: lowercase, words are runs of letters/digits/underscore, an apostrophe suffix
("'s", "'t") is its own token, and every other non-space character (punctuation) is a token
of its own. Nothing is dropped, so a non-empty sentence always has at least one token.

    >>> word_tokenize("  A man's  bike, then... ")
    ['a', 'man', "'s", 'bike', ',', 'then', '.', '.', '.']
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1

_WHITESPACE = re.compile(r"\s+")
# Order matters: an apostrophe followed by letters ("'s") before a lone punctuation mark.
_TOKEN = re.compile(r"\w+|'\w+|[^\w\s]")


def normalize_sentence(s: str) -> str:
  """Strips the sentence and collapses every run of whitespace to one space.

  Args:
    s: raw sentence.

  Returns:
    The normalised sentence ("" for an empty or all-whitespace input).
  """
  return _WHITESPACE.sub(" ", s).strip()


def word_tokenize(s: str) -> list[str]:
  """Lowercases and splits a sentence into words and punctuation tokens.

  Args:
    s: sentence (need not be normalised).

  Returns:
    Tokens in order, e.g. "He's here." -> ["he", "'s", "here", "."].
  """
  return _TOKEN.findall(s.lower())


def build_word_vocab(sentences: Iterable[str], min_count: int = 1) -> list[str]:
  """Builds a word vocabulary from (training) sentences.

  Args:
    sentences: sentences to count words in (tokenized with `word_tokenize`).
    min_count: keep words seen at least this many times.

  Returns:
    id -> token: ["<pad>", "<unk>", then words by decreasing count, ties alphabetical].
  """
  if min_count < 1:
    raise ValueError(f"min_count must be >= 1, got {min_count}")
  counts = collections.Counter(w for s in sentences for w in word_tokenize(s))
  counts.pop(PAD, None)
  counts.pop(UNK, None)
  words = sorted((w for w, c in counts.items() if c >= min_count),
                 key=lambda w: (-counts[w], w))
  return [PAD, UNK, *words]


def encode_words(s: str, vocab_index: dict[str, int]) -> list[int]:
  """Token ids of a sentence; out-of-vocabulary words map to the "<unk>" id.

  Args:
    s: sentence.
    vocab_index: token -> id, e.g. `{t: i for i, t in enumerate(vocab)}`; must contain "<unk>".

  Returns:
    One id per `word_tokenize(s)` token.
  """
  unk = vocab_index[UNK]
  return [vocab_index.get(w, unk) for w in word_tokenize(s)]
