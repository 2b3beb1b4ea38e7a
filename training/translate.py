"""Translate sentences with a trained run: `python -m training.translate --run-dir RUN [SENTENCE ...]`.

Sentences come from the arguments, or one per line from standard input.
Prints one translation per line. --plot-attention PNG also draws the last
decoder layer's cross-attention of the first sentence.
"""

import argparse
import sys

from training import add_precision_flag


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.translate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a trained run directory")
    parser.add_argument("sentences", nargs="*", help="source sentences (default: read stdin)")
    parser.add_argument("--beam-size", type=int, help="beam size, 1 = greedy (default: the run's)")
    parser.add_argument("--length-penalty", type=float, help="GNMT alpha (default: the run's)")
    parser.add_argument("--plot-attention", metavar="PNG", help="write the first sentence's cross-attention here")
    add_precision_flag(parser, "decode")
    args = parser.parse_args(argv)
    if args.beam_size is not None and args.beam_size < 1:
        parser.error(f"--beam-size must be at least 1; received {args.beam_size}")
    return args


def main(argv=None):
    args = parse_args(argv)
    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    if not sentences:
        sys.exit("error: no sentences: pass them as arguments or on standard input")
    from keras_s2s.run_dir import TRAIN_CONFIG_FILE, RunDir
    from keras_s2s.translator import Translator, plot_attention

    try:
        settings = RunDir(args.run_dir).read_json(TRAIN_CONFIG_FILE)
        translator = Translator.from_run_dir(
            args.run_dir,
            args.precision,
            beam_size=args.beam_size or settings.get("beam_size", 4),
            length_penalty=(
                settings.get("length_penalty", 0.6) if args.length_penalty is None else args.length_penalty
            ),
        )
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
