"""Thin command-line scripts over keras_s2s: train, evaluate, export, main_job."""

import os

# TensorFlow's C++ start-up chatter hides the progress bar; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
