"""VocabularyTokenizer (Marian's layout) without transformers: SentencePiece pieces
looked up in a vocabulary, in TensorFlow ops."""

import os

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from keras_s2s.data.tokenizers import (
    END_ID,
    PAD_ID,
    START_ID,
    UNK_ID,
    VocabularyTokenizer,
    load_tokenizers,
    save_vocabulary_tokenizers,
)
from tests.pretrained.marian_checkpoint import WORDS_SOURCE, sentences, train_spm


@pytest.fixture(scope="module")
def model_proto():
    return train_spm(sentences(WORDS_SOURCE, 300, seed=0), 80)


@pytest.fixture(scope="module")
def pieces(model_proto):
    processor = spm.SentencePieceProcessor(model_proto=model_proto)
    model_pieces = [
        processor.id_to_piece(i) for i in range(processor.get_piece_size())
        if not (processor.is_control(i) or processor.is_unknown(i))
    ]
    # keras_s2s order: PAD, UNK, START, END, then pieces; one piece left out
    # (it must become UNK) and a language tag added.
    return ["<pad>", "<unk>", "<s>", "</s>", ">>de<<"] + model_pieces[1:]


def test_pieces_are_looked_up_and_end_appended(model_proto, pieces):
    tokenizer = VocabularyTokenizer(model_proto, pieces, append_end=True)
    processor = spm.SentencePieceProcessor(model_proto=model_proto)
    texts = ["the small dog sees a cat .", "Zebra 漢", ">>de<< the dog", ""]
    got = tokenizer.tokenize(tf.constant(texts)).to_list()
    index = {piece: i for i, piece in enumerate(pieces) if i not in (PAD_ID, START_ID)}
    for text, row in zip(texts[:2], got):
        expected = [index.get(p, UNK_ID) for p in processor.encode(text, out_type=str)]
        assert row == expected + [END_ID]
    assert UNK_ID in got[1]  # characters outside the vocabulary
    assert got[2][0] == pieces.index(">>de<<")  # the language tag is one piece
    assert got[3] == []  # empty stays empty: no END
    assert not any(i in (PAD_ID, START_ID) for row in got for i in row)


def test_detokenize_reads_up_to_end_and_drops_special_ids(model_proto, pieces):
    tokenizer = VocabularyTokenizer(model_proto, pieces, append_end=False)
    ids = tokenizer.tokenize(tf.constant(["the small dog sees a cat .", "old man"])).to_list()
    dense = np.zeros((2, 16), "int32")
    dense[0, : len(ids[0])] = ids[0]
    dense[0, len(ids[0])] = END_ID
    dense[0, len(ids[0]) + 1] = ids[1][0]  # after END: ignored
    dense[1, 0] = START_ID
    dense[1, 1 : 1 + len(ids[1])] = ids[1]
    texts = [t.decode("utf-8") for t in tokenizer.detokenize(tf.constant(dense)).numpy()]
    assert texts == ["the small dog sees a cat .", "old man"]


def test_saved_layout_loads_and_exports_in_a_saved_model(model_proto, pieces, tmp_path):
    save_vocabulary_tokenizers(tmp_path, model_proto, model_proto, pieces)
    assert sorted(os.listdir(tmp_path)) == ["source.spm", "target.spm", "vocabulary.json"]
    source, target = load_tokenizers(tmp_path)
    assert source.append_end and not target.append_end
    assert source.vocabulary_size == len(pieces) and source.pieces == pieces

    module = tf.Module()
    module.tokenizer = source  # tracked: the lookup table and the SentencePiece resource
    module.tokenize = tf.function(
        lambda s: source.tokenize(s).to_tensor(), input_signature=[tf.TensorSpec([None], tf.string)]
    )
    tf.saved_model.save(module, str(tmp_path / "saved"))
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    texts = tf.constant(["the dog runs .", ">>de<< a cat"])
    np.testing.assert_array_equal(
        reloaded.tokenize(texts).numpy(), source.tokenize(texts).to_tensor().numpy()
    )


def test_bad_arguments_are_named(model_proto, tmp_path):
    with pytest.raises(TypeError, match="`model_proto` must be the bytes of a SentencePiece model"):
        VocabularyTokenizer("x.spm", ["a"] * 5, append_end=True)
    with pytest.raises(ValueError, match=r"`pieces` must hold at least the 4 special ids; received 2"):
        VocabularyTokenizer(model_proto, ["<pad>", "<unk>"], append_end=True)
    (tmp_path / "vocabulary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"vocabulary.json: expected a JSON object with `pieces`"):
        load_tokenizers(tmp_path)
    (tmp_path / "vocabulary.json").write_text('{"pieces": ["a"], "source_appends_end": true}')
    with pytest.raises(FileNotFoundError, match=r"needs source.spm beside it"):
        load_tokenizers(tmp_path)
