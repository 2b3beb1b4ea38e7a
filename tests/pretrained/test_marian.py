"""Importing a Marian checkpoint: parity with the PyTorch MarianMTModel and MarianTokenizer.

The checkpoint is tiny and random (tests/pretrained/marian_checkpoint.py),
built offline; transformers and torch are test-only dependencies.
"""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

# Checked without importing them (pytest.importorskip would): torch is only
# ever imported by the reference process and the pytorch_model.bin test.
for _package in ("torch", "transformers", "safetensors"):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} is not installed (a test-only dependency)", allow_module_level=True)

import keras
import tensorflow as tf

from keras_s2s import decoding
from keras_s2s.data.tokenizers import END_ID, PAD_ID, START_ID, UNK_ID, load_tokenizers
from keras_s2s.models import load_run_model
from keras_s2s.pretrained.marian import FORBIDDEN_LOGIT, MarianCheckpoint, import_marian
from tests.helpers import REPO_ROOT
from tests.pretrained.marian_checkpoint import (
    MAX_NEW_TOKENS,
    SEARCH_SOURCES,
    WORDS_SOURCE,
    WORDS_TARGET,
    sentences,
    tokenizer_sentences,
)


class Reference:
    """The checkpoint directory and what PyTorch and MarianTokenizer made of it."""

    def __init__(self, directory, arrays):
        self.directory = directory
        self.arrays = arrays
        self.ragged = json.loads(str(arrays["ragged"]))
        self.pad = int(arrays["pad_id"])
        self.eos = int(arrays["eos_id"])

    def __getitem__(self, name):
        return self.arrays[name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    # The PyTorch side runs in a process of its own (see marian_checkpoint.py).
    base = tmp_path_factory.mktemp("marian")
    directory, output = str(base / "checkpoint"), str(base / "reference.npz")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "tests.pretrained.marian_checkpoint", directory, output],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return Reference(directory, dict(np.load(output)))


@pytest.fixture(scope="module")
def run_dir(reference, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("marian") / "run")
    import_marian(reference.directory, run)
    return run


@pytest.fixture(scope="module")
def ids(reference):
    """(keras id -> Marian id, Marian id -> keras id)."""
    order = MarianCheckpoint(reference.directory).keras_order()
    to_keras = np.zeros(len(order) - 1, "int64")
    for keras_id, marian_id in enumerate(order):
        if keras_id != START_ID:  # START is the second copy of <pad>; <pad> itself is PAD
            to_keras[marian_id] = keras_id
    return order, to_keras


def keras_ids(marian_ids, to_keras, pad):
    marian_ids = np.asarray(marian_ids)
    return np.where(marian_ids == pad, PAD_ID, to_keras[marian_ids]).astype("int32")


def keras_rows(ids, order):
    """Search output (B, L) -> Marian ids per row, PAD dropped."""
    return [[int(order[token]) for token in row if token != PAD_ID] for row in np.asarray(ids)]


def test_imported_run_directory_holds_an_ordinary_run(run_dir):
    assert {"config.json", "model.keras", "train_config.json", "source.spm", "target.spm",
            "vocabulary.json", "import.json"} <= set(os.listdir(run_dir))
    config = json.loads(pathlib.Path(run_dir, "config.json").read_text(encoding="utf-8"))
    assert config["tie_embeddings"] == "all" and config["norm_position"] == "post"
    assert config["activation"] == "silu" and config["sinusoidal_layout"] == "halves"


def test_vocabulary_is_permuted_around_keras_s2s_special_ids(reference, ids):
    order, _ = ids
    pad, eos = reference.pad, reference.eos
    assert order[:4].tolist() == [pad, 1, pad, eos]  # PAD, UNK, START, END
    assert sorted(order[4:].tolist() + [eos, 1, pad]) == list(range(pad + 1))


