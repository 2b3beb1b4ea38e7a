"""keras_s2s.runtime: oneDNN kernels on every x86 CPU, unless the user chose."""

import os
import platform
import subprocess
import sys

import pytest

from keras_s2s.runtime import ONEDNN_ENV, prefer_onednn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_prefer_onednn_sets_it_on_x86(machine):
    environ = {}
    assert prefer_onednn(environ, machine) is True
    assert environ == {ONEDNN_ENV: "1"}


@pytest.mark.parametrize("value", ["0", "1", ""])
def test_prefer_onednn_keeps_the_users_choice(value):
    environ = {ONEDNN_ENV: value}
    assert prefer_onednn(environ, "x86_64") is False
    assert environ == {ONEDNN_ENV: value}


def test_prefer_onednn_leaves_arm_to_tensorflow():
    environ = {}
    assert prefer_onednn(environ, "aarch64") is False
    assert environ == {}


def _import_in_fresh_process(env_value):
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_ENV}
    if env_value is not None:
        env[ONEDNN_ENV] = env_value
    code = (
        "import os, keras_s2s\n"
        "from tensorflow.python.util import _pywrap_util_port\n"
        f"print(os.environ.get({ONEDNN_ENV!r}), _pywrap_util_port.IsMklEnabled())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 only")
def test_importing_keras_s2s_turns_onednn_on_in_tensorflow():
    # TensorFlow reads the variable when it is imported: keras_s2s sets it first.
    assert _import_in_fresh_process(None) == ["1", "True"]
    assert _import_in_fresh_process("0") == ["0", "False"]
