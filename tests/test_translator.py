import os

import numpy as np
import pytest

from keras_s2s import decoding
from keras_s2s.data import END_ID, START_ID
from keras_s2s.translator import Translator, plot_attention


@pytest.fixture(scope="module")
def translator(tiny_run):
    return Translator.from_run_dir(tiny_run, beam_size=2)


def held_out(tiny_run, n=6):
    with open(os.path.join(tiny_run, "data", "test.tsv"), encoding="utf-8") as f:
        return [line.split("\t")[0] for line, _ in zip(f, range(n))]


@pytest.mark.slow
def test_translate_matches_decoding_the_ids(translator, tiny_run):
    sentences = held_out(tiny_run)
    encoder_tokens, empty = translator.encode_sources(sentences)
    assert not empty.any()
    ids, _ = decoding.beam_decode(translator.model, encoder_tokens, start_id=START_ID,
                                  end_id=END_ID, max_length=translator.max_length, beam_size=2)
    expected = [t.decode() for t in translator.target_tokenizer.detokenize(np.asarray(ids)).numpy()]
    assert translator.translate(sentences) == expected
    assert all(isinstance(t, str) for t in expected)


@pytest.mark.slow
def test_greedy_and_batching_do_not_change_results(translator, tiny_run):
    sentences = held_out(tiny_run)
    together = translator.translate(sentences, beam_size=1)
    one_by_one = translator.translate(sentences, beam_size=1, batch_size=1)
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


def test_from_run_dir_without_a_model_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"has no model.keras: train it first"):
        Translator.from_run_dir(str(tmp_path))
