"""Text vocabularies the runtime reads and the converters write: WordPiece (``wordpiece``),
the word vocabulary of word-level datasets (``words``) and word vectors (``glove``)."""
