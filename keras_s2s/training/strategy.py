"""Choosing the tf.distribute strategy and the dtype policy for the hardware at hand."""

import json
import logging
import os

import keras
import tensorflow as tf

from keras_s2s.training.compat import apply_multi_worker_fix

log = logging.getLogger(__name__)


def _tf_config_workers():
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    return len(tf_config.get("cluster", {}).get("worker", []))


def resolve_strategy_name(name="auto", tpu=""):
    """What "auto" means here: TPU if named, multi-worker if TF_CONFIG lists
    several workers, mirrored over several local GPUs, else the default."""
    if name != "auto":
        return name
    if tpu or os.environ.get("TPU_NAME"):
        return "tpu"
    if _tf_config_workers() > 1:
        return "multi_worker"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def make_strategy(name="auto", tpu=""):
    """Creates the strategy; call before any other TensorFlow work (multi-worker needs it).

    Args:
        name: "auto", "default", "one_device", "mirrored", "multi_worker" or "tpu".
        tpu: TPU name/address for TPUStrategy ("" = from the environment).
    """
    name = resolve_strategy_name(name, tpu)
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif name == "multi_worker":
        apply_multi_worker_fix()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        raise ValueError(
            "`strategy` must be one of ['auto', 'default', 'one_device', 'mirrored', "
            f"'multi_worker', 'tpu']; received strategy={name!r}"
        )
    log.info("strategy: %s with %d replica(s)", name, strategy.num_replicas_in_sync)
    return strategy


def resolve_precision(precision, strategy):
    """"auto": bfloat16 on TPU, float16 on GPU (loss-scaled by Keras), float32 on CPU."""
    if precision != "auto":
        return precision
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "float32"


def set_precision(precision, strategy):
    policy = resolve_precision(precision, strategy)
    keras.mixed_precision.set_dtype_policy(policy)
    return policy
