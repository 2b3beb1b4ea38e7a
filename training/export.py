"""Export a trained run for TF Serving: `python -m training.export --run-dir RUN --name NAME [--version N] [--beam-size K]`.

Writes saved_models/NAME/<version>/ (the next integer version by default)
atomically; an existing version is never replaced without --overwrite.
"""

import argparse
import sys

from training import add_precision_flag


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a trained run directory")
    parser.add_argument("--name", required=True, help="model name: the folder under --base-dir")
    parser.add_argument("--base-dir", default="saved_models", help="where models live (default: saved_models)")
    parser.add_argument("--version", type=int, help="version number (default: next free)")
    parser.add_argument("--beam-size", type=int, help="beam size in the graph, 1 = greedy (default: the run's)")
    parser.add_argument("--length-penalty", type=float, help="GNMT alpha (default: the run's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument(
        "--jit-compile", action="store_true",
        help="run the search under XLA (faster on CPU); TF Serving then needs "
             "--xla_cpu_compilation_enabled=true",
    )
    add_precision_flag(parser, "export the graph")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from keras_s2s.export import export_run

    try:
        path = export_run(
            args.run_dir,
            args.name,
            base_dir=args.base_dir,
            version=args.version,
            beam_size=args.beam_size,
            length_penalty=args.length_penalty,
            overwrite=args.overwrite,
            precision=args.precision,
            jit_compile=args.jit_compile,
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(f"exported {path}")


if __name__ == "__main__":
    main()
