"""Tests for hvt_jax.vocab.wordpiece (BERT WordPiece through the `tokenizers` library) and
hvt_jax.vocab.glove (GloVe/word2vec)."""

import json
import os
import pickle

import numpy as np
import pytest

from data_prep import common
from hvt_jax.vocab import glove
from hvt_jax.vocab import wordpiece

# ----------------------------------------------------------------------------------------------
# WordPiece


@pytest.fixture(scope="module")
def bert():
  return wordpiece.WordPieceTokenizer.from_file()


@pytest.fixture(scope="module")
def vocab_lines():
  # Independent reading of the real vocab: the id is the 0-based line number.
  with open(wordpiece.default_vocab_file(), encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f]


def _ids(vocab_lines, tokens):
  return [vocab_lines.index(t) for t in tokens]


def test_default_vocab_is_bert_base_uncased(bert, vocab_lines):
  assert len(bert.vocab) == 30522 == len(vocab_lines)
  # Well-known bert-base-uncased ids.
  assert (bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id) == (0, 100, 101, 102)
  assert bert.vocab_index["hello"] == 7592 and bert.vocab_index["world"] == 2088


@pytest.mark.parametrize("text, tokens", [
    # The real vocab has no "un"+"##aff": greedy longest match takes "una" first.
    ("unaffable", ["una", "##ffa", "##ble"]),
    ("Hello, World!", ["hello", ",", "world", "!"]),
    ("don't pay $5^x", ["don", "'", "t", "pay", "$", "5", "^", "x"]),
    ("Héllo naïve CAFÉ", ["hello", "naive", "cafe"]),
    ("He\u0301llo", ["hello"]),  # decomposed accent, same as the precomposed one
    ("a 中文b", ["a", "中", "文", "b"]),
    ("tab\there\u00a0nbsp", ["tab", "here", "n", "##bs", "##p"]),  # no "nb" in vocab
    ("x\x00y\u200bz", ["x", "##y", "##z"]),  # NUL and zero-width space dropped
    ("\U0001F600 smile", ["[UNK]", "smile"]),  # emoji not in vocab -> [UNK]
    ("[CLS] hi [SEP]", ["[CLS]", "hi", "[SEP]"]),  # special tokens kept whole
    ("", []),
])
def test_real_vocab_tokenization(bert, vocab_lines, text, tokens):
  assert bert.tokenize(text) == tokens
  assert bert.encode(text) == _ids(vocab_lines, tokens)


def test_long_word_is_unk(bert):
  assert bert.tokenize("a" * 101) == ["[UNK]"]
  # 100 characters is still matched piece by piece.
  assert bert.tokenize("a" * 100)[0] != "[UNK]"


def test_encode_special_tokens_and_truncation(bert):
  ids = bert.encode("hello world", add_special_tokens=True)
  assert ids == [101, 7592, 2088, 102]
  assert bert.encode("hello world", add_special_tokens=True, max_length=3) == [101, 7592, 102]
  assert bert.encode("hello world", max_length=1) == [7592]
  assert bert.convert_ids_to_tokens(ids) == ["[CLS]", "hello", "world", "[SEP]"]


def test_toy_vocab_bert_readme_example(tmp_path):
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "runn",
           "##ing", ","]
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
  tok = wordpiece.WordPieceTokenizer.from_file(str(path))
  assert tok.tokenize("unaffable, running") == ["un", "##aff", "##able", ",", "runn", "##ing"]
  assert tok.encode("unaffable") == [5, 6, 7]
  # A word with an uncovered remainder becomes one [UNK], not a partial split.
  assert tok.tokenize("unable unx") == ["un", "##able", "[UNK]"]


