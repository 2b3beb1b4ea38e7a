"""The main job behind `make run`: train on the built-in corpus, evaluate, export, translate.

    python -m training.main_job [--run-dir runs/builtin] [--config training/configs/builtin.json]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

# In the built-in grammar (keras_s2s/data/builtin.py), but not necessarily in its corpus.
EXAMPLES = (
    "The big dogs do not see a red cat in the garden.",
    "The woman that liked the apples sleeps.",
)


def step(title):
    print(f"\n=== {title} ===", flush=True)


def run(*command):
    """Runs a CLI of this repository as a user would, failing loudly."""
    subprocess.run([sys.executable, "-m", *command], check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.main_job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/builtin")
    parser.add_argument("--config", default="training/configs/builtin.json")
    parser.add_argument("--name", default="builtin", help="name under saved_models/")
    parser.add_argument("--fresh", action="store_true", help="delete the run directory first")
    args = parser.parse_args(argv)
    if args.fresh and os.path.exists(args.run_dir):
        shutil.rmtree(args.run_dir)
    started = time.perf_counter()

    # Loads TensorFlow (keras_s2s does) in this process too; it decodes at the end anyway.
    from keras_s2s.run_dir import MODEL_FILE, RunDir

    run_dir = RunDir(args.run_dir)
    step("train (built-in corpus)")
    if run_dir.has(MODEL_FILE):
        print(f"{args.run_dir} is already trained; `make run RUN_DIR=...` or --fresh for a new run")
    else:
        run("training.train", "--run-dir", args.run_dir, "--config", args.config)

    step("evaluate (beam search, sacreBLEU)")
    run("training.evaluate", "--run-dir", args.run_dir)

    step("export (SavedModel for TF Serving)")
    run("training.export", "--run-dir", args.run_dir, "--name", args.name)

    step("translate through the exported SavedModel")
    from keras_s2s.export import next_version  # first: keras_s2s quiets TensorFlow's start-up

    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the SentencePiece ops

    version = next_version(os.path.join("saved_models", args.name)) - 1
    path = os.path.join("saved_models", args.name, str(version))
    serving = tf.saved_model.load(path).signatures["serving_default"]
    with open(run_dir.builtin_corpus("test"), encoding="utf-8") as f:
        held_out = [line.split("\t")[0] for line, _ in zip(f, range(2))]
    sentences = list(EXAMPLES) + held_out
    result = serving(inputs=tf.constant(sentences))
    for source, target, score in zip(sentences, result["outputs"].numpy(), result["scores"].numpy()):
        print(f"  {source}\n  -> {target.decode('utf-8')}   (score {score:.3f})")
    print(f"\nmain job done in {time.perf_counter() - started:.0f} s; model in {path}")


if __name__ == "__main__":
    main()
