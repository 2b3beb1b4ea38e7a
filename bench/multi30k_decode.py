"""Real-data decoding: Multi30k test2016 through a trained run, in process and exported.

The synthetic decode jobs feed fixed-shape batches to a random model; here a
trained Multi30k model decodes the 1000 test2016 sentences, whose lengths
vary and whose beams finish early, in the ways users run it:

- `in_process`: `Translator.translate`, what `training.evaluate` calls
  (all sentences at once, in its default batches: `Translator.default_batch_size`),
  under XLA (`jit_compile=True`);
  `in_process_jit0`: the same without XLA, `Translator`'s default;
- `saved_model`: `training.export`'s SavedModel (no XLA, as stock TF Serving
  runs it), loaded with `tf.saved_model.load`, its `serving_default` called
  with batches of request strings (`evaluation.saved_model_translate` for the
  whole test set, what `training.evaluate --saved-model` does);
- `fairseq`: `fairseq-generate --cpu --beam K --batch-size 128` on a
  fairseq-preprocessed copy of the same test set, optional.

Every (path, beam size) runs in its own child process, one at a time, so each
peak RSS (`wait4`) is that path's own. Per path: a first pass over the test
set (tracing and XLA compiles included) and a second one (steady state),
sentences/s and generated tokens/s; the latency (p50/p95) of one-sentence
requests and of 32-sentence requests (the test set in order, after one
untimed pass over the same requests); the mean hypothesis length; the
search shapes (and so XLA compilations) and `tf.function` traces; BLEU of
the hypotheses against the references, to show both sides decode models of
comparable quality.

    python -m bench.multi30k_decode --data-dir DIR --run-dir RUN --out PATH
        [--fairseq-venv VENV --fairseq-data-bin BIN --fairseq-checkpoint CKPT]
        [--paths in_process,saved_model,fairseq] [--beams 5,1] [--sentences N]

DIR holds Multi30k's `test2016.en` / `test2016.de` (github.com/multi30k/dataset,
data/task1/raw); RUN is a trained run directory (`training.train` with
training/configs/multi30k_en_de.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH_SIZE = 64  # SavedModel requests; in process, the Translator's default batch size
REQUEST_SIZE = 32
LATENCY_SENTENCES = 40
FAIRSEQ_BATCH_SIZE = 128
PATHS = ("in_process", "in_process_jit0", "saved_model", "fairseq")
DEFAULT_PATHS = ("in_process", "in_process_jit0", "saved_model", "fairseq")
SOURCE_FILE, REFERENCE_FILE = "test2016.en", "test2016.de"


def read_lines(path, limit=None):
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f]
    return lines[:limit] if limit else lines


def percentiles(seconds) -> dict:
    import numpy as np

    return {"p50_ms": float(np.percentile(seconds, 50) * 1e3),
            "p95_ms": float(np.percentile(seconds, 95) * 1e3),
            "calls": len(seconds)}


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def measure(translate_corpus, translate_request, sentences, count_pieces,
            latency=True) -> dict:
    """The timings of one path; `translate_*` map a list of str to a list of str.

    `translate_corpus` gets the whole test set (it batches it itself);
    `translate_request` gets one request as a client sends it.
    """
    hypotheses, first = timed(translate_corpus, sentences)
    again, second = timed(translate_corpus, sentences)
    pieces = count_pieces(hypotheses)
    result = {
        "sentences": len(sentences),
        "first_pass_seconds": first,
        "second_pass_seconds": second,
        "sentences_per_s_first_pass": len(sentences) / first,
        "sentences_per_s": len(sentences) / second,
        "tokens_per_s": pieces / second,
        "hypothesis_pieces": pieces,
        "mean_hypothesis_pieces": pieces / len(sentences),
        "mean_hypothesis_words": sum(len(h.split()) for h in hypotheses) / len(sentences),
        "second_pass_same_hypotheses": again == hypotheses,
    }
    if not latency:
        return result, hypotheses
    singles = sentences[:LATENCY_SENTENCES]
    for sentence in singles:  # untimed: traces / compiles the batch-1 shapes
        translate_request([sentence])
    result["latency_1"] = percentiles([timed(translate_request, [s])[1] for s in singles])
    requests = [sentences[i : i + REQUEST_SIZE] for i in range(0, len(sentences), REQUEST_SIZE)]
    untimed = [timed(translate_request, request)[1] for request in requests]
    seconds = [timed(translate_request, request)[1] for request in requests]
    result[f"latency_{REQUEST_SIZE}"] = percentiles(seconds[: len(sentences) // REQUEST_SIZE])
    result[f"requests_of_{REQUEST_SIZE}_sentences_per_s"] = len(sentences) / sum(seconds)
    result[f"requests_of_{REQUEST_SIZE}_first_pass_seconds"] = sum(untimed)
    return result, hypotheses


def run_keras_s2s(path, beam_size, data_dir, run_dir, sentences_limit, latency=True) -> dict:
    import sacrebleu
    import tensorflow as tf

    from keras_s2s.decoding import Beam
    from keras_s2s.evaluation import saved_model_translate
    from keras_s2s.export import export_run
    from keras_s2s.run_dir import TRAIN_CONFIG_FILE, RunDir
    from keras_s2s.translator import Translator

    sentences = read_lines(os.path.join(data_dir, SOURCE_FILE), sentences_limit)
    references = read_lines(os.path.join(data_dir, REFERENCE_FILE), sentences_limit)
    length_penalty = RunDir(run_dir).read_json(TRAIN_CONFIG_FILE).get("length_penalty", 0.6)
    translator = Translator.from_run_dir(
        run_dir, strategy=Beam(beam_size, length_penalty),
        jit_compile=path != "in_process_jit0",
    )

    def count_pieces(hypotheses):
        pieces = translator.target_tokenizer.tokenize(tf.constant(hypotheses, tf.string))
        return int(tf.reduce_sum(pieces.row_lengths()))

    extra = {}
    with tempfile.TemporaryDirectory() as scratch:
        if path.startswith("in_process"):
            def translate_corpus(batch):
                return translator.translate(batch)  # its default batch size, as evaluate uses

            translate_request = translate_corpus
        else:
            exported, export_seconds = timed(
                lambda: export_run(run_dir, "multi30k", base_dir=scratch,
                                   strategy=Beam(beam_size, length_penalty)))
            (loaded_translate, load_seconds) = timed(
                lambda: _corpus_translate(saved_model_translate, exported))
            serve = tf.saved_model.load(exported).signatures["serving_default"]
            extra.update(export_seconds=export_seconds, load_seconds=load_seconds)
            translate_corpus = loaded_translate

            def translate_request(batch):  # one request, as TF Serving receives it
                outputs = serve(inputs=tf.constant(batch, tf.string))["outputs"].numpy()
                return [text.decode("utf-8") for text in outputs]

        result, hypotheses = measure(translate_corpus, translate_request, sentences, count_pieces,
                                     latency)
    result.update(extra)
    result["bleu"] = sacrebleu.metrics.BLEU().corpus_score(hypotheses, [references]).score
    result["length_penalty"] = length_penalty
    result["max_new_tokens"] = translator.max_length
    # `search_shapes` is recent; the bench also runs older checkouts (before/after).
    if path.startswith("in_process") and hasattr(translator, "search_shapes"):
        shapes = translator.search_shapes
        # Under XLA a search compiles once per (beam, B, S rounded up to 8).
        compiled = {(beam, rows, -(-length // 8) * 8) for beam, rows, length in shapes}
        result["search_calls"] = sum(shapes.values())
        result["search_shapes"] = len(shapes)
        result["xla_compilations"] = len(compiled) if translator.jit_compile else 0
        result["search_traces"] = sum(
            function.experimental_get_tracing_count() for function in _searches(translator.model))
    elif path == "saved_model":
        result["search_traces"] = 0  # the loaded signature runs its saved graph: no tracing
        result["xla_compilations"] = 0
    return {"result": result, "hypotheses": hypotheses}


def _corpus_translate(saved_model_translate, exported):
    """`evaluation.saved_model_translate`'s corpus function, also of older checkouts."""
    import inspect

    if "batch_size" in inspect.signature(saved_model_translate).parameters:
        return saved_model_translate(exported, BATCH_SIZE)
    translate = saved_model_translate(exported)  # older: evaluate sent batches in file order
    return lambda sentences: [hypothesis for start in range(0, len(sentences), BATCH_SIZE)
                              for hypothesis in translate(sentences[start : start + BATCH_SIZE])]


