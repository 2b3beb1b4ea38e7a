"""bench/profile_ops.py: naming XLA thunks by the TensorFlow ops they came from.

The parsing tests use a hand-written HLO excerpt and a synthetic trace; the
slow test profiles a real XLA search, so a TensorFlow release that renames or
drops the per-thunk trace events fails here instead of printing an empty table.
"""

import os
import subprocess
import sys

import pytest

from bench import profile_ops, workload

# Lines in the format of XLA's `*after_optimizations.txt` dump (shortened).
HLO_TEXT = """\
HloModule a_inference_search_2995__XlaMustCompile_true, entry_computation_layout={()->()}

%fused_computation.16 (param_0: f32[64,8000]) -> (f32[64], s32[64]) {
  %param_0 = f32[64,8000]{1,0} parameter(0)
}

%body (loop: (s32[])) -> (s32[]) {
  %MatMul.102 = f32[64,8000]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_type="MatMul" op_name="while/logits_1/Tensordot/MatMul"}
  %iota_reduce_fusion = (f32[64]{0}, s32[64]{0}) fusion(%x, %MatMul.102), kind=kLoop, calls=%fused_computation.16, metadata={op_type="ArgMax" op_name="while/ArgMax"}
  %dot.171 = f32[64,768]{1,0} dot(%c, %d), metadata={op_type="Einsum" op_name="while/decoder_layer_0_1/self_attention_block_1/causal_self_attention_1/einsum/Einsum"}
  ROOT %dot.179 = f32[64,768]{1,0} dot(%e, %f), metadata={op_type="Einsum" op_name="while/decoder_layer_1_1/self_attention_block_1/causal_self_attention_1/einsum/Einsum"}
}

ENTRY %main () -> () {
  %copy.3 = f32[4]{0} copy(%g)
  ROOT %while.4 = (s32[]) while(%init), condition=%cond, body=%body, metadata={op_type="While" op_name="while"}
}
"""

SELF_ATTENTION = "decoder_layer/self_attention_block/causal_self_attention/einsum/Einsum"


def test_hlo_instructions_give_opcode_and_tensorflow_op():
    instructions = profile_ops.hlo_instructions(HLO_TEXT)
    assert instructions["MatMul.102"] == ("dot", "while/logits_1/Tensordot/MatMul")
    # A tuple shape holds spaces; the opcode is still found.
    assert instructions["iota_reduce_fusion"] == ("fusion", "while/ArgMax")
    assert instructions["dot.179"][0] == "dot"  # ROOT instructions too
    assert instructions["while.4"] == ("while", "while")
    assert instructions["copy.3"] == ("copy", "")


@pytest.mark.parametrize(
    ("op_name", "group"),
    [
        ("while/decoder_layer_0_1/self_attention_block_1/causal_self_attention_1/einsum/Einsum",
         SELF_ATTENTION),
        ("while/decoder_layer_2_1/self_attention_block_1/causal_self_attention_1/einsum/Einsum",
         SELF_ATTENTION),
        ("while/while/logits_1/Tensordot/MatMul", "logits/Tensordot/MatMul"),
        ("while/GatherV2_3", "GatherV2"),
        ("", "(no TensorFlow op)"),
    ],
)
def test_tf_op_group_merges_layers_and_steps(op_name, group):
    assert profile_ops.tf_op_group(op_name) == group


def write_trace(path, events):
    """An XSpace file with one plane and one line of (name, duration in ms) events."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    line = plane.lines.add(name="tf_numa_-1_Eigen/1")
    for index, (name, milliseconds) in enumerate(events, start=1):
        plane.event_metadata[index].id = index
        plane.event_metadata[index].name = name
        line.events.add(metadata_id=index, duration_ps=int(milliseconds * 1e9))
    with open(path, "wb") as file:
        file.write(space.SerializeToString())
    return str(path)


def test_thunk_summary_counts_thunks_only_and_merges_layers(tmp_path):
    path = write_trace(tmp_path / "t.xplane.pb", [
        ("MatMul.102", 40.0),
        ("dot.171", 20.0),
        ("dot.179", 20.0),
        ("iota_reduce_fusion", 20.0),
        ("while.4", 500.0),  # spans the thunks above: not counted again
        ("ThunkExecutor::Execute", 300.0),  # not an instruction of the module
    ])
    summary = profile_ops.xla_thunk_summary(
        [path], profile_ops.hlo_instructions(HLO_TEXT), calls=2, top=10)
    assert summary["busy_thunk_ms_per_call"] == pytest.approx(50.0)
    assert summary["by_tf_op"] == [
        ("logits/Tensordot/MatMul", 40.0), (SELF_ATTENTION, 40.0), ("ArgMax", 20.0)]
    assert summary["heaviest_hlo"][0] == ("MatMul.102", "dot", 0, 40.0, "logits/Tensordot/MatMul")


def test_thunk_summary_without_thunk_events_says_which_flag_is_missing(tmp_path):
    path = write_trace(tmp_path / "t.xplane.pb", [("ThunkExecutor::Execute", 3.0)])
    with pytest.raises(RuntimeError, match="--xla_cpu_enable_xprof_traceme=true"):
        profile_ops.xla_thunk_summary([path], profile_ops.hlo_instructions(HLO_TEXT), 1, 5)


def test_xla_flags_keep_the_users_own_flags():
    flags = profile_ops.xla_flags_for_profile("/tmp/d", "--xla_cpu_enable_fast_math=false")
    assert flags.split() == ["--xla_cpu_enable_fast_math=false",
                             "--xla_cpu_enable_xprof_traceme=true",
                             "--xla_dump_to=/tmp/d", "--xla_dump_hlo_as_text"]
    assert profile_ops.xla_flags_for_profile("/tmp/d", None).startswith("--xla_cpu_enable")


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--xla", "--train-steps", "4"], "--train-steps must be 0"),
     (["--xla", "--decode-calls", "0"], "--decode-calls >= 1")],
)
def test_xla_mode_rejects_what_it_cannot_profile(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        profile_ops.main(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isfile(os.path.join(workload.PEERS_DIR, "common.py")),
    reason="../shared/bench/peers is not beside the repository",
)
def test_xla_profile_of_a_real_greedy_search_names_the_output_projection():
    # A child process: XLA reads XLA_FLAGS once, when TensorFlow starts.
    out = subprocess.run(
        [sys.executable, "-m", "bench.profile_ops", "--xla", "--decode-calls", "1"],
        check=False, cwd=workload.REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    shares = {}
    for line in out.stdout.split("heaviest HLO")[0].splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%"):
            shares[parts[1]] = float(parts[0][:-1])
    # The (64 x 256) x (256 x 8000) logits matmul is among the heaviest ops of a
    # step. Shares of measured time, so not its exact rank: with other work on
    # the 2 cores a feed-forward matmul once came first (10.5% against 8.3%).
    heaviest = sorted(shares, key=shares.get, reverse=True)[:3]
    assert "logits/Tensordot/MatMul" in heaviest, out.stdout
    assert 5.0 <= shares["logits/Tensordot/MatMul"] < 100.0, out.stdout
