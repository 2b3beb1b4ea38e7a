import dataclasses

import pytest

from keras_s2s import ModelConfig

VOCABS = dict(source_vocabulary_size=100, target_vocabulary_size=120)


def test_defaults_and_json_round_trip(tmp_path):
    config = ModelConfig(**VOCABS, num_decoder_layers=2)
    assert ModelConfig.from_json(config.to_json()) == config
    config.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == config
    assert config.head_dim == config.hidden_dim // config.num_heads


def test_frozen_and_keyword_only():
    config = ModelConfig(**VOCABS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_dim = 3
    with pytest.raises(TypeError):
        ModelConfig(100, 120)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(hidden_dim=250, num_heads=4), r"`num_heads` must divide `hidden_dim`; received hidden_dim=250, num_heads=4"),
        (dict(num_heads=0), r"`num_heads` must be a positive integer; received num_heads=0"),
        (dict(max_length=2.5), r"`max_length` must be a positive integer; received max_length=2.5"),
        (dict(num_encoder_layers=True), r"`num_encoder_layers` must be a positive integer; received num_encoder_layers=True"),
        (dict(source_vocabulary_size=1), r"`source_vocabulary_size` must be at least 2 .*received source_vocabulary_size=1"),
        (dict(dropout=1.0), r"`dropout` must be a number in \[0, 1\); received dropout=1.0"),
        (dict(positions="rotary"), r"`positions` must be one of \['sinusoidal', 'learned'\]; received positions='rotary'"),
        (dict(norm_position="sandwich"), r"`norm_position` must be one of \['pre', 'post'\]; received norm_position='sandwich'"),
        (dict(layer_norm_epsilon=0.0), r"`layer_norm_epsilon` must be a positive float; received layer_norm_epsilon=0.0"),
        (dict(activation="swishy"), r"`activation` must name a Keras activation .*received activation='swishy'"),
        (dict(activation=3), r"`activation` must name a Keras activation .*received activation=3"),
        (dict(sinusoidal_layout="split"), r"`sinusoidal_layout` must be one of \['interleaved', 'halves'\]; received sinusoidal_layout='split'"),
        (dict(scale_embeddings="yes"), r"`scale_embeddings` must be True or False; received scale_embeddings='yes'"),
        (dict(final_logits_bias=True), r"`final_logits_bias` is for tied output projections.*tie_embeddings=\"none\""),
    ],
)
def test_invalid_values_name_field_and_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**dict(VOCABS, **overrides))


def test_unknown_json_key_is_named():
    with pytest.raises(ValueError, match=r"Unknown ModelConfig field\(s\) \['hiden_dim'\]"):
        ModelConfig.from_dict(dict(VOCABS, hiden_dim=3))


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "hidden_dim": 4,\n}\n')
    with pytest.raises(ValueError, match=r"config.json:3: not valid JSON"):
        ModelConfig.load(path)


def test_cli_precision_choices_are_the_library_s_and_parse_without_tensorflow():
    import subprocess
    import sys

    from keras_s2s.config import LOAD_PRECISIONS
    from tests.helpers import REPO_ROOT
    from training import LOAD_PRECISIONS as CLI_CHOICES

    assert CLI_CHOICES == LOAD_PRECISIONS
    # Flag parsing stays fast: no TensorFlow import before main() needs it.
    probe = (
        "import sys\n"
        "from training import evaluate, export, translate\n"
        "evaluate.parse_args(['--run-dir', 'r', '--precision', 'float32'])\n"
        "export.parse_args(['--run-dir', 'r', '--name', 'n', '--precision', 'mixed_bfloat16', '--jit-compile'])\n"
        "translate.parse_args(['--run-dir', 'r', '--precision', 'mixed_float16', 'x'])\n"
        "print('tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--run-dir", "r", "--precision", "bf16"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "argument --precision: invalid choice: 'bf16'" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--run-dir", "r", "--saved-model", "s",
         "--precision", "float32"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "the precision fixed at export: drop --precision" in result.stderr