def _searches(model):
    from keras_s2s import decoding

    return list(decoding._SEARCHES.get(model, {}).values())


FAIRSEQ_SUMMARY = re.compile(
    r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s "
    r"\(([\d.]+) sentences/s, ([\d.]+) tokens/s\)")


def parse_fairseq_log(text: str) -> dict:
    """`fairseq-generate` output -> hypotheses in test-set order and its own timing line."""
    hypotheses = {}
    for line in text.splitlines():
        if line.startswith("D-"):
            index, _score, hypothesis = (line[2:].split("\t") + ["", ""])[:3]
            hypotheses[int(index)] = hypothesis
    summary = FAIRSEQ_SUMMARY.search(text)
    if not summary:
        raise ValueError("no 'Translated N sentences (T tokens) in S s' line in the "
                         "fairseq-generate output")
    sentences, tokens = (int(summary.group(i).replace(",", "")) for i in (1, 2))
    return {
        "hypotheses": [hypotheses[i] for i in sorted(hypotheses)],
        "generate_sentences": sentences,
        # fairseq counts the generated tokens with EOS.
        "generate_tokens": tokens,
        "generate_seconds": float(summary.group(3)),
        "generate_sentences_per_s": float(summary.group(4)),
        "generate_tokens_per_s": float(summary.group(5)),
    }


