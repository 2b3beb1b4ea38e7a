"""Helpers shared by the test modules: paths, tiny models and runs, graph inspection.

Test modules import shared code from here (and the layer checks from
`tests.layer_checks`), never from one another or from `conftest.py`.
"""

import os
import subprocess
import sys

import numpy as np

from keras_s2s import ModelConfig, build_transformer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Data read by path where it exists (never copied into the repository); tests
# that need it skip, naming the path, when it is absent.
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


# --------------------------------------------------------------------------
# Tiny models and batches.
# --------------------------------------------------------------------------


def make_config(num_decoder_layers=2, **overrides):
    """A tiny ModelConfig: source vocabulary 40, target 50, D=16, 2 heads."""
    return ModelConfig(
        **dict(
            dict(
                source_vocabulary_size=40,
                target_vocabulary_size=50,
                hidden_dim=16,
                num_heads=2,
                intermediate_dim=32,
                num_encoder_layers=2,
                num_decoder_layers=num_decoder_layers,
                dropout=0.0,
                max_length=16,
            ),
            **overrides,
        )
    )


def make_model(num_decoder_layers=2, **overrides):
    return build_transformer(make_config(num_decoder_layers, **overrides))


def make_tied_model(tie, num_decoder_layers=2, **overrides):
    # "all" needs one vocabulary: both sides get 50 ids.
    return make_model(
        num_decoder_layers, source_vocabulary_size=50, tie_embeddings=tie, **overrides
    )


def batch(rng, source_lengths=(5, 3), target_lengths=(4, 2), source_width=6, target_width=5):
    """A padded batch for `make_model`: rows of the given real lengths, pad id 0."""
    encoder = np.zeros((len(source_lengths), source_width), "int32")  # (B, S)
    decoder = np.zeros((len(target_lengths), target_width), "int32")  # (B, T)
    for row, length in enumerate(source_lengths):
        encoder[row, :length] = rng.integers(1, 40, size=length)
    for row, length in enumerate(target_lengths):
        decoder[row, :length] = rng.integers(1, 50, size=length)
    return {"encoder_tokens": encoder, "decoder_tokens": decoder}


def with_keras_mask(x, mask):
    """`x` as a tensor carrying `mask` as its implicit Keras mask."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    x._keras_mask = tf.convert_to_tensor(mask)
    return x


# --------------------------------------------------------------------------
# Tiny trained runs, through the CLI.
# --------------------------------------------------------------------------


TINY_SETTINGS = dict(
    builtin_train_size=400,
    vocabulary_size=120,
    hidden_dim=32,
    num_heads=2,
    intermediate_dim=64,
    num_encoder_layers=1,
    num_decoder_layers=2,
    dropout=0.0,
    max_length=40,
    batch_tokens=640,
    epochs=2,
    learning_rate=3e-3,
    warmup_steps=10,
    jit_compile=False,
    beam_size=2,
    backup_every_steps=5,
    verbose=0,
)


def train_command(run_dir, **overrides):
    """`python -m training.train` with the tiny settings, as a user would type it."""
    command = [sys.executable, "-m", "training.train", "--run-dir", str(run_dir)]
    for key, value in dict(TINY_SETTINGS, **overrides).items():
        command += [f"--{key}", str(value)]
    return command


def train_tiny_run(run_dir, **overrides):
    """Trains the tiny built-in run used by the end-to-end tests, through the CLI."""
    result = subprocess.run(
        train_command(run_dir, **overrides), cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=900, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return str(run_dir)


# --------------------------------------------------------------------------
# Exported graphs.
# --------------------------------------------------------------------------


def saved_graph(path):
    """The GraphDef (with its function library) of an exported SavedModel version."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto.meta_graphs[0].graph_def


def graph_dtypes(graph):
    """Every dtype named by a node attribute of the graph or its functions."""
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    dtypes = set()
    for node in nodes:
        for value in node.attr.values():
            dtypes.add(value.type)
            dtypes.update(value.list.type)
    return dtypes