def test_start_embedding_is_marians_pad_embedding_and_never_produced(run_dir, reference):
    model = load_run_model(run_dir)
    shared = model.get_layer("shared_embedding").embeddings.numpy()
    np.testing.assert_array_equal(shared[START_ID], reference["pad_embedding"])
    assert model.get_layer("final_logits_bias").bias.numpy()[START_ID] == FORBIDDEN_LOGIT


def test_logits_equal_the_pytorch_model_on_a_padded_batch(run_dir, reference, ids):
    order, to_keras = ids
    pad = reference.pad
    labels = reference["logits_labels"]  # (B, T), <pad>-padded
    decoder_tokens = keras_ids(reference["logits_decoder_ids"], to_keras, pad)
    decoder_tokens[:, 0] = START_ID
    real = np.concatenate([np.ones((len(labels), 1), bool), labels[:, :-1] != pad], axis=1)
    decoder_tokens[~real] = PAD_ID
    model = load_run_model(run_dir)
    logits = np.asarray(model({
        "encoder_tokens": keras_ids(reference["logits_input_ids"], to_keras, pad),
        "decoder_tokens": decoder_tokens,
    }))  # (B, T, V + 1)
    expected = reference["logits"]  # (B, T, V)
    columns = [k for k in range(len(order)) if k != START_ID]
    np.testing.assert_allclose(
        logits[..., columns][real], expected[..., order[columns]][real], atol=1e-4, rtol=0
    )
    assert (logits[..., START_ID][real] < FORBIDDEN_LOGIT / 2).all()
    assert (reference["logits_attention_mask"] == 0).any() and (~real).any()  # really padded


def test_greedy_search_gives_the_ids_of_generate(run_dir, reference, ids):
    order, to_keras = ids
    expected = reference.ragged["greedy"]
    model = load_run_model(run_dir)
    got, _ = decoding.decode(
        model, keras_ids(reference["search_input_ids"], to_keras, reference.pad),
        decoding.Greedy(), start_id=START_ID, end_id=END_ID, max_length=MAX_NEW_TOKENS, jit_compile=False,
    )
    assert keras_rows(got, order) == expected
    lengths = {len(row) for row in expected}
    assert len(lengths) > 2, f"the random model should end at varied lengths; got {lengths}"


def test_beam_search_gives_the_best_hypothesis_of_generate(run_dir, reference, ids):
    # The searches coincide at length_penalty 0 (both rank by log-probability;
    # HF divides by len ** lp, keras_s2s by the GNMT ((5 + len) / 6) ** lp),
    # for the best hypothesis (keras_s2s stops a sentence once no alive beam
    # can beat its best finished one, HF once it has num_beams finished ones).
    order, to_keras = ids
    expected = reference.ragged["beam"]
    model = load_run_model(run_dir)
    got, _ = decoding.decode(
        model, keras_ids(reference["search_input_ids"], to_keras, reference.pad),
        decoding.Beam(size=4, length_penalty=0.0), start_id=START_ID, end_id=END_ID,
        max_length=MAX_NEW_TOKENS, jit_compile=False,
    )
    assert keras_rows(got, order) == expected
    assert expected != reference.ragged["greedy"]  # the beam finds what greedy does not


def test_in_graph_tokenizer_gives_the_ids_of_marian_tokenizer(run_dir, reference, ids):
    _, to_keras = ids
    source, target = load_tokenizers(run_dir)
    texts = tokenizer_sentences()
    got = source.tokenize(tf.constant(texts)).to_list()
    expected = [to_keras[row].tolist() for row in reference.ragged["source_ids"]]
    mismatches = [(t, g, e) for t, g, e in zip(texts, got, expected) if g != e]
    assert not mismatches, mismatches[:5]
    assert len(texts) > 300
    assert any(UNK_ID in row[:-1] for row in got)  # unknown characters were exercised
    # Targets: the same, with the target model; END comes from the pipeline.
    got = target.tokenize(tf.constant(texts)).to_list()
    expected = [to_keras[row].tolist() for row in reference.ragged["target_ids"]]
    assert [row + [END_ID] for row in got] == expected