def test_load_vocab_errors(tmp_path):
  dup = tmp_path / "dup.txt"
  dup.write_text("[UNK]\na\nb\na\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"dup.txt:4: token 'a' already defined on line 2"):
    wordpiece.load_vocab(str(dup))
  blank = tmp_path / "blank.txt"
  blank.write_text("[UNK]\n\nb\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"blank.txt:2: blank token"):
    wordpiece.load_vocab(str(blank))
  missing = tmp_path / "nounk.txt"
  missing.write_text("[CLS]\n[SEP]\na\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"lacks the special tokens \['\[UNK\]'\]"):
    wordpiece.WordPieceTokenizer.from_file(str(missing))
  # The views need all five (padding, MLM masking): listed together.
  with pytest.raises(ValueError, match=r"\['\[PAD\]', '\[UNK\]', '\[MASK\]'\]"):
    wordpiece.special_token_ids(wordpiece.load_vocab(str(missing)))


def test_make_encoder_word_and_wordpiece_pickle_without_tokenizer():
  vocab, encode, counts = common.make_encoder("word", ["a man rides", "a bike"])
  # a: 2, then the count-1 words alphabetically.
  assert vocab == ["<pad>", "<unk>", "a", "bike", "man", "rides"]
  assert counts == {"a": 2, "man": 1, "rides": 1, "bike": 1}
  assert encode("A zebra rides") == [2, 1, 5]
  # Worker processes receive the kind and the vocabulary, not the tokenizer built here.
  clone = pickle.loads(pickle.dumps(encode))
  assert "_impl" not in clone.__dict__ and clone("bike man") == [3, 4]
  vocab, encode, counts = common.make_encoder("wordpiece", None)
  assert len(vocab) == 30522 and not counts
  assert pickle.loads(pickle.dumps(encode))("hello world") == [7592, 2088]
  with pytest.raises(ValueError, match="needs|builds its vocabulary"):
    common.make_encoder("word", None)


# Real sentences (ActivityNet Captions train/val_1) and full-width forms, with the ids the
# hand-written transcription of BERT's Python tokenizer gave before the switch to
# `tokenizers` (accents stripped, curly quotes and bullets kept, full-width letters [UNK]).
GOLDEN = [
    ("a man holds a piñata high above her head",
     [1037, 2158, 4324, 1037, 9231, 6790, 2152, 2682, 2014, 2132]),
    ("holding an épée and aman walks in",
     [3173, 2019, 4958, 4402, 1998, 25933, 2078, 7365, 1999]),
    ("just the man’s hands", [2074, 1996, 2158, 1521, 1055, 2398]),
    ("women in “FAB 50” neon green t-shirts",
     [2308, 1999, 1523, 6904, 2497, 2753, 1524, 16231, 2665, 1056, 1011, 11344]),
    ("Laz Cruz • Mexico", [2474, 2480, 8096, 1528, 3290]),
    ("ＡＢＣ ｆｕｌｌ－ｗｉｄｔｈ １２３ Ｎａïｖｅ", [100, 100, 1990, 100, 100, 100]),
]


@pytest.mark.parametrize("text, ids", GOLDEN)
def test_ids_kept_from_the_hand_written_tokenizer(bert, text, ids):
  assert bert.encode(text) == ids
  assert bert.tokenize("piñata") == ["pin", "##ata"]


def test_tokenizer_json_and_vocab_txt_agree_on_real_sentences(bert, each_annotations):
  # The default reads the checkpoint's tokenizer.json; a bare vocab.txt builds BERT's
  # uncased pipeline: both give the same ids on every real ActivityNet val_1 / TVR sentence
  # (the excerpts keep the files' non-ASCII sentences too).
  kind, root = each_annotations
  assert bert.source.endswith("tokenizer.json") and bert.lowercase
  from_txt = wordpiece.WordPieceTokenizer.from_file(wordpiece.default_vocab_file())
  assert from_txt.source.endswith("vocab.txt") and from_txt.vocab == bert.vocab
  val = json.loads((root / "activitynet_captions" / "val_1.json").read_text())
  sentences = [s for v in val.values() for s in v["sentences"]]
  with open(root / "tvr" / "tvr_val_release.jsonl", encoding="utf-8") as f:
    sentences += [json.loads(line)["desc"] for line in f]
  assert len(sentences) == {"excerpt": 157 + 120, "full": 17_505 + 10_895}[kind]
  assert sum(not s.isascii() for s in sentences) >= 9
  assert bert.encode_batch(sentences) == from_txt.encode_batch(sentences)


def test_stored_padding_and_truncation_are_off(bert):
  # The checkpoint's tokenizer.json pads and truncates to 128; stored ids must not.
  long = " ".join(["guitar"] * 300)
  assert bert.encode(long) == [bert.vocab_index["guitar"]] * 300
  assert bert.encode("hi") == [bert.vocab_index["hi"]]
  assert bert.encode(long, add_special_tokens=True, max_length=5)[-1] == bert.sep_id


def test_cased_vocab_from_tokenizer_config(tmp_path):
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "Ca", "##fé"]
  (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
  (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
  cased = wordpiece.WordPieceTokenizer.from_file(str(tmp_path))
  assert not cased.lowercase and cased.tokenize("Hello Café") == ["Hello", "Ca", "##fé"]
  uncased = wordpiece.WordPieceTokenizer.from_file(str(tmp_path), lowercase=True)
  assert uncased.tokenize("Hello") == ["hello"]
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no tokenizer.json or vocab.txt"):
    wordpiece.WordPieceTokenizer.from_file(str(tmp_path / "empty"))


def test_encoder_metadata_names_tokenizer_and_vocab():
  vocab, encode, _ = common.make_encoder("wordpiece", None)
  meta = encode.metadata()
  assert meta["library"].startswith("tokenizers 0.23")
  assert meta["source"].endswith("tokenizer.json") and meta["lowercase"] is True
  assert meta["vocab_size"] == 30522 and len(meta["vocab_sha256"]) == 64
  # Special ids come from the vocabulary, not constants.
  assert meta["special_ids"] == {t.strip("[]").lower(): vocab.index(t)
                                 for t in wordpiece.SPECIAL_TOKENS}
  assert json.loads(json.dumps(meta)) == meta
  assert common.make_encoder("word", ["a b"])[1].metadata()["special_ids"] == {"pad": 0,
                                                                              "unk": 1}


# ----------------------------------------------------------------------------------------------
# Word vectors

VOCAB = ["<pad>", "<unk>", "the", "cat", "paris", "zebra"]
VECS = {
    "the": [0.1, 0.2, 0.3],
    "cat": [-1.0, 0.5, 2.0],
    "Paris": [7.0, 8.0, 9.0],
    "dog": [1.0, 1.0, 1.0],
}


def _write(path, lines, mode="w"):
  if mode == "wb":
    path.write_bytes(b"".join(lines))
  else:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  return str(path)


def _glove_lines(vecs):
  return [w + " " + " ".join(repr(v) for v in vals) for w, vals in vecs.items()]


def test_glove_matrix_and_oov_report(tmp_path):
  path = _write(tmp_path / "g.txt", _glove_lines(VECS))
  counts = {"the": 10, "cat": 3, "paris": 2, "zebra": 4, "rare": 1}
  matrix, report = glove.load_word_vectors(path, VOCAB, counts=counts, seed=3)
  assert matrix.dtype == np.float32 and matrix.shape == (6, 3)
  np.testing.assert_array_equal(matrix[0], 0.0)  # <pad>
  np.testing.assert_allclose(matrix[2], VECS["the"], rtol=1e-6)
  np.testing.assert_allclose(matrix[3], VECS["cat"], rtol=1e-6)
  np.testing.assert_allclose(matrix[4], VECS["Paris"], rtol=1e-6)  # case fallback
  # OOV rows: small, non-zero, seeded.
  assert 0 < np.abs(matrix[5]).max() < 1.0 and 0 < np.abs(matrix[1]).max() < 1.0
  again, _ = glove.load_word_vectors(path, VOCAB, counts=counts, seed=3)
  other, _ = glove.load_word_vectors(path, VOCAB, counts=counts, seed=4)
  np.testing.assert_array_equal(again, matrix)
  assert not np.array_equal(other[5], matrix[5])
  assert report["oov_count"] == 1 and report["examples"] == ["zebra"]
  assert report["oov_rate"] == pytest.approx(1 / 4)  # 4 non-special words
  # zebra (4) and rare (1, not in the vocab -> <unk>) of 20 occurrences.
  assert report["token_oov_rate"] == pytest.approx(5 / 20)
  assert (report["found"], report["case_fallback"], report["dim"], report["format"],
          report["lines"]) == (2, 1, 3, "glove", 4)
  _, no_counts = glove.load_word_vectors(path, VOCAB)
  assert no_counts["token_oov_rate"] is None


def test_word2vec_header_and_exact_beats_case_fallback(tmp_path):
  vecs = {"Paris": [1.0, 1.0, 1.0], "paris": [2.0, 2.0, 2.0], "the": [3.0, 3.0, 3.0],
          "the ": None}
  lines = ["3 3"] + _glove_lines({k: v for k, v in vecs.items() if v is not None})
  path = _write(tmp_path / "w2v.txt", lines)
  matrix, report = glove.load_word_vectors(path, VOCAB, dim=3)
  np.testing.assert_array_equal(matrix[4], [2.0, 2.0, 2.0])
  assert report["format"] == "word2vec" and report["case_fallback"] == 0
  short = _write(tmp_path / "short.txt", ["5 3"] + _glove_lines(VECS))
  with pytest.raises(ValueError, match="announces 5 vectors, file has 4"):
    glove.load_word_vectors(short, VOCAB)


def test_glove840b_quirks_multiword_duplicates_undecodable(tmp_path):
  lines = [b"the 1 2\n", b". . . 3 4\n", b"the 5 6\n", b"caf\xe9 7 8\n", b"cat 9 10\n"]
  path = _write(tmp_path / "q.txt", lines, mode="wb")
  matrix, report = glove.load_word_vectors(path, VOCAB)
  np.testing.assert_array_equal(matrix[2], [1, 2])  # first occurrence wins
  np.testing.assert_array_equal(matrix[3], [9, 10])
  assert (report["multiword_lines"], report["duplicate_words"],
          report["undecodable_lines"], report["lines"]) == (1, 1, 1, 5)


@pytest.mark.parametrize("lines, message", [
    (["the 1 2 3", "cat 1 x 3"], r"bad.txt:2: malformed vector value"),
    (["the 1 2 3", "cat 1 2"], r"bad.txt:2: 2 values, expected 3"),
    (["the 1 2 3", "cat 1 2 3 4"], r"bad.txt:2: 4 values, expected 3 \(dimension mismatch\)"),
    (["the 1 2 3", "cat 1 nan 3"], r"bad.txt:2: non-finite"),
    (["the 1 2 3", "cat  1 2 3"], r"bad.txt:2: empty field"),
    (["the 1 2 3", ""], r"bad.txt:2: empty line"),
    ([], r"bad.txt: no vectors"),
])
def test_malformed_files_name_file_and_line(tmp_path, lines, message):
  path = _write(tmp_path / "bad.txt", lines)
  with pytest.raises(ValueError, match=message):
    glove.load_word_vectors(path, VOCAB)


def test_dim_mismatch_and_binary(tmp_path):
  path = _write(tmp_path / "g.txt", _glove_lines(VECS))
  with pytest.raises(ValueError, match=r"g.txt: vectors have dimension 3, expected 300"):
    glove.load_word_vectors(path, VOCAB, dim=300)
  binary = _write(tmp_path / "b.bin", [b"\xff\xfe\x00\x01 binary\n"], mode="wb")
  with pytest.raises(ValueError, match=r"b.bin:1: not a text-format"):
    glove.load_word_vectors(binary, VOCAB)


def test_format_report_mentions_counts(tmp_path):
  path = _write(tmp_path / "g.txt", _glove_lines(VECS))
  _, report = glove.load_word_vectors(path, VOCAB, counts={"the": 1, "zebra": 1})
  text = glove.format_report(report)
  assert "1 OOV words (25.00% of types, token OOV rate 50.00%)" in text
  assert json.loads(json.dumps(report)) == report  # JSON-serialisable for metadata
  assert os.path.isabs(report["file"])
