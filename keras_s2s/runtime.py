"""CPU runtime settings that must be in place before TensorFlow is imported.

TensorFlow turns its oneDNN kernels on by default only on x86 CPUs with
AVX512-VNNI, AVX512-BF16 or AMX; on an AVX2-only CPU it falls back to Eigen,
whose batched matmuls (attention, the einsum projections) spent about a sixth
of a profiled training step packing small blocks. On a 2-core AVX2 EPYC, a Multi30k training step
(4096 tokens, Transformer-tiny) took 4.4 s with Eigen and 1.6 s with oneDNN
(README, "Performance"). So keras_s2s asks for oneDNN on every x86 CPU, unless
the user has set `TF_ENABLE_ONEDNN_OPTS` (0 keeps Eigen).
"""

import os
import platform

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

