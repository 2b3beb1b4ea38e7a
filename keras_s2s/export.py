"""SavedModel export for TensorFlow Serving: strings in, strings out, versioned and atomic.

    saved_models/<name>/<version>/
        saved_model.pb, variables/
        assets/        source/target (or shared) .model/.vocab, config.json
        assets.extra/  tf_serving_warmup_requests (PredictionLog records),
                       decoding_strategy.json (the strategy in the graph, `Strategy.to_dict`)

Signatures:
    serving_default   inputs: string (N,) -> outputs: string (N,), scores: float32 (N,)
    translate_ids     encoder_tokens: int32 (N, S) -> ids: int32 (N, L), scores: float32 (N,)
                      (L = the max generated length, fixed: PAD (0) after END)

Everything runs in the graph: tensorflow-text SentencePiece tokenization,
the encoder, the search of the export's decoding strategy (greedy, beam or
sampling, see `keras_s2s.decoding`) with the KV cache in core TensorFlow
ops, and detokenization. No TensorFlow Addons op, no py_function and no
XLA-only op: stock TF Serving, which links core TensorFlow and
tensorflow-text, runs it (KNOWN_TRAPS 7, 8). A Sampling export samples at
every request: with a seed, the same request gives the same outputs;
without one, new outputs each time.

`jit_compile=True` (`--jit-compile`) marks the search (not the tokenizers,
which have no XLA kernels) for XLA, with source lengths padded to multiples
of 8 so that few shapes compile: faster on CPU, but TF Serving then needs
`--xla_cpu_compilation_enabled=true` (without it the search cannot run:
the warm-up at load time and every request fail).

Input handling at serving time (documented in docs/serving.md):
    * invalid UTF-8 bytes are replaced by U+FFFD before tokenization;
    * an empty or whitespace-only sentence gives "" with score 0.0;
    * a sentence longer than the model's `max_length` pieces is truncated
      to its first `max_length` pieces;
    * every input gets exactly one output, in order, for any batch size.

Shape legend: N batch, S source length, L generated length, K beam size.
"""

from __future__ import annotations

import os
import re

import tensorflow as tf

from keras_s2s import decoding
from keras_s2s.checks import check_bool, check_positive_int
from keras_s2s.data.tokenizers import END_ID, START_ID, load_tokenizers
from keras_s2s.files import atomic_directory
from keras_s2s.models import TransformerParts, load_run_model
from keras_s2s.run_dir import CONFIG_FILE, TOKENIZER_FILES, TRAIN_CONFIG_FILE, RunDir, read_json, write_json
from keras_s2s.translator import prepare_sources

WARMUP_FILE = "tf_serving_warmup_requests"
STRATEGY_FILE = "decoding_strategy.json"
WARMUP_SENTENCES = ("Hello.", "", "A longer sentence, to warm up a second shape of the graph.")


class TranslationModule(tf.Module):
    """The exported object: model, tokenizers and the two serving functions.

    Args:
        model: a model from `build_transformer`.
        source_tokenizer, target_tokenizer: `keras_s2s.data.Tokenizer`s
            (tf.Modules: attaching them here makes the SavedModel track
            their resources).
        strategy: the decoding strategy in the graph (`keras_s2s.decoding`).
        max_length: most generated tokens (default: model max_length - 1).
        asset_paths: files copied into the SavedModel's assets/.
        jit_compile: run the search under XLA (see the module docstring).
    """

    def __init__(
        self,
        model,
        source_tokenizer,
        target_tokenizer,
        *,
        strategy=decoding.DEFAULT_STRATEGY,
        max_length=None,
        asset_paths=(),
        jit_compile=False,
    ):
        super().__init__(name="keras_s2s_translation")
        # Only the tf.Variables are tracked, not the Keras layers: the
        # SavedModel then holds no Keras objects, and loading it needs
        # neither keras nor keras_s2s (TF Serving has neither).
        self.model_variables = [variable.value for variable in model.weights]
        object.__setattr__(self, "parts", TransformerParts.from_model(model))
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        decoding.check_strategy(strategy)
        self.strategy = strategy
        self.source_max_length = self.parts.source_embedding.max_length
        self.max_length = max_length or self.parts.target_embedding.max_length - 1
        self.assets = [tf.saved_model.Asset(path) for path in asset_paths]
        # The serving functions call it (their graphs hold it); saving also
        # finds it among the attributes, harmlessly.
        xla_search = tf.function(self._search_ids, jit_compile=True) if jit_compile else None
        object.__setattr__(self, "_xla_search", xla_search)

    def _search(self, encoder_tokens):
        """(N, S) ids -> ids (N, L), scores (N,), under XLA when `jit_compile`."""
        if self._xla_search is None:
            return self._search_ids(encoder_tokens)
        return self._xla_search(
            decoding.pad_source_to_bucket(encoder_tokens, self.source_max_length)
        )

    def _search_ids(self, encoder_tokens):
        """(N, S) ids -> ids (N, L), scores (N,), by the module's strategy."""
        return decoding.search_in_graph(
            self.parts,
            encoder_tokens,
            strategy=self.strategy,
            start_id=START_ID,
            end_id=END_ID,
            max_length=self.max_length,
            # Without XLA (as TF Serving runs it by default) a cache that grows
            # every step costs less than fixed-size ones; XLA needs fixed shapes.
            growing_cache=self._xla_search is None,
        )

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="encoder_tokens")])
    def translate_ids(self, encoder_tokens):
        ids, scores = self._search(encoder_tokens)
        return {"ids": ids, "scores": scores}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def serve(self, inputs):
        encoder_tokens, empty = prepare_sources(
            self.source_tokenizer, inputs, self.source_max_length
        )  # (N, S), (N,)
        ids, scores = self._search(encoder_tokens)
        outputs = self.target_tokenizer.detokenize(ids)  # (N,)
        return {
            "outputs": tf.where(empty, tf.constant(""), outputs),
            "scores": tf.where(empty, tf.zeros_like(scores), scores),
        }


