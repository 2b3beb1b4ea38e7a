"""Train a keras_s2s Transformer: `python -m training.train --run-dir runs/NAME [--config FILE] [--key value ...]`.

Settings: defaults < `--config` JSON file < flags. Restarting the same command
after an interruption resumes from the run directory's backup.
"""

import argparse
import json
import logging
import sys

from keras_s2s.training.settings import add_setting_flags, make_configs, resolve_settings

TOKENIZER_SETTINGS = ("vocabulary_size", "shared_vocabulary", "tokenizer_type")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run-dir", required=True, help="run directory (created, or resumed)")
    parser.add_argument("--config", help="JSON file of settings (flat keys, as the flags below)")
    parser.add_argument(
        "--init-from",
        help="fine-tune from this trained run directory (its config, tokenizers and weights)",
    )
    add_setting_flags(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    flags = {k: v for k, v in vars(args).items() if k not in ("run_dir", "config", "init_from")}
    try:
        values = resolve_settings(args.config, flags)
        model_settings, train_config = make_configs(values)
        if args.init_from:
            changed = sorted(set(TOKENIZER_SETTINGS) & set(values))
            if changed:
                raise ValueError(
                    f"--init-from keeps the run's tokenizers; {changed} cannot change "
                    "(a different vocabulary would not match the trained embeddings)"
                )
    except ValueError as error:
        sys.exit(f"error: {error}")
    print("settings:", json.dumps(train_config.to_dict(), sort_keys=True))
    if model_settings:
        print("architecture:", json.dumps(model_settings, sort_keys=True))

    from keras_s2s.training import train  # imports TensorFlow: after argument errors

    try:
        train(args.run_dir, train_config, model_settings, init_from=args.init_from)
    except ValueError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
