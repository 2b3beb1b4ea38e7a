"""Import a Marian / OPUS-MT checkpoint: `python -m training.import_marian --model-dir DIR --run-dir RUN`.

DIR is a local Hugging Face checkpoint directory (config.json,
model.safetensors or pytorch_model.bin, source.spm, target.spm, vocab.json);
nothing is downloaded. RUN becomes an ordinary run directory: evaluate,
translate, export and `train --init-from RUN` work on it.
"""

import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.import_marian", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="the Marian checkpoint directory")
    parser.add_argument("--run-dir", required=True, help="the run directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--dropout", type=float,
                        help="dropout for fine-tuning (default: the checkpoint's config.json)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from keras_s2s.pretrained.marian import import_marian

    try:
        config = import_marian(
            args.model_dir, args.run_dir, overwrite=args.overwrite, dropout=args.dropout
        )
    except (ValueError, FileNotFoundError, ImportError) as error:
        sys.exit(f"error: {error}")
    print(f"imported {args.model_dir} into {args.run_dir}: {config.num_encoder_layers}+"
          f"{config.num_decoder_layers} layers, d={config.hidden_dim}, "
          f"{config.target_vocabulary_size} ids")


if __name__ == "__main__":
    main()
