"""Evaluate a trained run: `python -m training.evaluate --run-dir RUN [--test CORPUS] [--beam-size K]`.

Reports teacher-forced loss, masked token accuracy and perplexity, then
decodes the test set and scores it with sacreBLEU (BLEU and chrF, with their
signatures). Writes `hypotheses.txt` and `metrics.json` to --output-dir.
"""

import argparse
import json
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a trained run directory")
    parser.add_argument(
        "--test",
        help='test corpus: a .tsv file or "SRC_FILE,TGT_FILE" (default: the run\'s `test` setting)',
    )
    parser.add_argument("--beam-size", type=int, help="beam size, 1 = greedy (default: the run's)")
    parser.add_argument("--length-penalty", type=float, help="GNMT alpha (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences decoded together (default: 64)")
    parser.add_argument("--max-sentences", type=int, help="evaluate only the first N pairs")
    parser.add_argument("--output-dir", help="where hypotheses.txt and metrics.json go (default: RUN_DIR/eval)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from keras_s2s.evaluation import evaluate_run
    from keras_s2s.training.trainer import TRAIN_CONFIG_FILE, resolve_corpus
    from keras_s2s.config import TrainConfig

    try:
        with open(os.path.join(args.run_dir, TRAIN_CONFIG_FILE), encoding="utf-8") as f:
            train_config = TrainConfig(**json.load(f))
        spec = args.test or train_config.test
        if not spec:
            raise ValueError("no test corpus: pass --test (the run's `test` setting is empty)")
        corpus = resolve_corpus(spec, "test", args.run_dir, train_config)
        metrics = evaluate_run(
            args.run_dir,
            corpus,
            beam_size=args.beam_size or train_config.beam_size,
            length_penalty=(
                train_config.length_penalty if args.length_penalty is None else args.length_penalty
            ),
            batch_size=args.batch_size,
            max_sentences=args.max_sentences,
            output_dir=args.output_dir,
        )
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(f"loss {metrics['loss']:.4f}  accuracy {metrics['accuracy']:.4f}  perplexity {metrics['perplexity']:.2f}")
    print(f"BLEU {metrics['bleu']:.2f}  ({metrics['bleu_signature']})")
    print(f"chrF {metrics['chrf']:.2f}  ({metrics['chrf_signature']})")
    print(f"{metrics['sentences']} sentences, beam {metrics['beam_size']}, "
          f"{metrics['sentences_per_second']:.1f} sentences/s")


if __name__ == "__main__":
    main()
