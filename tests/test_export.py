"""The TF Serving export: signatures, fresh-process parity, warmup, bad input, versions."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_s2s import export
from keras_s2s.decoding import Beam, Greedy, Sampling
from keras_s2s.translator import Translator
from tests.helpers import REPO_ROOT, saved_graph


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models")
    path = export.export_run(tiny_run, "tiny", base_dir=str(base), strategy=Beam(2))
    return str(base), path


def held_out(tiny_run, n=8):
    with open(os.path.join(tiny_run, "data", "test.tsv"), encoding="utf-8") as f:
        return [line.split("\t")[0] for line, _ in zip(f, range(n))]


def serve_in_fresh_process(path, sentences, tmp_path):
    inputs, outputs = tmp_path / "in.json", tmp_path / "out.json"
    inputs.write_text(json.dumps(sentences))
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tests", "serving_client.py"), path,
         str(inputs), str(outputs)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(outputs.read_text())


@pytest.mark.slow
def test_fresh_process_with_only_tf_and_tf_text_matches_the_translator(exported, tiny_run, tmp_path):
    _, path = exported
    sentences = held_out(tiny_run)
    served = serve_in_fresh_process(path, sentences, tmp_path)
    assert served["modules"] == []  # keras_s2s was never imported
    translator = Translator.from_run_dir(tiny_run, strategy=Beam(2), jit_compile=False)
    assert served["outputs"] == translator.translate(sentences)


@pytest.mark.slow
def test_version_layout_assets_and_config(exported, tiny_run):
    base, path = exported
    assert path == os.path.join(base, "tiny", "1")
    assets = set(os.listdir(os.path.join(path, "assets")))
    assert {"config.json", "source.model", "target.model"} <= assets
    assert os.path.exists(os.path.join(path, "assets.extra", export.WARMUP_FILE))
    assert [n for n in os.listdir(os.path.join(base, "tiny")) if n.startswith(".")] == []


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures(exported):
    _, path = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True,
                           text=True, timeout=300).stdout
    default = shown[shown.index("signature_def['serving_default']"):]
    assert re.search(r"inputs\['inputs'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)", default)
    assert re.search(r"outputs\['outputs'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)", default)
    assert re.search(r"outputs\['scores'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1\)", default)
    ids = shown[shown.index("signature_def['translate_ids']"):]
    assert re.search(r"inputs\['encoder_tokens'\] tensor_info:\s+dtype: DT_INT32\s+shape: \(-1, -1\)", ids)
    assert re.search(r"outputs\['ids'\] tensor_info:\s+dtype: DT_INT32\s+shape: \(-1, 39\)", ids)  # L = max_length
    assert re.search(r"outputs\['scores'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1\)", ids)


@pytest.mark.slow
def test_warmup_records_parse_and_are_answered(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, path = exported
    serve = tf.saved_model.load(path).signatures["serving_default"]
    records = list(tf.data.TFRecordDataset(os.path.join(path, "assets.extra", export.WARMUP_FILE)))
    assert records
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        inputs = tf.make_ndarray(request.inputs["inputs"])
        result = serve(inputs=tf.constant(inputs))
        assert result["outputs"].shape == inputs.shape


@pytest.mark.slow
def test_bad_inputs_through_the_loaded_saved_model(exported, tiny_run):
    _, path = exported
    serve = tf.saved_model.load(path).signatures["serving_default"]
    sentence = held_out(tiny_run, 1)[0]
    long_sentence = " ".join([sentence] * 20)  # far over max_length pieces: truncated
    batch = [b"", b"   \t ", b"The dog \xff\xfe sleeps.", long_sentence.encode()]
    result = serve(inputs=tf.constant(batch))
    outputs, scores = result["outputs"].numpy(), result["scores"].numpy()
    assert len(outputs) == 4 and len(scores) == 4
    assert outputs[0] == b"" and outputs[1] == b"" and scores[0] == 0.0 and scores[1] == 0.0
    assert np.isfinite(scores).all()
    one = serve(inputs=tf.constant([sentence.encode()]))
    assert one["outputs"].shape == (1,)
    many = serve(inputs=tf.constant([sentence.encode()] * 300))
    assert many["outputs"].shape == (300,)
    assert len(set(many["outputs"].numpy())) == 1 and many["outputs"].numpy()[0] == one["outputs"].numpy()[0]


@pytest.mark.slow
def test_translate_ids_signature(exported, tiny_run):
    _, path = exported
    loaded = tf.saved_model.load(path)
    translator = Translator.from_run_dir(tiny_run, strategy=Beam(2), jit_compile=False)
    encoder_tokens, _ = translator.encode_sources(held_out(tiny_run, 3))
    result = loaded.signatures["translate_ids"](encoder_tokens=tf.constant(encoder_tokens))
    ids, _ = translator.translate_ids(encoder_tokens)
    got = result["ids"].numpy()
    np.testing.assert_array_equal(got[:, : ids.shape[1]], ids)
    assert (got[:, ids.shape[1]:] == 0).all()


def xla_functions(graph):
    """Library functions marked for XLA (`tf.function(jit_compile=True)`)."""
    return [f for f in graph.library.function
            if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]


@pytest.mark.slow
def test_graph_holds_only_core_and_tf_text_ops(exported):
    # KNOWN_TRAPS 8: TF Serving links core TensorFlow and tensorflow-text only.
    from tensorflow.python.framework import op_def_registry

    _, path = exported
    graph = saved_graph(path)
    assert not xla_functions(graph)  # stock TF Serving needs no XLA flag for it
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    import tensorflow_text  # noqa: F401
    text_ops = {op for op in ops if "Sentencepiece" in op}
    assert text_ops, "the tokenizer ops should be in the graph"
    library_functions = {f.signature.name for f in graph.library.function}
    unknown = {op for op in ops - library_functions if op_def_registry.get(op) is None}
    assert not unknown
    forbidden = {op for op in ops if op.startswith("Xla") or "PyFunc" in op or op.startswith("Addons")}
    assert not forbidden, forbidden


@pytest.mark.slow
def test_second_export_is_version_2_and_existing_versions_are_kept(exported, tiny_run):
    base, first = exported
    second = export.export_run(tiny_run, "tiny", base_dir=base, strategy=Greedy())
    assert second.endswith(os.path.join("tiny", "2")) and os.path.exists(first)
    with pytest.raises(ValueError, match=r"tiny/1 exists; pass overwrite=True \(--overwrite\) to replace version 1"):
        export.export_run(tiny_run, "tiny", base_dir=base, version=1)


@pytest.mark.slow
def test_failure_mid_export_leaves_no_version_directory(tiny_run, tmp_path, monkeypatch):
    def broken_save(*args, **kwargs):
        os.makedirs(os.path.join(args[1], "variables"), exist_ok=True)  # half written
        raise RuntimeError("disk full")

    monkeypatch.setattr(export.tf.saved_model, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_run(tiny_run, "tiny", base_dir=str(tmp_path))
    assert os.listdir(tmp_path / "tiny") == []


@pytest.mark.slow
def test_export_script(tiny_run, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training.export", "--run-dir", tiny_run, "--name", "cli",
         "--base-dir", str(tmp_path), "--beam-size", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.exists(tmp_path / "cli" / "1" / "saved_model.pb")
    bad = subprocess.run(
        [sys.executable, "-m", "training.export", "--run-dir", tiny_run, "--name", "a/b",
         "--base-dir", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "`name` must be letters" in bad.stderr


@pytest.mark.slow
def test_xla_export_matches_the_xla_translator_in_a_fresh_process(tiny_run, tmp_path):
    # --jit-compile: the search (only) is an XLA function, sources padded to
    # multiples of 8 in the graph; the translations stay the Translator's.
    path = export.export_run(tiny_run, "tiny", base_dir=str(tmp_path / "saved"), strategy=Beam(2),
                             jit_compile=True)
    compiled = xla_functions(saved_graph(path))
    # Only the search (traced once per signature that calls it) is compiled.
    assert compiled and all("_search_ids" in f.signature.name for f in compiled)
    ops = {node.op for function in compiled for node in function.node_def}
    assert not {op for op in ops if "Sentencepiece" in op}  # tokenizers stay outside XLA
    sentences = held_out(tiny_run) + ["A sentence of more than eight pieces, so that padding varies."]
    served = serve_in_fresh_process(path, sentences, tmp_path)
    assert served["modules"] == []
    translator = Translator.from_run_dir(tiny_run, strategy=Beam(2), jit_compile=True)
    assert served["outputs"] == translator.translate(sentences)
    with pytest.raises(ValueError, match=r"`jit_compile` must be True or False; received jit_compile='yes'"):
        export.export_run(tiny_run, "tiny", base_dir=str(tmp_path / "saved"), jit_compile="yes")


@pytest.mark.parametrize(
    "length, limit, padded",
    [(1, 16, 8), (8, 16, 8), (9, 16, 16), (9, 12, 12), (13, 12, 13), (0, 16, 0)],
)
def test_pad_source_to_bucket_in_eager_and_in_a_graph(length, limit, padded):
    from keras_s2s.decoding import pad_source_to_bucket

    tokens = np.arange(1, 2 * length + 1, dtype="int64").reshape(2, length)
    in_graph = tf.function(
        lambda t: pad_source_to_bucket(t, limit),
        input_signature=[tf.TensorSpec([None, None], tf.int64)],
    )
    for result in (pad_source_to_bucket(tf.constant(tokens), limit), in_graph(tf.constant(tokens))):
        result = result.numpy()
        assert result.shape == (2, padded)
        np.testing.assert_array_equal(result[:, :length], tokens)  # ids kept, in place
        assert not result[:, length:].any()  # PAD (0) after them


@pytest.mark.slow
def test_a_sampling_export_samples_as_the_translator_and_a_seed_reproduces(tiny_run, tmp_path):
    seeded = Sampling(temperature=1.5, top_k=20, seed=9)
    path = export.export_run(tiny_run, "sampled", base_dir=str(tmp_path / "saved"), strategy=seeded)
    assert export.exported_strategy(path) == seeded  # assets.extra/decoding_strategy.json
    sentences = held_out(tiny_run)
    # The graph draws what the in-process search draws for the same rows, not greedy's ids.
    translator = Translator.from_run_dir(tiny_run, strategy=seeded, jit_compile=False)
    encoder_tokens, _ = translator.encode_sources(sentences)
    translate_ids = tf.saved_model.load(path).signatures["translate_ids"]
    got = translate_ids(encoder_tokens=tf.constant(encoder_tokens))
    ids, scores = translator.translate_ids(encoder_tokens)
    np.testing.assert_array_equal(got["ids"].numpy()[:, : ids.shape[1]], ids)
    np.testing.assert_allclose(got["scores"].numpy(), scores, atol=1e-4)
    greedy_ids, _ = translator.translate_ids(encoder_tokens, Greedy())
    assert ids.shape != greedy_ids.shape or (ids != greedy_ids).any()
    # Stock TensorFlow in fresh processes: the same request, the same samples.
    first = serve_in_fresh_process(path, sentences, tmp_path)
    assert first["modules"] == []
    assert serve_in_fresh_process(path, sentences, tmp_path)["outputs"] == first["outputs"]


@pytest.mark.slow
def test_an_unseeded_sampling_export_draws_anew_at_every_request(tiny_run, tmp_path):
    path = export.export_run(tiny_run, "fresh", base_dir=str(tmp_path / "saved"),
                             strategy=Sampling(temperature=2.0))
    assert export.exported_strategy(path) == Sampling(temperature=2.0)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    request = tf.constant([s.encode() for s in held_out(tiny_run)])
    first, second = (serve(inputs=request)["outputs"].numpy() for _ in range(2))
    assert (first != second).any()
