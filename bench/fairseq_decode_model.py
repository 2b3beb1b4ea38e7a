"""A fairseq model for the multi30k-decode peer: same data, pieces, size and updates as a run.

fairseq-generate's speed depends on the model's size and on how long its
hypotheses are, so the peer decodes a fairseq Transformer of the keras_s2s
run's size (training/configs/multi30k_en_de.json: 4+4 layers, d=128, FF 256,
4 heads, pre-norm, all embeddings shared, dropout 0.3, Adam lr 0.005 with
1000 warm-up updates, inverse square root, label smoothing 0.1, 4096-token
batches), trained on the same Multi30k train set for as many updates as the
run made:

1. the run's own SentencePiece model (`shared.model`) cuts train, val and
   test2016 into pieces, so both models read and write the same pieces;
2. `fairseq-preprocess --joined-dictionary` binarizes them (`test` =
   test2016);
3. `fairseq-train --cpu ... --max-update N`.

    python -m bench.fairseq_decode_model --data-dir DIR --run-dir RUN \
        --fairseq-venv VENV --out-dir OUT --max-update N

Writes OUT/bin (the BIN directory) and OUT/checkpoints/checkpoint_last.pt;
then `python -m bench.run --only multi30k-decode ... --fairseq-venv VENV
--fairseq-data-bin OUT/bin --fairseq-checkpoint OUT/checkpoints/checkpoint_last.pt`.
"""

from __future__ import annotations

import argparse
import os
import subprocess

SPLITS = (("train", "train"), ("val", "valid"), ("test2016", "test"))  # ours -> fairseq's


def encode_pieces(run_dir: str, data_dir: str, out_dir: str) -> str:
    """Every split as space-separated pieces of the run's `shared.model`; -> the file prefix."""
    import sentencepiece

    model_path = os.path.join(run_dir, "shared.model")
    if not os.path.isfile(model_path):
        raise SystemExit(f"--run-dir {run_dir} has no shared.model (a shared-vocabulary run)")
    processor = sentencepiece.SentencePieceProcessor(model_file=model_path)
    prefix = os.path.join(out_dir, "pieces")
    for ours, theirs in SPLITS:
        for language in ("en", "de"):
            with open(os.path.join(data_dir, f"{ours}.{language}"), encoding="utf-8") as f, \
                    open(f"{prefix}.{theirs}.{language}", "w", encoding="utf-8") as out:
                for line in f:
                    pieces = processor.encode(line.rstrip("\r\n"), out_type=str)
                    out.write(" ".join(pieces) + "\n")
    return prefix


def preprocess_command(venv: str, prefix: str, bin_dir: str) -> list[str]:
    return [os.path.join(venv, "bin", "fairseq-preprocess"), "--source-lang", "en",
            "--target-lang", "de", "--trainpref", f"{prefix}.train",
            "--validpref", f"{prefix}.valid", "--testpref", f"{prefix}.test",
            "--destdir", bin_dir, "--joined-dictionary", "--workers", "2"]


def train_command(venv: str, bin_dir: str, save_dir: str, max_update: int) -> list[str]:
    """The committed Multi30k recipe, in fairseq's flags."""
    return [
        os.path.join(venv, "bin", "fairseq-train"), bin_dir, "--cpu", "--arch", "transformer",
        "--share-all-embeddings", "--encoder-layers", "4", "--decoder-layers", "4",
        "--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
        "--encoder-ffn-embed-dim", "256", "--decoder-ffn-embed-dim", "256",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
        "--encoder-normalize-before", "--decoder-normalize-before", "--dropout", "0.3",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.005",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "1000", "--weight-decay", "0.0001",
        "--clip-norm", "1.0", "--criterion", "label_smoothed_cross_entropy",
        "--label-smoothing", "0.1", "--max-tokens", "4096", "--max-update", str(max_update),
        "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format", "simple",
        "--log-interval", "50", "--seed", "1234",
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fairseq_decode_model",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True,
                        help="Multi30k raw files: train/val/test2016 .en and .de")
    parser.add_argument("--run-dir", required=True, help="the keras_s2s run to match")
    parser.add_argument("--fairseq-venv", required=True, help="a virtualenv with fairseq")
    parser.add_argument("--out-dir", required=True, help="where bin/ and checkpoints/ go")
    parser.add_argument("--max-update", type=int, required=True,
                        help="updates to train (the run's: epochs x steps per epoch)")
    args = parser.parse_args(argv)
    if args.max_update < 1:
        parser.error(f"--max-update must be a positive integer; received {args.max_update}")
    os.makedirs(args.out_dir, exist_ok=True)
    prefix = encode_pieces(args.run_dir, args.data_dir, args.out_dir)
    bin_dir = os.path.join(args.out_dir, "bin")
    subprocess.run(preprocess_command(args.fairseq_venv, prefix, bin_dir), check=True)
    save_dir = os.path.join(args.out_dir, "checkpoints")
    subprocess.run(train_command(args.fairseq_venv, bin_dir, save_dir, args.max_update),
                   check=True)
    print(f"BIN {bin_dir}\ncheckpoint {os.path.join(save_dir, 'checkpoint_last.pt')}")


if __name__ == "__main__":
    main()
