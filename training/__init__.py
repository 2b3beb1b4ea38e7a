"""Thin command-line scripts over keras_s2s: train, evaluate, export, translate, import_marian, main_job."""

# TensorFlow's C++ start-up chatter is held back by keras_s2s.runtime, which
# every script imports (through keras_s2s) before TensorFlow.

# keras_s2s.config.LOAD_PRECISIONS (the --precision choices of evaluate,
# translate and export), spelled out: importing keras_s2s loads TensorFlow,
# which --help and flag errors should not wait for. tests/test_config.py checks
# that the two are equal.
LOAD_PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def add_precision_flag(parser, action):
    """--precision P: `action` ("decode", ...) under another dtype policy than the training's."""
    parser.add_argument(
        "--precision", choices=LOAD_PRECISIONS,
        help=f"{action} under this dtype policy instead of the training's "
             "(e.g. float32 for a mixed_bfloat16 run on a CPU without native bfloat16)",
    )
