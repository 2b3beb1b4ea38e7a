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


# The flags of each decoding strategy, spelled out for the same reason:
# `keras_s2s.decoding`'s `Strategy.FLAGS` (tests/test_config.py checks they
# are equal). Without --strategy the run's strategy applies: beam search
# (beam size 1 is greedy), so its flags are the beam ones.
STRATEGY_FLAGS = {
    "greedy": (),
    "beam": ("beam_size", "length_penalty"),
    "sampling": ("temperature", "top_k", "top_p", "seed"),
}
RUN_STRATEGY = "beam"


def add_strategy_flags(parser):
    """--strategy greedy|beam|sampling and the options of each."""
    parser.add_argument(
        "--strategy", choices=tuple(STRATEGY_FLAGS),
        help="decoding strategy (default: the run's: beam search with its --beam-size, 1 = greedy)",
    )
    parser.add_argument("--beam-size", type=int, help="beam: beam size, 1 = greedy (default: the run's)")
    parser.add_argument("--length-penalty", type=float, help="beam: GNMT alpha (default: the run's)")
    parser.add_argument("--temperature", type=float, help="sampling: divides the logits (default: 1.0)")
    parser.add_argument("--top-k", type=int, help="sampling: among the K most likely tokens (default: 0 = all)")
    parser.add_argument("--top-p", type=float, help="sampling: within the nucleus of mass P (default: 1.0 = all)")
    parser.add_argument("--seed", type=int, help="sampling: reproducible samples (default: new ones every run)")


def strategy_options(args) -> dict:
    """{dest: value or None} of every strategy option flag, for `decoding.strategy_from_flags`."""
    return {dest: getattr(args, dest) for flags in STRATEGY_FLAGS.values() for dest in flags}


def check_strategy_flags(parser, args):
    """`parser.error` naming an option flag given that is not one of the chosen strategy's."""
    kind = args.strategy or RUN_STRATEGY
    for dest, value in strategy_options(args).items():
        if value is not None and dest not in STRATEGY_FLAGS[kind]:
            flag = "--" + dest.replace("_", "-")
            owner = next(name for name, flags in STRATEGY_FLAGS.items() if dest in flags)
            chosen = f"--strategy {kind}" if args.strategy else f"the run's strategy ({kind})"
            parser.error(f"{flag} is an option of --strategy {owner}, not of {chosen}; "
                         f"drop {flag} or pass --strategy {owner}")


def strategy_flags_given(args) -> list[str]:
    """The strategy flags on the command line, e.g. ["--strategy", "--top-k"]."""
    given = ["--strategy"] if args.strategy else []
    return given + ["--" + dest.replace("_", "-")
                    for dest, value in strategy_options(args).items() if value is not None]
