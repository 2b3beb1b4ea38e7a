"""keras_s2s.runtime: oneDNN kernels on every x86 CPU, unless the user chose."""

import os
import platform
import re
import subprocess
import sys

import pytest

from keras_s2s.runtime import ONEDNN_ENV, prefer_onednn
from tests.helpers import REPO_ROOT


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


# --------------------------------------------------------------------------
# Quiet start-up.
# --------------------------------------------------------------------------

NOISE_SAMPLE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796395860.468993   10856 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796395959.392594   11377 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
]
NO_GPU_SAMPLE = [
    "I0000 00:00:1796395860.469402   10856 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "E0000 00:00:1796396019.019540   11829 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
REAL_LINES = [
    "E0000 00:00:1796396019.019540   11829 some_kernel.cc:52] Out of memory while allocating",
    "F0000 00:00:1796396019.019540   11829 op_kernel.cc:12] Check failed: oneDNN custom operations are on",
    "Traceback (most recent call last):",
]


def _lines(*groups):
    return "".join(line + "\n" for group in groups for line in group).encode()


def test_drop_noise_keeps_every_other_line_in_order():
    from keras_s2s.runtime import drop_noise, noise_patterns

    text = _lines(NOISE_SAMPLE[:2], REAL_LINES[:1], NO_GPU_SAMPLE, NOISE_SAMPLE[2:], REAL_LINES[1:])
    assert drop_noise(text, noise_patterns(gpu=False)) == _lines(REAL_LINES)


def test_with_a_gpu_the_cuda_lines_stay():
    from keras_s2s.runtime import drop_noise, noise_patterns

    text = _lines(NOISE_SAMPLE, NO_GPU_SAMPLE)
    assert drop_noise(text, noise_patterns(gpu=True)) == _lines(NO_GPU_SAMPLE)


def test_prefer_quiet_logs_only_without_a_gpu_and_keeps_the_users_choice():
    from keras_s2s.runtime import LOG_LEVEL_ENV, prefer_quiet_logs

    environ = {}
    assert prefer_quiet_logs(environ, gpu=False) is True
    assert environ == {LOG_LEVEL_ENV: "2"}
    environ = {}
    assert prefer_quiet_logs(environ, gpu=True) is False  # device discovery stays visible
    assert environ == {}
    environ = {LOG_LEVEL_ENV: "0"}
    assert prefer_quiet_logs(environ, gpu=False) is False
    assert environ == {LOG_LEVEL_ENV: "0"}


def _run(arguments, code=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable] + (["-c", code] if code else ["-m"] + arguments)
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _noise_in(stderr, gpu):
    from keras_s2s.runtime import noise_patterns

    pattern = noise_patterns(gpu)
    noisy = [line for line in stderr.splitlines() if pattern.fullmatch(line)]
    # Anything else TensorFlow's C++ side logged at start-up (absl line format).
    noisy += [line for line in stderr.splitlines() if re.match(r"[IWE]\d{4} \d\d:\d\d:", line)]
    return noisy


@pytest.mark.slow
def test_cli_start_up_prints_no_tensorflow_noise_and_errors_still_show(tmp_path):
    # A user's shell: TF_CPP_MIN_LOG_LEVEL unset.
    from keras_s2s.runtime import has_nvidia_gpu

    gpu = has_nvidia_gpu()
    shown = _run(["training.train", "--help"])
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "usage: python -m training.train" in shown.stdout
    assert _noise_in(shown.stderr, gpu) == []

    # An error still reaches stderr, named, and no noise with it.
    missing = tmp_path / "missing.json"
    failed = _run(["training.train", "--run-dir", str(tmp_path / "run"), "--config", str(missing)])
    assert failed.returncode != 0
    assert f"error: --config: no such file '{missing}'" in failed.stderr
    assert _noise_in(failed.stderr, gpu) == []


@pytest.mark.slow
def test_native_lines_written_while_importing_are_replayed_without_the_noise():
    # Stands in for a C++ library that logs during `import tensorflow`: its
    # real error reaches stderr, its start-up noise does not.
    code = (
        "import os, sys\n"
        "from keras_s2s.runtime import filtered_native_stderr, noise_patterns\n"
        "with filtered_native_stderr(noise_patterns(gpu=False)):\n"
        f"    os.write(2, {_lines(NOISE_SAMPLE, REAL_LINES[:1], NO_GPU_SAMPLE)!r})\n"
        "    print('python warning', file=sys.stderr)\n"
        "print('done')\n"
    )
    result = _run([], code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "done\n"
    assert result.stderr == REAL_LINES[0] + "\npython warning\n"
