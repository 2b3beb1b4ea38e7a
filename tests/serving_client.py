"""Loads a SavedModel and calls serving_default, importing only tensorflow and tensorflow_text.

`python tests/serving_client.py SAVED_MODEL_DIR IN.json OUT.json` reads a
JSON list of sentences and writes {"outputs": [...], "scores": [...],
"modules": [...]}: the keras_s2s modules loaded, which must be none.
(`import tensorflow` itself loads parts of Keras in TF 2.21, so Keras cannot
be absent from any TensorFlow process; this script never imports it.)
"""

import json
import sys

import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the SentencePiece ops, as TF Serving links them

path, inputs_path, outputs_path = sys.argv[1:4]
with open(inputs_path, encoding="utf-8") as f:
    sentences = json.load(f)
serve = tf.saved_model.load(path).signatures["serving_default"]
result = serve(inputs=tf.constant([s.encode("utf-8", "surrogateescape") for s in sentences]))
with open(outputs_path, "w", encoding="utf-8") as f:
    json.dump(
        {
            "outputs": [t.decode("utf-8") for t in result["outputs"].numpy()],
            "scores": [float(x) for x in result["scores"].numpy()],
            "modules": sorted(
                name for name in sys.modules if name.split(".")[0] in ("keras_s2s", "keras_hub")
            ),
        },
        f,
    )
