"""Test set-up shared by the whole suite."""

import os

# Two logical CPU devices for the MirroredStrategy tests; must be set before
# TensorFlow initialises its devices, so here, before any test imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# keras_s2s before TensorFlow: importing it sets TensorFlow's oneDNN default.
import keras_s2s  # noqa: F401
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """One MirroredStrategy over the two logical CPUs for the whole session:
    two strategies in one process reuse collective instance keys and abort
    each other's all-reduces."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


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
    import sys

    command = [sys.executable, "-m", "training.train", "--run-dir", str(run_dir)]
    for key, value in dict(TINY_SETTINGS, **overrides).items():
        command += [f"--{key}", str(value)]
    return command


def train_tiny_run(run_dir, **overrides):
    """Trains the tiny built-in run used by the end-to-end tests, through the CLI."""
    import subprocess

    result = subprocess.run(
        train_command(run_dir, **overrides), cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=900, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return str(run_dir)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A trained run directory (tiny model, built-in corpus), shared read-only."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny_run") / "run")


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
