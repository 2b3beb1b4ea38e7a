"""Data: corpus readers, the built-in corpus, SentencePiece tokenizers, tf.data pipeline.

    corpus      streaming readers of TSV and line-aligned files (`read_corpus`)
    builtin     a deterministic synthetic English -> made-up-language task
    tokenizers  SentencePiece trained in Python, applied in the TF graph
    pipeline    tokenize, bucket and pad into batches for `model.fit`
"""

from keras_s2s.data.builtin import CorpusSplits, generate_pairs, write_builtin_corpus
from keras_s2s.data.corpus import (
    CorpusError,
    CorpusStats,
    read_corpus,
    read_parallel_files,
    read_tsv,
)
from keras_s2s.data.pipeline import (
    PaddingStats,
    decoder_io,
    default_bucket_boundaries,
    make_dataset,
    padded_decoder_io,
    padding_statistics,
    pairs_dataset,
)
from keras_s2s.data.tokenizers import (
    END_ID,
    PAD_ID,
    START_ID,
    UNK_ID,
    Tokenizer,
    VocabularyTokenizer,
    load_tokenizers,
    train_tokenizers,
)

__all__ = [
    "END_ID",
    "PAD_ID",
    "START_ID",
    "UNK_ID",
    "CorpusError",
    "CorpusSplits",
    "CorpusStats",
    "PaddingStats",
    "Tokenizer",
    "VocabularyTokenizer",
    "decoder_io",
    "default_bucket_boundaries",
    "generate_pairs",
    "load_tokenizers",
    "make_dataset",
    "padded_decoder_io",
    "padding_statistics",
    "pairs_dataset",
    "read_corpus",
    "read_parallel_files",
    "read_tsv",
    "train_tokenizers",
    "write_builtin_corpus",
]
