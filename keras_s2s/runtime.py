"""Runtime settings that must be in place before TensorFlow is imported.

Two jobs: oneDNN kernels on x86 CPUs (`prefer_onednn`), and a quiet start-up
(`quiet_tensorflow_startup`).

TensorFlow turns its oneDNN kernels on by default only on x86 CPUs with
AVX512-VNNI, AVX512-BF16 or AMX; on an AVX2-only CPU it falls back to Eigen,
whose batched matmuls (attention, the einsum projections) spent about a sixth
of a profiled training step packing small blocks. On a 2-core AVX2 EPYC, a Multi30k training step
(4096 tokens, Transformer-tiny) took 4.4 s with Eigen and 1.6 s with oneDNN
(docs/performance.md). So keras_s2s asks for oneDNN on every x86 CPU, unless
the user has set `TF_ENABLE_ONEDNN_OPTS` (0 keeps Eigen).
"""

import contextlib
import glob
import os
import platform
import re
import sys
import tempfile

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
X86_MACHINES = ("x86_64", "AMD64", "i386", "i686")


def prefer_onednn(environ=os.environ, machine=None) -> bool:
    """Sets `TF_ENABLE_ONEDNN_OPTS=1` on x86 unless it is set; returns whether it did.

    TensorFlow reads the variable once, when it is imported, so this must run
    before `import tensorflow` (importing keras_s2s first does it). On ARM,
    TensorFlow's oneDNN path runs through the Compute Library and is left to
    TensorFlow's own default.
    """
    if ONEDNN_ENV in environ or (machine or platform.machine()) not in X86_MACHINES:
        return False
    environ[ONEDNN_ENV] = "1"
    return True



# --------------------------------------------------------------------------
# Quiet start-up: TensorFlow's C++ start-up lines on machines without a GPU.
# --------------------------------------------------------------------------

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"

# Printed while `import tensorflow` loads its shared libraries (their static
# initialisers log before absl is initialised, so TF_CPP_MIN_LOG_LEVEL does
# not reach them), on every machine:
STARTUP_NOISE = (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"I\d{4} .*\] oneDNN custom operations are on\. .*",
    r"I\d{4} .*cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use .*",
    r"To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.",
)
# ... and on machines without an NVIDIA GPU only (where they say nothing the
# user can act on; with a GPU they are the reason it is not used, so they stay):
NO_GPU_NOISE = (
    r"I\d{4} .*cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\.",
    r"E\d{4} .*cuda_platform\.cc:\d+\] failed call to cuInit: .*",
)


def has_nvidia_gpu() -> bool:
    """Whether the machine shows an NVIDIA GPU, without any CUDA call.

    Linux: the driver (/proc/driver/nvidia) or a device node (/dev/nvidia0 ...);
    WSL2: its GPU paravirtualisation device (/dev/dxg).
    """
    return (
        os.path.exists("/proc/driver/nvidia")
        or os.path.exists("/dev/dxg")
        or bool(glob.glob("/dev/nvidia[0-9]*"))
    )


def prefer_quiet_logs(environ=os.environ, gpu=None) -> bool:
    """Sets `TF_CPP_MIN_LOG_LEVEL=2` without a GPU unless it is set; returns whether it did.

    Level 2 keeps TensorFlow's C++ errors and drops its info and warning lines.
    With a GPU the level stays TensorFlow's, so its device discovery ("Created
    device ... GPU:0") is shown.
    """
    gpu = has_nvidia_gpu() if gpu is None else gpu
    if gpu or LOG_LEVEL_ENV in environ:
        return False
    environ[LOG_LEVEL_ENV] = "2"
    return True


def noise_patterns(gpu: bool) -> "re.Pattern":
    """One regex matching a whole start-up noise line; CUDA lines only when `gpu` is False."""
    lines = STARTUP_NOISE + (() if gpu else NO_GPU_NOISE)
    return re.compile("|".join(f"(?:{line})" for line in lines))


def drop_noise(text: bytes, pattern: "re.Pattern") -> bytes:
    """`text` without the lines that `pattern` matches whole; every other line kept, in order."""
    kept = [
        line for line in text.splitlines(keepends=True)
        if not pattern.fullmatch(line.decode("utf-8", "replace").rstrip("\r\n"))
    ]
    return b"".join(kept)


@contextlib.contextmanager
def filtered_native_stderr(pattern):
    """Sends file descriptor 2 to a temporary file meanwhile, then replays it without noise.

    C++ libraries write to the descriptor, not to `sys.stderr`, so only a
    descriptor-level redirect can hold their lines back. Everything else they
    (or Python) wrote in the meantime reaches stderr when the block ends, also
    when it raises.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr descriptor: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = drop_noise(captured.read(), pattern)
            while text:
                text = text[os.write(2, text):]


def quiet_tensorflow_startup(environ=os.environ, gpu=None):
    """Imports TensorFlow and finds its devices without the C++ start-up noise.

    Must run before anything imports TensorFlow (importing keras_s2s does it).
    Also sets the C++ log level (`prefer_quiet_logs`). Does nothing if
    TensorFlow is already imported.
    """
    if "tensorflow" in sys.modules:
        return
    gpu = has_nvidia_gpu() if gpu is None else gpu
    prefer_quiet_logs(environ, gpu)
    with filtered_native_stderr(noise_patterns(gpu)):
        import tensorflow as tf

        # The CUDA platform is initialised (and cuInit fails on a machine
        # without a GPU) when devices are first listed: do it here, inside the
        # filter. Listing devices does not start the runtime, so logical
        # devices and distribution strategies can still be configured.
        tf.config.list_physical_devices("GPU")
