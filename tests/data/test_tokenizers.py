import io
import os
import re

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from keras_s2s.data.builtin import generate_pairs
from keras_s2s.data.tokenizers import (
    END_ID,
    PAD_ID,
    SPECIAL_PIECES,
    START_ID,
    UNK_ID,
    Tokenizer,
    load_tokenizers,
    train_tokenizers,
)

VOCABULARY_SIZE = 300


@pytest.fixture(scope="module")
def pairs():
    return generate_pairs(2000, seed=0)


@pytest.fixture(scope="module")
def shared_dir(pairs, tmp_path_factory):
    directory = tmp_path_factory.mktemp("shared")
    train_tokenizers(pairs, directory, vocabulary_size=VOCABULARY_SIZE, shared=True)
    return directory


@pytest.fixture(scope="module")
def shared(shared_dir):
    return load_tokenizers(shared_dir)[0]


def strings(texts):
    return tf.constant(texts)


def texts(tensor):
    return [text.decode("utf-8") for text in tensor.numpy()]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_round_trip_is_exact_on_the_builtin_corpus(pairs, tmp_path, model_type):
    source_tokenizer, target_tokenizer = train_tokenizers(
        pairs, tmp_path, vocabulary_size=VOCABULARY_SIZE, model_type=model_type
    )
    held_out = generate_pairs(200, seed=99)  # not trained on
    for tokenizer, side in ((source_tokenizer, 0), (target_tokenizer, 1)):
        sentences = [pair[side] for pair in held_out]
        ids = tokenizer.tokenize(strings(sentences))
        assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
        assert ids.shape.rank == 2 and ids.nrows() == len(sentences)
        assert texts(tokenizer.detokenize(ids)) == sentences


def test_special_ids_are_fixed(shared):
    processor = spm.SentencePieceProcessor(model_proto=shared.model_proto)
    assert (PAD_ID, UNK_ID, START_ID, END_ID) == (0, 1, 2, 3)
    assert [processor.id_to_piece(i) for i in range(4)] == list(SPECIAL_PIECES)
    assert shared.vocabulary_size == VOCABULARY_SIZE


def test_tokenize_adds_no_start_or_end_and_marks_unknown_characters(shared):
    ids = shared.tokenize(strings(["The dog runs.", "The dog runs. §"])).to_list()
    assert not {PAD_ID, START_ID, END_ID} & set(ids[0] + ids[1])
    assert UNK_ID not in ids[0]
    assert ids[1][-1] == UNK_ID  # "§" never occurs in the corpus
    # SentencePiece spells UNK " ⁇ ", spaces included.
    assert texts(shared.detokenize(tf.ragged.constant(ids)))[1] == "The dog runs.  ⁇ "


def test_detokenize_stops_at_end_and_ignores_start_and_pad(shared):
    ids = shared.tokenize(strings(["The dog runs."]))[0].numpy().tolist()
    garbage = shared.tokenize(strings(["Five cats."]))[0].numpy().tolist()
    dense = np.array(
        [
            [START_ID, *ids, END_ID, *garbage, PAD_ID],  # decoder output
            [*ids, END_ID, PAD_ID, PAD_ID, *[PAD_ID] * len(garbage)],  # labels
            [*ids, *[PAD_ID] * (len(garbage) + 3)],  # no END at all
            [END_ID, *ids, *[PAD_ID] * (len(garbage) + 2)],  # END first: empty
        ]
    )
    expected = ["The dog runs."] * 3 + [""]
    assert texts(shared.detokenize(dense)) == expected
    assert texts(shared.detokenize(tf.constant(dense, tf.int64))) == expected
    ragged = tf.ragged.constant([[START_ID, *ids, END_ID, *garbage], ids, ids, [END_ID]])
    assert texts(shared.detokenize(ragged)) == expected


def test_detokenize_maps_ids_outside_the_vocabulary_to_unk(shared):
    ids = shared.tokenize(strings(["The dog runs."]))[0].numpy().tolist()
    out = texts(shared.detokenize([[*ids, VOCABULARY_SIZE + 5, END_ID]]))
    assert out == ["The dog runs. ⁇ "]


def test_shapes_are_checked(shared):
    with pytest.raises(ValueError, match=re.escape("`strings` must be a vector (N,)")):
        shared.tokenize(tf.constant("one string"))
    with pytest.raises(ValueError, match=re.escape("`ids` must have shape (N, L)")):
        shared.detokenize(tf.constant([4, 5]))


def test_tokenize_and_detokenize_run_in_a_graph(shared):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(text):
        ids = shared.tokenize(text)
        return shared.detokenize(ids.to_tensor())

    assert texts(round_trip(strings(["The dog runs.", "A cat."]))) == ["The dog runs.", "A cat."]


