"""Child process: strings in, strings out through the exported SavedModel vs in-process.

The workload's model size (bench.s2s_variant.model_config: d=256, 3+3
layers, FF 1024), randomly initialised so that no sentence ends early, with
SentencePiece tokenizers of vocabulary 8000 per side trained on Multi30k
(bench.bucketing's cache; real English sentences as input). Both paths get
the same BATCH test2016 source sentences and run the same search, up to
the model's max_length - 1 new tokens (what the export allows):

- in process: `keras_s2s.Translator.translate` (tokenize, search under XLA or
  not, detokenize), beam 1 (greedy) and beam 4;
- exported: `training.export`'s SavedModel (`export_run`), loaded with
  `tf.saved_model.load`, its `serving_default` signature called with the
  strings: what stock TF Serving runs (no XLA);
- exported with `--jit-compile` (the search as an XLA function): what TF
  Serving runs with `--xla_cpu_compilation_enabled=true`.

Throughput: median of the shared protocol's repeats. Latency: one sentence
per call, LATENCY_CALLS calls after a warm-up, p50 and p95. The throughput
calls of the four paths of a beam size are timed in turns, one call each per
round, so that the VM's drift falls on all of them alike.

    python -m bench.serving --out PATH
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from bench import bucketing, workload

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LATENCY_CALLS = 40
BEAM_SIZES = (1, 4)


def write_run_dir(run_dir, model, config, tokenizers, beam_size):
    """A minimal run directory that `export_run` accepts."""
    from keras_s2s.run_dir import MODEL_FILE, TRAIN_CONFIG_FILE, RunDir

    run = RunDir(run_dir)
    os.makedirs(run.path, exist_ok=True)
    run.write_model_config(config)
    run.write_json(TRAIN_CONFIG_FILE, {"beam_size": beam_size, "length_penalty": 0.6})
    for tokenizer, name in zip(tokenizers, ("source", "target")):
        tokenizer.save(run.path, name)
    model.save(run.file(MODEL_FILE))


def served_translate(loaded):
    """Strings -> strings through a loaded export's serving_default signature."""
    import tensorflow as tf

    serve = loaded.signatures["serving_default"]

    def translate(batch):
        outputs = serve(inputs=tf.constant(batch))["outputs"].numpy()
        return [text.decode("utf-8") for text in outputs]

    return translate


def timed(translate, batch) -> float:
    started = time.perf_counter()
    translate(batch)
    return time.perf_counter() - started


def interleaved_throughput(common, translates, sentences) -> dict:
    """Throughput of each path, the timed calls taken in turns (one call per path per round).

    The VM's speed drifts during a run; timing the paths one after the other
    put that drift into their ratios, in turns it falls on all alike.
    The shared protocol otherwise: a first call (tracing / compiling), the
    other warm-up calls, then DECODE_REPEATS timed rounds; the median.
    """
    import numpy as np

    first = {}
    for name, translate in translates.items():
        first[name] = timed(translate, sentences)
        for _ in range(max(0, common.DECODE_WARMUP - 1)):
            translate(sentences)
    seconds = {name: [] for name in translates}
    for _ in range(common.DECODE_REPEATS):
        for name, translate in translates.items():
            seconds[name].append(timed(translate, sentences))
    results = {}
    for name in translates:
        median = float(np.median(seconds[name]))
        results[name] = {"first_call_seconds": first[name], "seconds": seconds[name],
                         "median_seconds": median, "sentences_per_s": len(sentences) / median}
    return results


def latencies(translates, sentence) -> dict:
    """p50 / p95 of one-sentence calls, LATENCY_CALLS per path after a warm-up call.

    Path after path, not in turns: a one-sentence call is short enough for
    the previous path's weights in the CPU caches to show in it.
    """
    import numpy as np

    results = {}
    for name, translate in translates.items():
        translate([sentence])  # warm-up: traces or compiles for batch 1
        seconds = [timed(translate, [sentence]) for _ in range(LATENCY_CALLS)]
        results[name] = {"p50_ms": float(np.percentile(seconds, 50) * 1e3),
                         "p95_ms": float(np.percentile(seconds, 95) * 1e3)}
    return results


