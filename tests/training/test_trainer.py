"""End-to-end training: the run directory, resume after SIGKILL, fine-tuning."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_s2s import ModelConfig
from keras_s2s.data import load_tokenizers
from keras_s2s.decoding import Beam, Greedy
from keras_s2s.training import freeze
from tests.helpers import REPO_ROOT, TINY_SETTINGS, train_command


@pytest.mark.slow
def test_run_directory_holds_everything(tiny_run):
    for name in ("config.json", "train_config.json", "model.keras", "metrics.json",
                 "source.model", "target.model", "checkpoints/epoch-002.weights.h5"):
        assert os.path.exists(os.path.join(tiny_run, name)), name
    metrics = json.load(open(os.path.join(tiny_run, "metrics.json")))
    losses = metrics["history"]["loss"]
    assert len(losses) == 2 and losses[1] < losses[0]
    config = ModelConfig.load(os.path.join(tiny_run, "config.json"))
    source, target = load_tokenizers(tiny_run)
    assert (config.source_vocabulary_size, config.target_vocabulary_size) == (
        source.vocabulary_size, target.vocabulary_size)


@pytest.mark.slow
def test_cli_run_model_reloads_with_identical_logits(tiny_run):
    # tiny_run was made by `python -m training.train` (tests/conftest.py).
    model = keras.saving.load_model(os.path.join(tiny_run, "model.keras"), compile=False)
    again = keras.saving.load_model(os.path.join(tiny_run, "model.keras"), compile=False)
    checkpoint = keras.saving.load_model(os.path.join(tiny_run, "model.keras"), compile=False)
    checkpoint.load_weights(os.path.join(tiny_run, "checkpoints", "epoch-002.weights.h5"))
    inputs = {"encoder_tokens": np.array([[5, 6, 7, 0]]), "decoder_tokens": np.array([[2, 9, 0]])}
    np.testing.assert_array_equal(np.asarray(model(inputs)), np.asarray(again(inputs)))
    np.testing.assert_array_equal(np.asarray(model(inputs)), np.asarray(checkpoint(inputs)))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_the_same_command_resumes(tmp_path):
    run_dir = tmp_path / "run"
    command = train_command(run_dir, epochs=3, backup_every_steps=2, builtin_train_size=1500)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backup = run_dir / "backup" / "training_metadata.json"
    deadline = time.time() + 300
    # Wait for a backup written mid-epoch 2 (epoch index 1), then kill hard.
    while time.time() < deadline:
        if backup.exists():
            try:
                state = json.loads(backup.read_text())
            except json.JSONDecodeError:
                state = {}
            if state.get("epoch", 0) >= 1 and state.get("batch", 0) > 0:
                break
        if process.poll() is not None:
            pytest.fail("training ended before it could be killed; make it longer")
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("no mid-epoch backup within 300 s")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "model.keras").exists()
    killed_at = json.loads(backup.read_text())

    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((run_dir / "metrics.json").read_text())["history"]["loss"]
    # Resumed at the killed epoch: fewer epochs ran in the second process.
    assert len(history) == 3 - killed_at["epoch"]
    assert (run_dir / "model.keras").exists()
    assert not (run_dir / "backup").exists()  # deleted after a finished run


@pytest.mark.slow
def test_fine_tuning_starts_at_the_run_loss_and_frozen_weights_stay(tiny_run, tmp_path):
    from keras_s2s.models import TransformerParts
    from keras_s2s.training import train
    from keras_s2s.training.settings import make_configs

    settings = {k: v for k, v in TINY_SETTINGS.items() if k not in (
        "hidden_dim", "num_heads", "intermediate_dim", "num_encoder_layers",
        "num_decoder_layers", "dropout", "max_length")}
    settings.update(epochs=1, learning_rate=1e-3, freeze_encoder=True, freeze_embeddings=True)
    _, train_config = make_configs(settings)
    base = keras.saving.load_model(os.path.join(tiny_run, "model.keras"), compile=False)
    model, history = train(str(tmp_path / "tuned"), train_config, init_from=tiny_run)

    scratch_first = json.load(open(os.path.join(tiny_run, "metrics.json")))["history"]["loss"][0]
    run_last = json.load(open(os.path.join(tiny_run, "metrics.json")))["history"]["loss"][-1]
    assert history["loss"][0] < scratch_first
    assert abs(history["loss"][0] - run_last) < 0.5 * abs(scratch_first - run_last)

    before, after = TransformerParts.from_model(base), TransformerParts.from_model(model)
    for name in ("source_embedding", "target_embedding"):
        for a, b in zip(getattr(before, name).get_weights(), getattr(after, name).get_weights()):
            np.testing.assert_array_equal(a, b)
    for layer_before, layer_after in zip(before.encoder_layers, after.encoder_layers):
        for a, b in zip(layer_before.get_weights(), layer_after.get_weights()):
            np.testing.assert_array_equal(a, b)
    changed = [not np.array_equal(a, b) for a, b in zip(
        before.decoder_layers[0].get_weights(), after.decoder_layers[0].get_weights())]
    assert any(changed)


@pytest.mark.slow
def test_init_from_rejects_architecture_flags(tiny_run, tmp_path):
    from keras_s2s.config import TrainConfig
    from keras_s2s.training import train

    with pytest.raises(ValueError, match=r"takes the architecture from that run's config.json; remove the architecture flags \['hidden_dim'\]"):
        train(str(tmp_path / "x"), TrainConfig(), {"hidden_dim": 64}, init_from=tiny_run)


@pytest.mark.slow
def test_init_from_cli_rejects_a_new_vocabulary(tiny_run, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training.train", "--run-dir", str(tmp_path / "x"),
         "--init-from", tiny_run, "--vocabulary_size", "500"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--init-from keeps the run's tokenizers; ['vocabulary_size'] cannot change" in result.stderr


@pytest.mark.slow
def test_mismatched_vocabulary_is_a_clear_error(tiny_run, tmp_path):
    import shutil

    from keras_s2s.training import train
    from keras_s2s.training.settings import make_configs

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    config = json.loads((broken / "config.json").read_text())
    config["target_vocabulary_size"] += 7
    (broken / "config.json").write_text(json.dumps(config))
    _, train_config = make_configs({k: v for k, v in TINY_SETTINGS.items() if k in (
        "builtin_train_size", "batch_tokens", "verbose", "jit_compile")})
    with pytest.raises(ValueError, match=r"Vocabulary mismatch: the tokenizers have \(source, target\) sizes"):
        train(str(tmp_path / "tuned"), train_config, init_from=str(broken))


def test_freeze_names_what_it_froze():
    from tests.helpers import make_model

    model = make_model()
    assert freeze(model, encoder=True) == [
        "source_embedding", "encoder_layer_0", "encoder_layer_1", "encoder_norm"]
    assert not model.get_layer("encoder_layer_0").trainable
    assert model.get_layer("decoder_layer_0").trainable


def test_freeze_with_one_shared_embedding_names_it_once():
    from tests.helpers import make_tied_model

    model = make_tied_model("all")
    assert freeze(model, embeddings=True) == ["shared_embedding"]
    assert not model.get_layer("shared_embedding").trainable


@pytest.mark.slow
def test_val_bleu_is_logged_each_epoch_and_matches_the_final_model(tiny_run):
    import sacrebleu

    from keras_s2s.data import read_corpus
    from keras_s2s.translator import Translator

    history = json.load(open(os.path.join(tiny_run, "metrics.json")))["history"]
    assert len(history["val_bleu"]) == len(history["loss"]) == 2
    # Recompute the last epoch's score from the saved model: the callback
    # scored the first `validation_bleu_sentences` validation pairs greedily.
    pairs = []
    for pair in read_corpus(os.path.join(tiny_run, "data", "valid.tsv")):
        if len(pairs) == 200:
            break
        pairs.append(pair)
    translator = Translator.from_run_dir(tiny_run, strategy=Greedy(), jit_compile=False)
    hypotheses = translator.translate([source for source, _ in pairs])
    bleu = sacrebleu.metrics.BLEU().corpus_score(hypotheses, [[t for _, t in pairs]]).score
    assert history["val_bleu"][-1] == pytest.approx(bleu, abs=1e-6)
    # TensorBoard got it too.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(tiny_run, "logs", "validation"))
    events.Reload()
    assert "epoch_bleu" in events.Tags()["tensors"]  # Keras files val_* under validation/


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(early_stopping_metric="bleu"), r"`early_stopping_metric` must be one of"),
        (dict(early_stopping_metric="val_bleu", early_stopping_patience=2,
              validation_bleu_sentences=0), r"needs validation_bleu_sentences > 0"),
        (dict(validation_bleu_sentences=-1), r"`validation_bleu_sentences` must be a non-negative"),
    ],
)
def test_monitoring_settings_are_validated(settings, match):
    from keras_s2s.config import TrainConfig

    with pytest.raises(ValueError, match=match):
        TrainConfig(**settings)


def test_bucket_boundaries_auto_are_one_per_length_without_xla_and_coarse_with_it():
    from keras_s2s.config import TrainConfig
    from keras_s2s.training.trainer import train_bucket_boundaries

    assert train_bucket_boundaries(TrainConfig(), 16, jit_compile=False) == list(range(1, 17))
    assert train_bucket_boundaries(TrainConfig(), 128, jit_compile=True) == list(range(8, 129, 8))
    for jit in (False, True):
        assert train_bucket_boundaries(TrainConfig(bucket_width=4), 16, jit) == [4, 8, 12, 16]
    with pytest.raises(ValueError, match=r"`bucket_width` must be a non-negative integer"):
        TrainConfig(bucket_width=-1)


@pytest.mark.slow
def test_mixed_bfloat16_run_trains_saves_and_translates(tmp_path):
    # `--precision mixed_bfloat16`: bfloat16 matmuls on CPUs with native
    # bfloat16 (AVX512-BF16 / AMX), float32 variables, logits and loss.
    from keras_s2s.translator import Translator
    from tests.helpers import train_tiny_run

    run_dir = train_tiny_run(tmp_path / "run", precision="mixed_bfloat16")
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["precision"] == "mixed_bfloat16"
    losses = metrics["history"]["loss"]
    assert np.isfinite(losses).all() and losses[1] < losses[0]
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    assert model.get_layer("decoder_layer_0").compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)
    inputs = {"encoder_tokens": np.array([[5, 6, 7, 0]]), "decoder_tokens": np.array([[2, 9, 0]])}
    assert model(inputs).dtype == "float32"
    translations = Translator.from_run_dir(run_dir, strategy=Beam(2), jit_compile=False).translate(
        ["The woman sleeps.", ""]
    )
    assert len(translations) == 2 and translations[1] == ""


    # --precision float32 serves it where bfloat16 is slow (no native support):
    # in process, through the evaluate CLI, and exported.
    from keras_s2s.evaluation import saved_model_translate
    from keras_s2s.export import export_run

    sentences = ["The woman sleeps.", "A dog runs in the park."]
    in_float32 = Translator.from_run_dir(run_dir, "float32", strategy=Beam(2), jit_compile=False)
    assert in_float32.parts.decoder_layers[0].compute_dtype == "float32"
    from tensorflow.core.framework import types_pb2

    from tests.helpers import graph_dtypes, saved_graph

    exported = export_run(run_dir, "bf16", base_dir=str(tmp_path / "saved"), strategy=Beam(2),
                          precision="float32")
    assert types_pb2.DT_BFLOAT16 not in graph_dtypes(saved_graph(exported))
    assert saved_model_translate(exported)(sentences) == in_float32.translate(sentences)
    as_trained = export_run(run_dir, "bf16", base_dir=str(tmp_path / "saved"), strategy=Beam(2))
    assert types_pb2.DT_BFLOAT16 in graph_dtypes(saved_graph(as_trained))
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--run-dir", run_dir, "--max-sentences", "8",
         "--beam-size", "1", "--precision", "float32", "--output-dir", str(tmp_path / "eval")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["precision"] == "float32"


def test_accumulation_through_train_counts_updates(tmp_path):
    # `--accumulation_steps 2`: the epoch counts batches, the optimizer updates.
    from keras_s2s.training import train
    from keras_s2s.training.settings import make_configs

    settings = dict(TINY_SETTINGS, accumulation_steps=2, epochs=1, steps_per_epoch=6,
                    validation_bleu_sentences=0, schedule="cosine", warmup_steps=1)
    model_settings, train_config = make_configs(settings)
    model, history = train(str(tmp_path / "run"), train_config, model_settings)
    optimizer = model.optimizer
    assert int(optimizer._iterations) == 6 and int(optimizer.iterations) == 3
    assert optimizer._learning_rate.total_steps == 3  # 1 epoch x 6 batches / 2
    assert np.isfinite(history["loss"]).all()
    reloaded = keras.saving.load_model(str(tmp_path / "run" / "model.keras"))
    assert reloaded.optimizer.accumulation_steps == 2


def test_an_epoch_of_many_lengths_has_one_shape_per_bucket_and_two_train_traces(tmp_path):
    # Over an epoch with every length from 1 to 120 words, the trainer's
    # batches come in at most one full-size shape per bucket (plus each
    # bucket's last, smaller batch when not repeating), and the train
    # function is not traced again per shape: the memory a Multi30k run
    # gains per new shape (bench/README.md, "multi30k-train") is not
    # retracing. A new bucket rule must keep both bounds.
    from bench.train_probe import traced_functions
    from keras_s2s import data
    from keras_s2s.models import build_transformer
    from keras_s2s.training import compile_model
    from keras_s2s.training.settings import make_configs
    from keras_s2s.training.trainer import train_bucket_boundaries, training_dataset

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    pairs = [
        (" ".join(rng.choice(words, n)), " ".join(rng.choice(words, max(1, n - 2))))
        for n in list(range(1, 121)) * 6
    ]
    model_settings, train_config = make_configs(
        dict(TINY_SETTINGS, max_length=128, batch_tokens=2048, vocabulary_size=50)
    )
    tokenizers = data.train_tokenizers(pairs, tmp_path, vocabulary_size=50)
    model_config = ModelConfig(
        source_vocabulary_size=tokenizers[0].vocabulary_size,
        target_vocabulary_size=tokenizers[1].vocabulary_size,
        **model_settings,
    )
    epoch = training_dataset(pairs, tokenizers, model_config, train_config, training=True, repeat=False)
    shapes = data.padding_statistics(epoch).shapes
    buckets = len(train_bucket_boundaries(train_config, 128, jit_compile=False))
    assert len({(s, t) for _, s, t in shapes}) <= buckets
    assert len(shapes) <= 2 * buckets

    model = build_transformer(model_config)
    compile_model(model, train_config, steps_per_epoch=10)
    repeated = training_dataset(pairs, tokenizers, model_config, train_config, training=True, repeat=True)
    model.fit(repeated, epochs=1, steps_per_epoch=sum(shapes.values()), verbose=0)
    # Keras traces its per-batch function once for the first shape, then
    # once more with unknown dimensions (reduce_retracing), and never again.
    traces = traced_functions(model.train_function)
    assert traces and max(traces.values()) <= 2, traces
