"""Translate sentences with a trained run: `python -m training.translate --run-dir RUN [SENTENCE ...]`.

Sentences come from the arguments, or one per line from standard input.
Prints one translation per line. --plot-attention PNG also draws the last
decoder layer's cross-attention of the first sentence.
"""

import argparse
import sys

from training import (
    add_precision_flag,
    add_strategy_flags,
    check_strategy_flags,
    strategy_options,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.translate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a trained run directory")
    parser.add_argument("sentences", nargs="*", help="source sentences (default: read stdin)")
    add_strategy_flags(parser)
    parser.add_argument("--plot-attention", metavar="PNG", help="write the first sentence's cross-attention here")
    add_precision_flag(parser, "decode")
    args = parser.parse_args(argv)
    check_strategy_flags(parser, args)
    return args


def main(argv=None):
    args = parse_args(argv)
    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    if not sentences:
        sys.exit("error: no sentences: pass them as arguments or on standard input")
    from keras_s2s.decoding import Beam, strategy_from_flags
    from keras_s2s.run_dir import TRAIN_CONFIG_FILE, RunDir
    from keras_s2s.translator import Translator, plot_attention

    try:
        settings = RunDir(args.run_dir).read_json(TRAIN_CONFIG_FILE)
        strategy = strategy_from_flags(
            args.strategy, strategy_options(args), Beam.from_train_settings(settings)
        )
        translator = Translator.from_run_dir(args.run_dir, args.precision, strategy=strategy)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    translations = translator.translate(sentences)
    for translation in translations:
        print(translation)
    if args.plot_attention:
        _, alignments = translator.translate(sentences[:1], return_attention=True)
        plot_attention(alignments[0], args.plot_attention, title=sentences[0])
        print(f"wrote {args.plot_attention}", file=sys.stderr)


if __name__ == "__main__":
    main()