# --------------------------------------------------------------------------
# Memory of the train step's loss and metric (docs/traps.md, trap 16).
# --------------------------------------------------------------------------


VOCABULARY_OF_THE_LOSS_STEP = 4000


def loss_and_metric_step(loss_fn, metric, rng, tokens=1024, hidden=16):
    """A train step's tail as a `tf.function`: projection, loss, gradients, metric update.

    A tied output projection (tokens, D) x (V, D)^T to (B, T, V) float32
    logits, the loss and its gradient for both factors, then the metric's
    update on the same logits (as Keras orders them: metrics after the
    gradient). V is `VOCABULARY_OF_THE_LOSS_STEP`.
    """
    import tensorflow as tf

    length, vocabulary = 32, VOCABULARY_OF_THE_LOSS_STEP
    states = tf.Variable(rng.normal(size=(tokens // length, length, hidden)).astype("float32"))
    table = tf.Variable(0.1 * rng.normal(size=(vocabulary, hidden)).astype("float32"))
    labels = tf.constant(rng.integers(1, vocabulary, (tokens // length, length)), "int32")

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            flat = tf.matmul(tf.reshape(states, [tokens, hidden]), table, transpose_b=True)
            logits = tf.reshape(flat, [tokens // length, length, vocabulary])  # (B, T, V)
            loss = loss_fn(labels, logits)
        gradients = tape.gradient(loss, [states, table])
        metric.update_state(labels, logits)
        return [tf.reduce_sum(g) for g in gradients]

    step.tokens = tokens
    return step


def logits_sized_buffers(step):
    """Peak of TensorFlow's CPU allocator in one call of `step`, in logits-sized float32 tensors.

    The allocator's own count (`get_memory_info`), not the RSS; the pool
    grows once in a first call, which is not counted. Which ops overlap can
    vary with the executor's thread order; `logits_sized_ops` is the
    deterministic check.
    """
    import tensorflow as tf

    step()
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return (peak - before) / (4 * step.tokens * VOCABULARY_OF_THE_LOSS_STEP)


# Ops that give a tensor another shape or name without computing a new one.
VIEW_OPS = frozenset({"Reshape", "Identity", "IdentityN", "Squeeze", "ExpandDims"})


def logits_sized_ops(step):
    """Op types of `step`'s graph that compute a tensor of the logits' size, (N, V) or (B, T, V)."""
    graph = step.get_concrete_function().graph
    return sorted(
        op.type for op in graph.get_operations()
        if op.type not in VIEW_OPS
        and any(
            output.shape.rank in (2, 3) and output.shape[-1] == VOCABULARY_OF_THE_LOSS_STEP
            and output.shape.num_elements() in (None, step.tokens * VOCABULARY_OF_THE_LOSS_STEP)
            for output in op.outputs
        )
    )


# --------------------------------------------------------------------------
# Comparing trained weights (strategy and accumulation equivalence).
# --------------------------------------------------------------------------


def relative_difference(weights, reference, initial):
    """||w - w_ref|| / ||w_ref - w_0||: the weights' disagreement relative to the update."""
    apart = np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(weights, reference)))
    moved = np.sqrt(sum(((b - c) ** 2).sum() for b, c in zip(reference, initial)))
    return apart / moved


def initial_weights():
    """The starting weights of `tests.training.distributed_job`'s model."""
    from tests.training import distributed_job
    import tensorflow as tf

    return distributed_job.build(tf.distribute.get_strategy()).get_weights()


def assert_same_weights(weights, reference, settings):
    if "optimizer" in settings:
        # Plain SGD: every weight, to float round-off.
        for a, b in zip(weights, reference):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    else:
        # AdamW turns the round-off of exactly-zero gradients (attention key
        # biases) into steps of up to +-lr: compare the whole update instead.
        # Clipping per replica (Keras's order) gives 0.24 here (docs/distributed-training.md).
        assert relative_difference(weights, reference, initial_weights()) < 2e-3