def test_detokenize_gives_the_text_of_marian_tokenizer_decode(run_dir, reference, ids):
    _, to_keras = ids
    _, target = load_tokenizers(run_dir)
    rows = [to_keras[row].tolist() for row in reference.ragged["target_ids"]]
    width = max(map(len, rows))
    dense = np.array([row + [PAD_ID] * (width - len(row)) for row in rows], "int32")
    got = [text.decode("utf-8") for text in target.detokenize(tf.constant(dense)).numpy()]
    assert got == reference.ragged["decoded"]


def test_empty_sentence_has_no_ids(run_dir):
    # MarianTokenizer gives [</s>]; keras_s2s keeps it empty, so serving answers "".
    source, _ = load_tokenizers(run_dir)
    assert source.tokenize(tf.constant(["", "the dog"])).row_lengths().numpy()[0] == 0


def test_imported_model_keeps_the_mask_invariants(run_dir, rng):
    model = load_run_model(run_dir)
    vocabulary = model.get_layer("shared_embedding").vocabulary_size
    encoder = rng.integers(4, vocabulary, size=(2, 6)).astype("int32")
    encoder[1, 3:] = PAD_ID
    encoder[0, 5] = END_ID
    encoder[1, 2] = END_ID
    decoder = np.concatenate(
        [np.full((2, 1), START_ID), rng.integers(4, vocabulary, size=(2, 4))], axis=1
    ).astype("int32")
    decoder[1, 3:] = PAD_ID
    inputs = {"encoder_tokens": encoder, "decoder_tokens": decoder}
    reference = np.asarray(model(inputs))
    real = decoder != PAD_ID
    padded = dict(inputs, encoder_tokens=np.pad(encoder, ((0, 0), (0, 5))))
    np.testing.assert_allclose(np.asarray(model(padded))[real], reference[real], atol=1e-5)
    future = dict(inputs, decoder_tokens=decoder.copy())
    future["decoder_tokens"][0, -1] = 7
    np.testing.assert_allclose(np.asarray(model(future))[:, :-1], reference[:, :-1], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(model(inputs)._keras_mask), real)


def test_one_fit_step_changes_the_weights_and_lowers_the_loss(run_dir):
    from keras_s2s import data
    from keras_s2s.config import TrainConfig
    from keras_s2s.training.trainer import compile_model

    model = load_run_model(run_dir)
    source, target = load_tokenizers(run_dir)
    pairs = list(zip(sentences(WORDS_SOURCE, 16, seed=3), sentences(WORDS_TARGET, 16, seed=4)))
    dataset = data.make_dataset(
        tf.data.Dataset.from_tensor_slices(([s for s, _ in pairs], [t for _, t in pairs])),
        source, target, max_length=64, batch_tokens=4096, shuffle=False,
    )
    batch = next(iter(dataset))
    compile_model(model, TrainConfig(learning_rate=1e-3, warmup_steps=1, label_smoothing=0.1))
    before_weights = [w.numpy().copy() for w in model.trainable_weights]
    before = model.evaluate(*batch, verbose=0, return_dict=True)["loss"]
    model.fit(*batch, epochs=1, verbose=0)
    after = model.evaluate(*batch, verbose=0, return_dict=True)["loss"]
    assert after < before
    changed = [not np.array_equal(a, w.numpy()) for a, w in zip(before_weights, model.trainable_weights)]
    assert all(changed), "every trainable weight should move in one step"
    assert model.get_layer("final_logits_bias").bias.numpy()[START_ID] < FORBIDDEN_LOGIT / 2


