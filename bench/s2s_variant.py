"""Child process: keras_s2s on the shared workload, training then decoding.

Training is the path users take: `build_transformer(ModelConfig(...))`,
`keras_s2s.training.compile_model` (AdamW with warm-up schedule and global
clip-norm, label-smoothed `MaskedCrossEntropy`, masked token accuracy), then
`model.fit` on a tf.data dataset of the shared batches repeated. It is timed
by the peers' own `keras_timing.fit_and_time`: each epoch is one window of
WINDOW_STEPS steps, window time = epoch end - epoch begin (Keras callback
stamps), tokens = non-pad target tokens of the window's batches; the result
is the median over the timed windows after the warm-up windows.

Decoding uses a freshly initialised (random) model of the same config, so
that no row ends early: `decode` with `Greedy()` and `Beam(size=4)` of the
first BATCH sources, `max_length` = DECODE_NEW_TOKENS, end id EOS; the
output width is recorded to show the loop ran all steps.

`--precision mixed_bfloat16` sets that Keras dtype policy before both models
are built (bfloat16 matmuls, float32 variables and logits), the path of
`train.py --precision mixed_bfloat16`.

    python -m bench.s2s_variant --jit 0|1 --out PATH [--peak-gflops G]
                                [--precision float32|mixed_bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os

from bench import workload

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


BEAM_SIZE = 4
# Names of the token-embedding layers: their tables are excluded from the
# FLOP count's N (the output projection is not; it is a matmul).
EMBEDDING_LAYERS = ("source_embedding", "target_embedding")


def model_config(common):
    from keras_s2s import ModelConfig

    return ModelConfig(
        source_vocabulary_size=common.VOCAB,
        target_vocabulary_size=common.VOCAB,
        hidden_dim=common.D_MODEL,
        num_heads=common.HEADS,
        intermediate_dim=common.D_FF,
        num_encoder_layers=common.N_ENC,
        num_decoder_layers=common.N_DEC,
        dropout=common.DROPOUT,
        max_length=common.MAX_POS,
    )


def make_dataset(common, src, dec_in, labels):
    """The peers' pipeline (keras_timing.make_dataset) under keras_s2s's input names."""
    import tensorflow as tf

    from keras_s2s.models import DECODER_INPUT, ENCODER_INPUT

    inputs = {ENCODER_INPUT: src, DECODER_INPUT: dec_in}
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels))
    return dataset.batch(common.BATCH, drop_remainder=True).repeat().prefetch(2)


def mask_check(model, common, src, dec_in, labels):
    """Max |logit change| at real target positions when 8 pad ids are appended to the source."""
    import numpy as np

    from keras_s2s.models import DECODER_INPUT, ENCODER_INPUT

    rows = slice(0, common.BATCH)
    extended = np.concatenate([src[rows], np.zeros((common.BATCH, 8), np.int32)], axis=1)
    plain = model({ENCODER_INPUT: src[rows], DECODER_INPUT: dec_in[rows]}, training=False)
    padded = model({ENCODER_INPUT: extended, DECODER_INPUT: dec_in[rows]}, training=False)
    real = labels[rows] != common.PAD
    return float(np.abs(np.asarray(plain) - np.asarray(padded))[real].max())


def time_decode(common, decode, sources):
    """Times `decode(sources) -> (B, L) ids` with the shared repeat protocol."""
    import numpy as np

    box = {}

    def run():
        box["ids"] = np.asarray(decode(sources))

    first, seconds = common.time_repeats(run)
    median = float(np.median(seconds))
    ids = box["ids"]
    return {
        "first_call_seconds": first,
        "seconds": seconds,
        "median_seconds": median,
        "sentences_per_s": ids.shape[0] / median,
        "generated_shape": list(ids.shape),
        # A row holding END finished early; the loop still runs while any row is alive.
        "rows_with_end_id": int((ids == common.EOS).any(axis=1).sum()),
        "all_steps_run": ids.shape[1] == common.DECODE_NEW_TOKENS,
    }


def variant_name(jit: bool, precision: str) -> str:
    """keras_s2s_jit1, keras_s2s_jit0, keras_s2s_bf16_jit0, ..."""
    dtype = "" if precision == "float32" else "bf16_"
    return f"keras_s2s_{dtype}jit{int(jit)}"


def run(jit: bool, peak_gflops: float | None, precision: str = "float32") -> dict:
    common = workload.common()
    keras_timing = workload.peer_module("keras_timing")
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_dtype_policy(precision)

    from keras_s2s import build_transformer
    from keras_s2s.config import TrainConfig
    from keras_s2s.decoding import Beam, Greedy
    from keras_s2s.decoding import decode as decode_batch
    from keras_s2s.training import compile_model

    config = model_config(common)
    train_config = TrainConfig(label_smoothing=0.1, jit_compile=jit, precision=precision)
    result = {
        "name": variant_name(jit, precision),
        "jit_compile": jit,
        "precision": precision,
        "model_config": config.to_dict(),
        "train_config": {
            key: train_config.to_dict()[key]
            for key in ("learning_rate", "schedule", "warmup_steps", "weight_decay",
                        "clip_norm", "label_smoothing", "precision")
        },
        "compiled_with": "keras_s2s.training.compile_model: AdamW + MaskedCrossEntropy "
                         "+ masked accuracy metric",
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "tf_threads": {
            "intra": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "env": common.env_info(),
    }
    src, dec_in, labels = common.make_data()
    tokens_per_batch = common.tokens_per_batch(labels)

    keras.utils.set_random_seed(0)
    model = build_transformer(config)
    compile_model(model, train_config, jit_compile=jit)
    total, embedding = keras_timing.trainable_param_split(model, EMBEDDING_LAYERS)
    result["params"] = {
        "trainable_total": total,
        "embedding": embedding,
        "matmul_N": total - embedding,
        "analytic_reference_N": common.analytic_param_count(),
    }
    result["rss_mib_after_build"] = common.current_rss_mib()
    result["mask_check_max_abs_diff_extra_src_pads"] = mask_check(
        model, common, src, dec_in, labels
    )

    train = keras_timing.fit_and_time(
        model, make_dataset(common, src, dec_in, labels), tokens_per_batch
    )
    result["train"] = train
    result["peak_rss_mib_train"] = common.peak_rss_mib()
    common.add_mfu(result, result["params"]["matmul_N"], peak_gflops)
    print(
        f"train tokens/s median {train['tokens_per_s_median']:.1f}  "
        f"step {train['step_seconds_median']:.3f}s  "
        f"first step {train['first_step_seconds']:.1f}s",
        flush=True,
    )

    # A random model practically never ranks END first, so all rows run
    # DECODE_NEW_TOKENS steps, as the peers' samplers (which never stop) do.
    keras.utils.set_random_seed(1)
    decoder = build_transformer(config)
    sources = tf.constant(src[: common.BATCH])
    options = {
        "start_id": common.BOS,
        "end_id": common.EOS,
        "max_length": common.DECODE_NEW_TOKENS,
        "jit_compile": jit,
    }
    decode = {}
    decode["greedy_cached"] = time_decode(
        common, lambda s: decode_batch(decoder, s, Greedy(), **options)[0], sources
    )
    decode["beam4_cached"] = time_decode(
        common,
        lambda s: decode_batch(decoder, s, Beam(BEAM_SIZE, 0.6), **options)[0],
        sources,
    )
    decode["beam4_cost_per_sentence_vs_greedy"] = (
        decode["greedy_cached"]["sentences_per_s"] / decode["beam4_cached"]["sentences_per_s"]
    )
    for key in ("greedy_cached", "beam4_cached"):
        timing = decode[key]
        print(f"{key} {timing['sentences_per_s']:.1f} sentences/s, "
              f"shape {timing['generated_shape']}", flush=True)
    result["decode"] = decode
    result["decode_primary"] = "greedy_cached"
    result["decode_model"] = "freshly initialised (random) model, same config"
    result["peak_rss_mib_end"] = common.peak_rss_mib()
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jit", type=int, choices=(0, 1), required=True,
                        help="compile the train step and the searches with XLA")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"),
                        help="Keras dtype policy of both models (default %(default)s)")
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="fp32 matmul peak for MFU (default: none, MFU not computed)")
    args = parser.parse_args(argv)
    result = run(bool(args.jit), args.peak_gflops, args.precision)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=str)


if __name__ == "__main__":
    main()