def next_version(base_dir: str) -> int:
    """1 + the highest integer version folder in `base_dir` (1 when none)."""
    if not os.path.isdir(base_dir):
        return 1
    versions = [int(name) for name in os.listdir(base_dir) if re.fullmatch(r"\d+", name)]
    return max(versions, default=0) + 1


def write_warmup_requests(path: str, model_name: str, sentences=WARMUP_SENTENCES) -> None:
    """TF Serving warm-up: PredictionLog records replayed before serving traffic."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
    )
    request.inputs["inputs"].CopyFrom(
        tf.make_tensor_proto([s.encode("utf-8") for s in sentences], dtype=tf.string)
    )
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(log.SerializeToString())


def export_run(
    run_dir: str,
    name: str,
    *,
    base_dir: str = "saved_models",
    version: int | None = None,
    strategy: decoding.Strategy | None = None,
    overwrite: bool = False,
    precision: str | None = None,
    jit_compile: bool = False,
) -> str:
    """Exports a trained run to `base_dir/name/version/` atomically.

    The SavedModel is written to a temporary folder beside the target (same
    file system; TF Serving ignores folders whose names are not integers)
    and renamed into place, so a server watching `base_dir/name` never sees
    half a model. A failed export leaves no version folder behind.

    Args:
        run_dir: a trained run directory.
        name: the model name (the folder under `base_dir`).
        base_dir: where models live.
        version: the version number (default: the next free one).
        strategy: the decoding strategy in the graph (default: the run's,
            `Beam.from_train_settings`: its beam size and length penalty,
            size 1 = greedy); written to `assets.extra/decoding_strategy.json`.
        overwrite: replace an existing version instead of failing.
        precision: the dtype policy of the exported graph (see
            `load_run_model`); None keeps the training's. "float32" serves a
            mixed_bfloat16 run on CPUs without native bfloat16.
        jit_compile: run the search under XLA; TF Serving then needs
            `--xla_cpu_compilation_enabled=true` (module docstring).

    Returns:
        The path of the written version folder.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(
            f"`name` must be letters, digits, '_', '.', '-'; received name={name!r}"
        )
    check_bool("jit_compile", jit_compile)
    run = RunDir(run_dir)
    if strategy is None:
        strategy = decoding.Beam.from_train_settings(run.read_json(TRAIN_CONFIG_FILE, default={}))
    decoding.check_strategy(strategy)
    model_dir = os.path.join(base_dir, name)
    version = next_version(model_dir) if version is None else version
    check_positive_int("version", version)
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target) and not overwrite:
        raise ValueError(
            f"{target} exists; pass overwrite=True (--overwrite) to replace version {version}"
        )

    model = load_run_model(run_dir, precision)
    run.read_model_config()  # validates it
    source_tokenizer, target_tokenizer = load_tokenizers(run_dir)
    assets = [run.file(name) for name in (*TOKENIZER_FILES, CONFIG_FILE) if run.has(name)]
    module = TranslationModule(
        model,
        source_tokenizer,
        target_tokenizer,
        strategy=strategy,
        asset_paths=assets,
        jit_compile=jit_compile,
    )

    with atomic_directory(target, overwrite=overwrite) as staging:
        tf.saved_model.save(
            module,
            staging,
            signatures={
                "serving_default": module.serve.get_concrete_function(),
                "translate_ids": module.translate_ids.get_concrete_function(),
            },
        )
        extra = os.path.join(staging, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        write_warmup_requests(os.path.join(extra, WARMUP_FILE), name)
        write_json(os.path.join(extra, STRATEGY_FILE), strategy.to_dict())
    return target


def exported_strategy(path: str):
    """The decoding strategy in an exported version's graph, or None for an export without the file."""
    metadata = os.path.join(path, "assets.extra", STRATEGY_FILE)
    if not os.path.exists(metadata):
        return None
    return decoding.strategy_from_dict(read_json(metadata))
