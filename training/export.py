"""Export a trained run for TF Serving: `python -m training.export --run-dir RUN --name NAME [--version N] [--strategy S ...]`.

Writes saved_models/NAME/<version>/ (the next integer version by default)
atomically; an existing version is never replaced without --overwrite.
The graph decodes with the run's strategy (its beam size and length
penalty) or the one the strategy flags give.
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
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a trained run directory")
    parser.add_argument("--name", required=True, help="model name: the folder under --base-dir")
    parser.add_argument("--base-dir", default="saved_models", help="where models live (default: saved_models)")
    parser.add_argument("--version", type=int, help="version number (default: next free)")
    add_strategy_flags(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument(
        "--jit-compile", action="store_true",
        help="run the search under XLA (faster on CPU); TF Serving then needs "
             "--xla_cpu_compilation_enabled=true",
    )
    add_precision_flag(parser, "export the graph")
    args = parser.parse_args(argv)
    check_strategy_flags(parser, args)
    return args


def main(argv=None):
    args = parse_args(argv)
    from keras_s2s.decoding import Beam, strategy_from_flags
    from keras_s2s.export import export_run
    from keras_s2s.run_dir import TRAIN_CONFIG_FILE, RunDir

    try:
        settings = RunDir(args.run_dir).read_json(TRAIN_CONFIG_FILE, default={})
        strategy = strategy_from_flags(
            args.strategy, strategy_options(args), Beam.from_train_settings(settings)
        )
        path = export_run(
            args.run_dir,
            args.name,
            base_dir=args.base_dir,
            version=args.version,
            strategy=strategy,
            overwrite=args.overwrite,
            precision=args.precision,
            jit_compile=args.jit_compile,
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(f"exported {path}")


if __name__ == "__main__":
    main()