def run() -> dict:
    common = workload.common()
    import dataclasses

    import keras
    import tensorflow as tf

    from bench.s2s_variant import model_config
    from keras_s2s import build_transformer
    from keras_s2s.decoding import Beam
    from keras_s2s.export import export_run
    from keras_s2s.translator import Translator

    source_path = os.path.join(bucketing.MULTI30K, "train.en")
    target_path = os.path.join(bucketing.MULTI30K, "train.de")
    (source_tokenizer, target_tokenizer), _ = bucketing.cached_tokenizers(
        source_path, target_path, bucketing.VOCABULARY_SIZE
    )
    with open(os.path.join(bucketing.MULTI30K, "test2016.en"), encoding="utf-8") as f:
        sentences = [line.strip() for line, _ in zip(f, range(common.BATCH))]

    config = dataclasses.replace(
        model_config(common),
        source_vocabulary_size=source_tokenizer.vocabulary_size,
        target_vocabulary_size=target_tokenizer.vocabulary_size,
    )
    keras.utils.set_random_seed(0)
    model = build_transformer(config)
    result = {"model_config": config.to_dict(), "sentences": len(sentences),
              "max_new_tokens": config.max_length - 1, "latency_calls": LATENCY_CALLS,
              "env": common.env_info(), "by_beam": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for beam_size in BEAM_SIZES:
            run_dir = os.path.join(scratch, f"run{beam_size}")
            write_run_dir(run_dir, model, config, (source_tokenizer, target_tokenizer), beam_size)
            # The export searches up to max_length - 1 new tokens and a random
            # model never ends early: the in-process search gets the same cap.
            translates = {
                f"in_process_jit{int(jit)}": Translator(
                    model, source_tokenizer, target_tokenizer, strategy=Beam(beam_size),
                    max_length=config.max_length - 1, jit_compile=jit,
                ).translate
                for jit in (True, False)
            }
            for jit, key in ((False, "saved_model"), (True, "saved_model_xla")):
                exported = export_run(run_dir, f"beam{beam_size}_jit{int(jit)}", base_dir=scratch,
                                      jit_compile=jit)
                translates[key] = served_translate(tf.saved_model.load(exported))
            row = interleaved_throughput(common, translates, sentences)
            for key, percentile in latencies(translates, sentences[0]).items():
                row[f"{key}_latency"] = percentile
            rate = {key: row[key]["sentences_per_s"]
                    for key in ("saved_model", "saved_model_xla", "in_process_jit1", "in_process_jit0")}
            row["saved_model_over_in_process"] = rate["saved_model"] / rate["in_process_jit1"]
            row["saved_model_over_in_process_no_xla"] = rate["saved_model"] / rate["in_process_jit0"]
            row["saved_model_xla_over_in_process"] = rate["saved_model_xla"] / rate["in_process_jit1"]
            result["by_beam"][str(beam_size)] = row
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if not os.path.isdir(bucketing.MULTI30K):
        result = {"skipped": f"no corpus at {bucketing.MULTI30K} (its sentences and tokenizers)"}
    else:
        result = run()
        for beam, row in result["by_beam"].items():
            print(f"beam {beam}: SavedModel {row['saved_model']['sentences_per_s']:.1f} sent/s, "
                  f"in-process XLA {row['in_process_jit1']['sentences_per_s']:.1f} "
                  f"({row['saved_model_over_in_process']:.2f}x); latency p50/p95 "
                  f"{row['saved_model_latency']['p50_ms']:.0f}/{row['saved_model_latency']['p95_ms']:.0f} ms; "
                  f"XLA export {row['saved_model_xla']['sentences_per_s']:.1f} sent/s "
                  f"({row['saved_model_xla_over_in_process']:.2f}x)", flush=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
