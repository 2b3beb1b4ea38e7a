"""Thin command-line scripts over keras_s2s: train, evaluate, export, main_job."""

import os

# TensorFlow's C++ start-up chatter hides the progress bar; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# keras_s2s.config.LOAD_PRECISIONS (the --precision choices of evaluate,
# translate and export), spelled out: importing keras_s2s loads TensorFlow,
# which --help and flag errors should not wait for. tests/test_config.py checks
# that the two are equal.
LOAD_PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
