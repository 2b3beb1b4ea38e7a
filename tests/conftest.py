"""Test set-up shared by the whole suite: environment, devices and fixtures.

Shared helper functions and constants live in `tests/helpers.py`; import them
from there, never from this file.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# keras_s2s before TensorFlow: importing it sets TensorFlow's oneDNN default.
import keras_s2s  # noqa: F401, E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests.helpers import train_tiny_run  # noqa: E402

# Two logical CPU devices for the MirroredStrategy tests; must be set before
# TensorFlow initialises its devices, so here, before any test uses it.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)


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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A trained run directory (tiny model, built-in corpus), shared read-only."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny_run") / "run")
