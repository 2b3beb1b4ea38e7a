"""Average a run's checkpoints: `python -m training.average --run-dir RUN (--last N | --best N [--metric M]) [--output-dir DIR] [--overwrite]`.

Writes DIR (default: RUN_DIR-avg) atomically as a complete run directory whose
model.keras holds the mean weights of the chosen epoch checkpoints, ready for
`training.evaluate --run-dir DIR` and `training.export --run-dir DIR`. An
existing DIR is never replaced without --overwrite.
"""

import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.average", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a trained run directory")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--last", type=int, metavar="N", help="average the last N epochs")
    which.add_argument("--best", type=int, metavar="N",
                       help="average the N best epochs by --metric")
    parser.add_argument(
        "--metric",
        help="with --best: a metrics.json history key; lower is better for losses, "
             "higher otherwise (default: val_loss)",
    )
    parser.add_argument("--output-dir", help="the new run directory (default: RUN_DIR-avg)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.metric is not None and args.best is None:
        sys.exit("error: --metric ranks epochs for --best; it does nothing with --last")
    output_dir = args.output_dir or os.path.normpath(args.run_dir) + "-avg"

    from keras_s2s.training.averaging import average_run  # imports TensorFlow: after flag errors

    try:
        info = average_run(
            args.run_dir,
            output_dir,
            last=args.last,
            best=args.best,
            metric=args.metric or "val_loss",
            overwrite=args.overwrite,
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    how = (f"last {args.last}" if args.last is not None
           else f"best {args.best} by {args.metric or 'val_loss'}")
    epochs = ", ".join(str(epoch) for epoch in info["epochs"])
    print(f"averaged {len(info['epochs'])} checkpoints of {args.run_dir} ({how}: epochs {epochs})")
    print(f"wrote {output_dir}")


if __name__ == "__main__":
    main()