def test_pytorch_bin_checkpoint_imports_the_same_weights(reference, run_dir, tmp_path):
    bin_dir = os.path.join(os.path.dirname(reference.directory), "checkpoint_bin")
    if not os.path.exists(os.path.join(bin_dir, "pytorch_model.bin")):
        pytest.skip("this transformers version does not write pytorch_model.bin")
    copy = str(tmp_path / "bin")
    shutil.copytree(reference.directory, copy)
    os.remove(os.path.join(copy, "model.safetensors"))
    shutil.copyfile(os.path.join(bin_dir, "pytorch_model.bin"), os.path.join(copy, "pytorch_model.bin"))
    import_marian(copy, str(tmp_path / "run"))
    for a, b in zip(load_run_model(run_dir).weights, load_run_model(str(tmp_path / "run")).weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# --------------------------------------------------------------------------
# Invalid or unsupported checkpoints: the error names the file and the field.
# --------------------------------------------------------------------------


def edited_copy(directory, tmp_path, edit):
    copy = str(tmp_path / "edited")
    shutil.copytree(directory, copy)
    edit(copy)
    return copy


def edit_json(name, **changes):
    def edit(copy):
        path = os.path.join(copy, name)
        values = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        values.update(changes)
        pathlib.Path(path).write_text(json.dumps(values), encoding="utf-8")
    return edit


def remove(name):
    return lambda copy: os.remove(os.path.join(copy, name))


def reshape_tensor(key):
    def edit(copy):
        from safetensors.numpy import load_file, save_file

        path = os.path.join(copy, "model.safetensors")
        tensors = load_file(path)
        tensors[key] = tensors[key][:, :-1]
        save_file(tensors, path, metadata={"format": "pt"})
    return edit


def bpe_instead_of_spm(copy):
    os.remove(os.path.join(copy, "source.spm"))
    pathlib.Path(copy, "source.bpe").write_text("t h\n", encoding="utf-8")


@pytest.mark.parametrize(
    "edit,message",
    [
        (edit_json("config.json", model_type="bart"),
         r"config.json: `model_type` must be 'marian'.*received model_type='bart'"),
        (edit_json("config.json", activation_function="tanh"),
         r"config.json: `activation_function` must be one of .*received activation_function='tanh'"),
        (edit_json("config.json", share_encoder_decoder_embeddings=False),
         r"config.json: `share_encoder_decoder_embeddings`=False .* not supported"),
        (edit_json("config.json", decoder_start_token_id=0),
         r"config.json: `decoder_start_token_id` must be `pad_token_id`"),
        (edit_json("config.json", vocab_size=500, decoder_vocab_size=500),
         r"vocab.json: must map pieces to the ids 0..499 once each"),
        (edit_json("tokenizer_config.json", separate_vocabs=True),
         r"tokenizer_config.json: `separate_vocabs`=true .* not supported"),
        (remove("vocab.json"), r"vocab.json is missing"),
        (remove("model.safetensors"), r"has no weights: expected model.safetensors or pytorch_model.bin"),
        (bpe_instead_of_spm, r"source.spm is missing.*BPE-based OPUS models .* not supported"),
        (reshape_tensor("model.encoder.layers.1.fc1.weight"),
         r"model.safetensors: `model.encoder.layers.1.fc1.weight` has shape \(32, 15\), expected \(32, 16\)"),
    ],
)
def test_invalid_checkpoints_name_the_file_and_field(reference, tmp_path, edit, message):
    copy = edited_copy(reference.directory, tmp_path, edit)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        import_marian(copy, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_missing_final_logits_bias_is_zero_as_in_transformers(reference, tmp_path):
    def drop_bias(copy):
        from safetensors.numpy import load_file, save_file

        path = os.path.join(copy, "model.safetensors")
        tensors = load_file(path)
        del tensors["final_logits_bias"]
        save_file(tensors, path, metadata={"format": "pt"})

    copy = edited_copy(reference.directory, tmp_path, drop_bias)
    import_marian(copy, str(tmp_path / "run"))
    bias = load_run_model(str(tmp_path / "run")).get_layer("final_logits_bias").bias.numpy()
    assert bias[START_ID] == FORBIDDEN_LOGIT
    assert not np.delete(bias, START_ID).any()


def test_pytorch_bin_without_torch_says_torch_is_needed(reference, tmp_path, monkeypatch):
    def to_bin(copy):
        os.remove(os.path.join(copy, "model.safetensors"))
        pathlib.Path(copy, "pytorch_model.bin").write_bytes(b"not read")
    copy = edited_copy(reference.directory, tmp_path, to_bin)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    with pytest.raises(ImportError, match=r"pytorch_model.bin needs PyTorch \(pip install torch\)"):
        import_marian(copy, str(tmp_path / "run"))


def test_existing_run_directory_is_not_replaced(reference, run_dir):
    with pytest.raises(ValueError, match=r"exists; pass overwrite=True"):
        import_marian(reference.directory, run_dir)


# --------------------------------------------------------------------------
# End to end: the commands of docs/pretrained.md.
# --------------------------------------------------------------------------


def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_import_translate_export_and_serve_without_keras(reference, tmp_path):
    from keras_s2s.translator import Translator

    run = str(tmp_path / "run")
    run_cli("-m", "training.import_marian", "--model-dir", reference.directory, "--run-dir", run, cwd=tmp_path)
    sentences_ = SEARCH_SOURCES[:6] + [""]
    translator = Translator.from_run_dir(run, strategy=decoding.Beam(2, 0.0), jit_compile=False)
    expected = translator.translate(sentences_)
    printed = run_cli("-m", "training.translate", "--run-dir", run, "--beam-size", "2",
                      "--length-penalty", "0", *sentences_[:6], cwd=tmp_path)
    assert printed.splitlines() == expected[:6]
    run_cli("-m", "training.export", "--run-dir", run, "--name", "opus", "--base-dir",
            str(tmp_path / "saved"), "--beam-size", "2", "--length-penalty", "0", cwd=tmp_path)
    # A fresh process with tensorflow and tensorflow_text only, as TF Serving.
    script = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        f"model = tf.saved_model.load({str(tmp_path / 'saved' / 'opus' / '1')!r})\n"
        "out = model.signatures['serving_default'](inputs=tf.constant(json.loads(sys.argv[1])))\n"
        "print(json.dumps([t.decode('utf-8') for t in out['outputs'].numpy()]))\n"
        "print('keras_s2s' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(sentences_)], cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=""),
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served, imported_keras_s2s = result.stdout.splitlines()[-2:]
    assert json.loads(served) == expected
    assert expected[-1] == "" and any(expected[:-1])
    assert imported_keras_s2s == "False"


@pytest.mark.slow
def test_fine_tune_with_init_from_and_evaluate(reference, tmp_path):
    run = str(tmp_path / "run")
    import_marian(reference.directory, run)
    corpus = tmp_path / "pairs.tsv"
    pairs = zip(sentences(WORDS_SOURCE, 64, seed=5), sentences(WORDS_TARGET, 64, seed=6))
    corpus.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    tuned = str(tmp_path / "tuned")
    run_cli("-m", "training.train", "--run-dir", tuned, "--init-from", run, "--train", str(corpus),
            "--valid", str(corpus), "--test", str(corpus), "--epochs", "2", "--batch_tokens", "512",
            "--learning_rate", "1e-3", "--warmup_steps", "2", "--validation_bleu_sentences", "0",
            "--verbose", "0", cwd=tmp_path)
    history = json.loads(pathlib.Path(tuned, "metrics.json").read_text(encoding="utf-8"))["history"]
    assert history["loss"][-1] < history["loss"][0]
    before, after = load_run_model(run), load_run_model(tuned)
    assert not np.array_equal(before.weights[0].numpy(), after.weights[0].numpy())
    printed = run_cli("-m", "training.evaluate", "--run-dir", tuned, "--beam-size", "1", cwd=tmp_path)
    assert "BLEU" in printed
    keras.backend.clear_session()