def fairseq_command(venv, data_bin, checkpoint, beam_size) -> list[str]:
    return [os.path.join(venv, "bin", "fairseq-generate"), data_bin, "--path", checkpoint,
            "--cpu", "--beam", str(beam_size), "--batch-size", str(FAIRSEQ_BATCH_SIZE),
            "--gen-subset", "test", "--remove-bpe", "sentencepiece"]


def fairseq_env(env: dict) -> dict:
    """fairseq 0.12 checkpoints hold an argparse.Namespace, which torch >= 2.6 refuses to
    unpickle by default (`weights_only=True`); the checkpoint is the user's own, trained by
    `bench.fairseq_decode_model`, so the full load is allowed for fairseq-generate alone."""
    return {**env, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def fairseq_skip_reason(args) -> str | None:
    given = [args.fairseq_venv, args.fairseq_data_bin, args.fairseq_checkpoint]
    if not any(given):
        return ("fairseq peer: not asked for (pass --fairseq-venv, --fairseq-data-bin and "
                "--fairseq-checkpoint)")
    if not all(given):
        return ("fairseq peer: --fairseq-venv, --fairseq-data-bin and --fairseq-checkpoint go "
                f"together; received {given}")
    executable = os.path.join(args.fairseq_venv, "bin", "fairseq-generate")
    if not os.access(executable, os.X_OK):
        return f"fairseq peer: no fairseq-generate at {executable}"
    for name, path in (("--fairseq-data-bin", args.fairseq_data_bin),
                       ("--fairseq-checkpoint", args.fairseq_checkpoint)):
        if not os.path.exists(path):
            return f"fairseq peer: {name} {path} does not exist"
    return None


def skip_reason(args) -> str | None:
    """Why the keras_s2s job cannot run (missing data or run), or None."""
    if not args.data_dir or not args.run_dir:
        return "multi30k-decode: pass --data-dir (Multi30k test2016.en/.de) and --run-dir (a trained Multi30k run)"
    missing = [os.path.join(args.data_dir, name) for name in (SOURCE_FILE, REFERENCE_FILE)
               if not os.path.isfile(os.path.join(args.data_dir, name))]
    if missing:
        return f"multi30k-decode: no {', '.join(missing)} (--data-dir {args.data_dir})"
    # keras_s2s.run_dir.MODEL_FILE, spelled out: importing keras_s2s would load
    # TensorFlow into the orchestrating process, which only starts children.
    if not os.path.isfile(os.path.join(args.run_dir, "model.keras")):
        return f"multi30k-decode: --run-dir {args.run_dir} has no model.keras (train it first)"
    return None


def run_all(args) -> dict:
    """Every (path, beam) in its own child, one at a time; -> the job's JSON."""
    from bench.run import run_child

    result = {"sentences_file": os.path.join(args.data_dir or "", SOURCE_FILE),
              "run_dir": args.run_dir, "batch_size": BATCH_SIZE, "request_size": REQUEST_SIZE,
              "latency_sentences": LATENCY_SENTENCES, "by_path": {}, "not_measured": []}
    reason = skip_reason(args)
    if reason:
        result["skipped"] = reason
        return result
    fairseq_reason = fairseq_skip_reason(args)
    log_dir = args.log_dir or os.path.splitext(args.out)[0] + ".logs"
    os.makedirs(log_dir, exist_ok=True)
    env = dict(os.environ)
    for path in args.paths:
        if path == "fairseq" and fairseq_reason:
            result["not_measured"].append(fairseq_reason)
            continue
        for beam_size in args.beams:
            name = f"{path}_beam{beam_size}"
            log = os.path.join(log_dir, name + ".log")
            print(f"  {name} ...", end=" ", flush=True)
            if path == "fairseq":
                job = run_child(fairseq_command(args.fairseq_venv, args.fairseq_data_bin,
                                                args.fairseq_checkpoint, beam_size), log,
                                fairseq_env(env))
                row = fairseq_row(job, log, args, beam_size)
            else:
                out = os.path.join(log_dir, name + ".json")
                argv = [sys.executable, "-m", "bench.multi30k_decode", "--child", path,
                        "--beam", str(beam_size), "--data-dir", args.data_dir,
                        "--run-dir", os.path.abspath(args.run_dir), "--out", out]
                if args.sentences:
                    argv += ["--sentences", str(args.sentences)]
                if args.no_latency:
                    argv += ["--no-latency"]
                job = run_child(argv, log, env)
                row = {"error": f"exit {job['returncode']}; log {log}"}
                if job["returncode"] == 0:
                    with open(out, encoding="utf-8") as f:
                        row = json.load(f)["result"]
            row.update(peak_rss_mib=job["process_peak_rss_mib"], wall_seconds=job["wall_seconds"],
                       other_processes_cores=job["other_processes_cores"],
                       stolen_cores=job["stolen_cores"])
            result["by_path"][name] = row
            print(f"{row.get('sentences_per_s', float('nan')):.1f} sentences/s"
                  + (f"  FAILED: {row['error']}" if "error" in row else ""), flush=True)
    return result


def fairseq_row(job, log, args, beam_size) -> dict:
    import sacrebleu

    if job["returncode"] != 0:
        return {"error": f"fairseq-generate exit {job['returncode']}; log {log}"}
    with open(log, encoding="utf-8", errors="replace") as f:
        parsed = parse_fairseq_log(f.read())
    hypotheses = parsed.pop("hypotheses")
    references = read_lines(os.path.join(args.data_dir, REFERENCE_FILE))[: len(hypotheses)]
    sentences = parsed["generate_sentences"]
    return {
        **parsed,
        "command": " ".join(fairseq_command(args.fairseq_venv, args.fairseq_data_bin,
                                            args.fairseq_checkpoint, beam_size)),
        "sentences": sentences,
        # fairseq's own figure: decoding time, model loading excluded.
        "sentences_per_s": parsed["generate_sentences_per_s"],
        "tokens_per_s": parsed["generate_tokens_per_s"],
        "mean_hypothesis_pieces": (parsed["generate_tokens"] - sentences) / sentences,  # no EOS
        "mean_hypothesis_words": sum(len(h.split()) for h in hypotheses) / len(hypotheses),
        "bleu": sacrebleu.metrics.BLEU().corpus_score(hypotheses, [references]).score,
    }


LABELS = {"in_process": "keras_s2s in process (Translator, XLA)",
          "in_process_jit0": "keras_s2s in process (Translator, no XLA)",
          "saved_model": "keras_s2s SavedModel (serving_default, no XLA)",
          "fairseq": "fairseq-generate --cpu"}


def markdown_table(result: dict) -> str:
    """The job's table: one row per (path, beam), with the numbers measured."""
    if "by_path" not in result or result.get("skipped"):
        return result.get("skipped") or result.get("error") or "not run"

    def number(row, key, spec):
        value = row.get(key)
        return format(value, spec) if isinstance(value, (int, float)) else "–"

    def latency(row, key):
        value = row.get(key)
        return f"{value['p50_ms']:.0f} / {value['p95_ms']:.0f}" if value else "–"

    lines = [
        "| path | beam | sent/s (1st pass) | tokens/s | 1-sentence p50/p95 ms "
        f"| {REQUEST_SIZE}-sentence p50/p95 ms | mean hyp. pieces (words) | BLEU "
        "| XLA compiles / traces | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["by_path"].items():
        path, beam = name.rsplit("_beam", 1)
        if "error" in row:
            lines.append(f"| {LABELS.get(path, path)} | {beam} | failed: {row['error'][:100]} "
                         "| | | | | | | |")
            continue
        lines.append(
            f"| {LABELS.get(path, path)} | {beam} | {number(row, 'sentences_per_s', '.1f')} "
            f"({number(row, 'sentences_per_s_first_pass', '.1f')}) "
            f"| {number(row, 'tokens_per_s', '.0f')} | {latency(row, 'latency_1')} "
            f"| {latency(row, f'latency_{REQUEST_SIZE}')} "
            f"| {number(row, 'mean_hypothesis_pieces', '.1f')} "
            f"({number(row, 'mean_hypothesis_words', '.1f')}) | {number(row, 'bleu', '.2f')} "
            f"| {number(row, 'xla_compilations', 'd')} / {number(row, 'search_traces', 'd')} "
            f"| {number(row, 'peak_rss_mib', '.0f')} |")
    return "\n".join(lines + [f"\nNot measured: {note}" for note in result["not_measured"]])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.multi30k_decode",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with Multi30k test2016.en and test2016.de")
    parser.add_argument("--run-dir", help="a trained Multi30k run directory")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--paths", default=",".join(DEFAULT_PATHS),
                        help=f"comma-separated, of {', '.join(PATHS)} (default %(default)s)")
    parser.add_argument("--beams", default="5,1", help="beam sizes (default %(default)s; 1 = greedy)")
    parser.add_argument("--sentences", type=int, default=0,
                        help="only the first N test sentences (default: all)")
    parser.add_argument("--log-dir", help="children's logs and results (default: OUT minus "
                        ".json plus .logs)")
    parser.add_argument("--no-latency", action="store_true",
                        help="only the two passes over the test set (no request latencies)")
    parser.add_argument("--fairseq-venv", help="a virtualenv with fairseq installed")
    parser.add_argument("--fairseq-data-bin",
                        help="fairseq-preprocess output holding the same test set as `test`")
    parser.add_argument("--fairseq-checkpoint", help="a fairseq checkpoint trained on it")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--beam", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(args.paths) - set(PATHS))
    if unknown:
        parser.error(f"--paths: unknown {unknown}; choose from {list(PATHS)}")
    try:
        args.beams = [int(b) for b in args.beams.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--beams must be comma-separated integers; received {args.beams!r}")
    if not args.beams or min(args.beams) < 1:
        parser.error(f"--beams must be positive integers; received {args.beams}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        # Child: one path and beam size; the parent records its RSS.
        from keras_s2s import runtime  # noqa: F401  (oneDNN default before TensorFlow)

        result = run_keras_s2s(args.child, args.beam, args.data_dir, args.run_dir, args.sentences,
                               latency=not args.no_latency)
    else:
        result = run_all(args)
        if "skipped" in result:
            print(f"skipped: {result['skipped']}", flush=True)
        print(markdown_table(result), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
