"""Inference does not import training: decoding, translating, evaluating and exporting
a model must work without `keras_s2s.training` (its optimizer, callbacks, trainer)."""

import subprocess
import sys

from tests.helpers import REPO_ROOT

INFERENCE_MODULES = ("keras_s2s.decoding", "keras_s2s.translator", "keras_s2s.evaluation",
                     "keras_s2s.export")


def test_inference_modules_import_nothing_from_training():
    # A fresh interpreter: the test session has long imported keras_s2s.training.
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in INFERENCE_MODULES)
        + "print(sorted(m for m in sys.modules if m.startswith('keras_s2s.training')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