def test_saved_model_tracks_the_tokenizer_resource(shared, tmp_path):
    # KNOWN_TRAPS 7: the SentencePiece resource must be tracked by whatever
    # holds the tokenizer, or the SavedModel cannot be loaded and served.
    module = tf.Module()
    module.tokenizer = shared
    module.translate = tf.function(
        lambda text: shared.detokenize(shared.tokenize(text)),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    tf.saved_model.save(module, str(tmp_path / "saved"))
    del module
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    assert texts(loaded.translate(strings(["The dog runs."]))) == ["The dog runs."]


def test_save_and_load_give_identical_ids(shared, pairs, tmp_path):
    path = shared.save(tmp_path, "copy")
    assert path == os.path.join(str(tmp_path), "copy.model")
    vocabulary = (tmp_path / "copy.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocabulary) == VOCABULARY_SIZE
    assert vocabulary[0].split("\t")[0] == "<pad>"
    reloaded = Tokenizer.load(path)
    batch = strings([source for source, _ in pairs[:100]])
    assert reloaded.tokenize(batch).to_list() == shared.tokenize(batch).to_list()
    assert reloaded.model_proto == shared.model_proto


def test_training_is_deterministic(pairs, shared, tmp_path):
    again, _ = train_tokenizers(pairs, tmp_path, vocabulary_size=VOCABULARY_SIZE, shared=True)
    assert again.model_proto == shared.model_proto


def test_shared_layout_gives_one_tokenizer_for_both_sides(shared_dir):
    assert sorted(os.listdir(shared_dir)) == ["shared.model", "shared.vocab"]
    source_tokenizer, target_tokenizer = load_tokenizers(shared_dir)
    assert source_tokenizer is target_tokenizer


def test_separate_layout_gives_one_tokenizer_per_side(pairs, shared, tmp_path):
    source_tokenizer, target_tokenizer = train_tokenizers(
        pairs, tmp_path, vocabulary_size=VOCABULARY_SIZE
    )
    assert sorted(os.listdir(tmp_path)) == [
        "source.model", "source.vocab", "target.model", "target.vocab"
    ]
    loaded = load_tokenizers(tmp_path)
    assert [t.model_proto for t in loaded] == [
        source_tokenizer.model_proto, target_tokenizer.model_proto
    ]
    # Each side's vocabulary is its own: English words are whole pieces in the
    # source model only.
    source_pieces = _pieces(source_tokenizer)
    target_pieces = _pieces(target_tokenizer)
    assert "▁the" in source_pieces and "▁the" not in target_pieces
    assert source_pieces != _pieces(shared)


def _pieces(tokenizer):
    processor = spm.SentencePieceProcessor(model_proto=tokenizer.model_proto)
    return {processor.id_to_piece(i) for i in range(processor.get_piece_size())}


def test_trains_from_a_tsv_file_and_from_a_function(pairs, shared, tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    from_file, _ = train_tokenizers(
        str(tsv), tmp_path / "a", vocabulary_size=VOCABULARY_SIZE, shared=True
    )
    from_function, _ = train_tokenizers(
        lambda: iter(pairs), tmp_path / "b", vocabulary_size=VOCABULARY_SIZE, shared=True
    )
    assert from_file.model_proto == from_function.model_proto == shared.model_proto


def test_vocabulary_too_large_for_the_data_is_explained(pairs, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"`vocabulary_size`=100000 is too large for the source text: "
        r"SentencePiece can build at most \d+ pieces from it\. Pass vocabulary_size<=\d+",
    ):
        train_tokenizers(pairs[:200], tmp_path, vocabulary_size=100_000)


def test_vocabulary_too_small_for_the_alphabet_is_explained(pairs, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"`vocabulary_size`=10 is too small for the source and target text: its "
        r"\d+ characters .* need vocabulary_size>=\d+",
    ):
        train_tokenizers(pairs[:200], tmp_path, vocabulary_size=10, shared=True)


def test_arguments_are_validated(pairs, tmp_path):
    with pytest.raises(ValueError, match=re.escape("received model_type='word'")):
        train_tokenizers(pairs, tmp_path, model_type="word")
    with pytest.raises(ValueError, match=re.escape("received character_coverage=0")):
        train_tokenizers(pairs, tmp_path, character_coverage=0)
    with pytest.raises(ValueError, match=re.escape("may not set ['pad_id']")):
        train_tokenizers(pairs, tmp_path, pad_id=-1)
    with pytest.raises(ValueError, match="`corpus` has no sentence pairs"):
        train_tokenizers([], tmp_path, vocabulary_size=VOCABULARY_SIZE)


def test_the_other_layout_in_the_directory_is_refused(pairs, shared_dir):
    with pytest.raises(FileExistsError, match=r"already holds \['shared.model'\]"):
        train_tokenizers(pairs, shared_dir, vocabulary_size=VOCABULARY_SIZE)


def test_load_tokenizers_needs_a_complete_layout(tmp_path, shared):
    with pytest.raises(FileNotFoundError, match="must hold shared.model, or source.model and"):
        load_tokenizers(tmp_path)
    shared.save(tmp_path, "source")  # target.model missing
    with pytest.raises(FileNotFoundError, match="must hold shared.model"):
        load_tokenizers(tmp_path)


def test_models_with_other_special_ids_are_refused(pairs):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(  # SentencePiece's defaults: unk=0, bos=1, eos=2, no pad
        sentence_iterator=iter([source for source, _ in pairs]),
        model_writer=model,
        vocab_size=100,
        minloglevel=2,
    )
    with pytest.raises(
        ValueError, match=re.escape("received pad_id=-1, unk_id=0, bos_id=1, eos_id=2")
    ):
        Tokenizer(model.getvalue())


@pytest.mark.parametrize("reset", ["set_random_seed", "clear_session"])
def test_tokenizer_survives_kernel_cache_resets(shared, reset):
    # tf-text's kernel-owned resource is destroyed by both calls
    # (tensorflow/text#570, #802); a training script calls them after
    # loading its tokenizers.
    import keras

    @tf.function
    def tokenize(text):
        return shared.tokenize(text).to_tensor()

    before = tokenize(strings(["The dog runs."])).numpy()
    if reset == "set_random_seed":
        keras.utils.set_random_seed(7)
    else:
        keras.backend.clear_session()
    np.testing.assert_array_equal(tokenize(strings(["The dog runs."])).numpy(), before)
    assert shared.tokenize(strings(["The dog runs."])).to_list() == before.tolist()
