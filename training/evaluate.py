"""Evaluate a trained run: `python -m training.evaluate --run-dir RUN [--test CORPUS] [--strategy S ...]`.

Reports teacher-forced loss, masked token accuracy and perplexity, then
decodes the test set and scores it with sacreBLEU (BLEU and chrF, with their
signatures). With --tokenized-reference and --language it also reports the
lowercased, Moses-tokenised BLEU that papers quote (multi-bleu.perl style);
--hypotheses-tokenized scores a model trained on such tokenised text as it is,
and --raw-reference adds sacreBLEU/chrF of its detokenised output against the
untokenised references.
With --saved-model it decodes through an exported SavedModel instead, so an
export can be checked against in-process evaluation. Writes `hypotheses.txt`
and `metrics.json` to --output-dir.
"""

import argparse
import sys

from training import (
    add_precision_flag,
    add_strategy_flags,
    check_strategy_flags,
    strategy_flags_given,
    strategy_options,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a trained run directory")
    parser.add_argument(
        "--test",
        help='test corpus: a .tsv file or "SRC_FILE,TGT_FILE" (default: the run\'s `test` setting)',
    )
    add_strategy_flags(parser)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="sentences decoded together (default: 512; decoding runs without XLA)")
    parser.add_argument("--max-sentences", type=int, help="evaluate only the first N pairs")
    parser.add_argument("--output-dir", help="where hypotheses.txt and metrics.json go (default: RUN_DIR/eval)")
    parser.add_argument(
        "--tokenized-reference", metavar="PATH",
        help="lowercased, Moses-tokenised copy of the test targets, one line per pair "
             "(e.g. multi30k/tok/test2016.lc.norm.tok.de): adds the lc-tok BLEU; needs --language",
    )
    parser.add_argument(
        "--language", metavar="LANG",
        help="Moses code of the target language (e.g. de) for --tokenized-reference",
    )
    parser.add_argument(
        "--hypotheses-tokenized", action="store_true",
        help="the model outputs lowercased, Moses-tokenised text (trained on a tok/ copy; "
             "--test is one too): score it against --tokenized-reference as it is",
    )
    parser.add_argument(
        "--raw-reference", metavar="PATH",
        help="with --hypotheses-tokenized: the untokenised, cased test targets (e.g. "
             "multi30k/test2016.de); adds sacreBLEU and chrF of the detokenised hypotheses",
    )
    parser.add_argument(
        "--saved-model", metavar="DIR",
        help="decode through an exported version (saved_models/NAME/N, strings in and out) "
             "instead of in-process; its decoding strategy is the export's",
    )
    add_precision_flag(parser, "run the in-process model")
    args = parser.parse_args(argv)
    if args.saved_model and strategy_flags_given(args):
        parser.error("--saved-model decodes with the strategy fixed at export: "
                     f"drop {'/'.join(strategy_flags_given(args))}")
    check_strategy_flags(parser, args)
    if args.saved_model and args.precision:
        parser.error("--saved-model decodes with the precision fixed at export: drop --precision")
    if (args.tokenized_reference is None) != (args.language is None):
        parser.error("--tokenized-reference and --language go together: pass both or neither")
    if args.hypotheses_tokenized and args.tokenized_reference is None:
        parser.error("--hypotheses-tokenized needs --tokenized-reference and --language")
    if args.raw_reference and not args.hypotheses_tokenized:
        parser.error("--raw-reference is for a model with tokenised outputs: it needs "
                     "--hypotheses-tokenized (otherwise --test's targets are the raw reference)")
    return args


def main(argv=None):
    args = parse_args(argv)
    from keras_s2s.decoding import Beam, strategy_from_flags
    from keras_s2s.evaluation import evaluate_run
    from keras_s2s.run_dir import RunDir
    from keras_s2s.training.trainer import resolve_corpus

    try:
        train_config = RunDir(args.run_dir).read_train_config()
        spec = args.test or train_config.test
        if not spec:
            raise ValueError("no test corpus: pass --test (the run's `test` setting is empty)")
        corpus = resolve_corpus(spec, "test", args.run_dir, train_config)
        strategy = strategy_from_flags(
            args.strategy, strategy_options(args), Beam.from_train_settings(train_config.to_dict())
        )
        metrics = evaluate_run(
            args.run_dir,
            corpus,
            strategy=strategy,
            batch_size=args.batch_size,
            max_sentences=args.max_sentences,
            output_dir=args.output_dir,
            tokenized_reference=args.tokenized_reference,
            language=args.language,
            hypotheses_tokenized=args.hypotheses_tokenized,
            raw_reference=args.raw_reference,
            saved_model=args.saved_model,
            precision=args.precision,
        )
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(f"loss {metrics['loss']:.4f}  accuracy {metrics['accuracy']:.4f}  perplexity {metrics['perplexity']:.2f}")
    print(f"BLEU {metrics['bleu']:.2f}  ({metrics['bleu_signature']})")
    print(f"chrF {metrics['chrf']:.2f}  ({metrics['chrf_signature']})")
    if "bleu_lc_tok" in metrics:
        print(f"BLEU lc-tok {metrics['bleu_lc_tok']:.2f}  ({metrics['bleu_lc_tok_signature']})")
    if "raw_bleu" in metrics:
        print(f"raw-reference BLEU {metrics['raw_bleu']:.2f}  ({metrics['raw_bleu_signature']})")
        print(f"raw-reference chrF {metrics['raw_chrf']:.2f}  ({metrics['raw_chrf_signature']})")
    decoder = args.saved_model or _described(metrics["strategy"])
    print(f"{metrics['sentences']} sentences, {decoder}, "
          f"{metrics['sentences_per_second']:.1f} sentences/s")


def _described(strategy: dict) -> str:
    """"beam 5", "greedy", "sampling temperature=0.7 top_k=0 ..." from a strategy dict."""
    if strategy["name"] == "beam":
        return f"beam {strategy['size']}"
    return " ".join([strategy["name"], *(f"{k}={v}" for k, v in strategy.items() if k != "name")])


if __name__ == "__main__":
    main()
