import itertools
import os

import numpy as np
import pytest

from keras_s2s import decoding
from keras_s2s.decoding import Beam, Greedy, Sampling
from keras_s2s.data import END_ID, START_ID
from keras_s2s.translator import Translator, length_sorted_batches, pad_batch, plot_attention


@pytest.fixture(scope="module")
def translator(tiny_run):
    return Translator.from_run_dir(tiny_run, strategy=Beam(2))


def held_out(tiny_run, n=6):
    with open(os.path.join(tiny_run, "data", "test.tsv"), encoding="utf-8") as f:
        return [line.split("\t")[0] for line, _ in zip(f, range(n))]


@pytest.mark.slow
def test_translate_matches_decoding_the_ids(translator, tiny_run):
    sentences = held_out(tiny_run)
    encoder_tokens, empty = translator.encode_sources(sentences)
    assert not empty.any()
    ids, _ = decoding.decode(translator.model, encoder_tokens, Beam(2), start_id=START_ID,
                             end_id=END_ID, max_length=translator.max_length)
    expected = [t.decode() for t in translator.target_tokenizer.detokenize(np.asarray(ids)).numpy()]
    assert translator.translate(sentences) == expected
    assert all(isinstance(t, str) for t in expected)


@pytest.mark.slow
def test_greedy_and_batching_do_not_change_results(translator, tiny_run):
    sentences = held_out(tiny_run)
    together = translator.translate(sentences, Greedy())
    one_by_one = translator.translate(sentences, Greedy(), batch_size=1)
    assert together == one_by_one


@pytest.mark.slow
def test_empty_and_whitespace_inputs_give_empty_outputs(translator):
    out = translator.translate(["", "   ", "The dog sleeps."])
    assert out[:2] == ["", ""] and len(out) == 3


@pytest.mark.slow
def test_attention_alignments_and_plot(translator, tiny_run, tmp_path):
    sentences = held_out(tiny_run, 2)
    translations, alignments = translator.translate(sentences, return_attention=True)
    for alignment in alignments:
        weights = alignment["weights"]
        assert weights.shape == (len(alignment["target"]), len(alignment["source"]))
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-4)
    path = plot_attention(alignments[0], str(tmp_path / "attention.png"), title=sentences[0])
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_from_run_dir_without_a_model_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"has no model.keras: train it first"):
        Translator.from_run_dir(str(tmp_path))


@pytest.mark.slow
def test_length_sorted_batches_return_translations_in_input_order(translator, tiny_run):
    # Lengths that interleave, so that sorting moves nearly every sentence.
    sentences = held_out(tiny_run, 12)
    sentences = sorted(sentences, key=len)[::2] + sorted(sentences, key=len)[1::2][::-1]
    one_by_one = [translator.translate([s], batch_size=1)[0] for s in sentences]
    for batch_size in (1, 3, 5, 64):
        assert translator.translate(sentences, batch_size=batch_size) == one_by_one


@pytest.mark.slow
def test_xla_compiles_a_bounded_set_of_shapes_over_many_lengths(tiny_run):
    translator = Translator.from_run_dir(tiny_run, strategy=Beam(2), jit_compile=True)
    words = ["the", "dog", "sees", "a", "cat", "and", "the", "small", "bird", "runs"]
    # Every source length from 1 to 36 words, in requests of 1 to 7 sentences.
    sentences = [" ".join(words[i % len(words)] for i in range(n)) for n in range(1, 37)]
    start = 0
    for size in itertools.cycle(range(1, 8)):
        if start >= len(sentences):
            break
        translator.translate(sentences[start : start + size], batch_size=8)
        start += size
    shapes = {(rows, -(-length // 8) * 8) for _, rows, length in translator.search_shapes}
    batch_sizes = {rows for rows, _ in shapes}
    assert batch_sizes <= {1, 2, 4, 8}, batch_sizes
    # Source lengths: multiples of 8 up to the model's max_length (40).
    assert len(shapes) <= 4 * 5, shapes
    searches = decoding._SEARCHES[translator.model].values()
    assert sum(search.experimental_get_tracing_count() for search in searches) == 1


def test_length_sorted_batches_is_a_stable_longest_first_partition():
    lengths = [3, 7, 1, 7, 5, 3, 9]
    batches = length_sorted_batches(lengths, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in order] == [9, 7, 7, 5, 3, 3, 1]
    assert order.tolist()[1:3] == [1, 3] and order.tolist()[4:6] == [0, 5]  # ties keep input order


@pytest.mark.parametrize("rows, batch_size, expected", [(1, 64, 1), (3, 64, 4), (5, 8, 8),
                                                        (40, 64, 64), (64, 64, 64), (9, 12, 12)])
def test_pad_batch_rounds_rows_up_to_a_power_of_two_by_repeating_the_last(rows, batch_size, expected):
    tokens = np.arange(rows * 3, dtype="int32").reshape(rows, 3) + 1  # (B, S)
    padded = pad_batch(tokens, batch_size)
    assert padded.shape == (expected, 3)
    np.testing.assert_array_equal(padded[:rows], tokens)
    np.testing.assert_array_equal(padded[rows:], np.repeat(tokens[-1:], expected - rows, axis=0))


def test_default_batch_size_is_small_for_beam_search_under_xla(tiny_run):
    # A batch runs until its slowest sentence stops: under XLA, beam search
    # decodes in batches of 8 sentences unless told otherwise.
    sentences = [f"the dog sees {n} cats" for n in range(20)]
    for jit_compile, strategy, expected in [
        (True, Beam(2), 8), (True, Greedy(), 64), (False, Beam(2), 512), (None, Beam(2), 512),
    ]:
        translator = Translator.from_run_dir(tiny_run, strategy=strategy, jit_compile=jit_compile)
        assert translator.default_batch_size(strategy) == expected
        translator.translate(sentences)
        largest = max(rows for _, rows, _ in translator.search_shapes)
        assert largest == 8 if expected == 8 else largest >= len(sentences)


def test_by_default_no_strategy_runs_under_xla(tiny_run):
    translator = Translator.from_run_dir(tiny_run)
    assert not translator.uses_xla(Greedy()) and not translator.uses_xla(Beam(2))
    assert not translator.uses_xla(Sampling(top_k=2))
    assert Translator.from_run_dir(tiny_run, jit_compile=True).uses_xla(Greedy())
    assert Translator.from_run_dir(tiny_run, jit_compile=True).uses_xla(Beam(2))
    assert not Translator.from_run_dir(tiny_run, jit_compile=False).uses_xla(Greedy())
    with pytest.raises(ValueError, match=r"`jit_compile` must be True, False or None"):
        Translator.from_run_dir(tiny_run, jit_compile="yes")
