import json

import pytest

from keras_s2s.config import TrainConfig
from keras_s2s.training.settings import make_configs, resolve_settings
from training.train import parse_args


def test_flags_override_file_override_defaults(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 3, "hidden_dim": 64, "learning_rate": 1}))
    args = parse_args(["--run-dir", "r", "--epochs", "5", "--num_heads", "2"])
    flags = {k: v for k, v in vars(args).items() if k not in ("run_dir", "config", "init_from")}
    values = resolve_settings(str(path), flags)
    model, train = make_configs(values)
    assert train.epochs == 5 and train.learning_rate == 1.0
    assert model == {"hidden_dim": 64, "num_heads": 2}
    assert train.batch_tokens == TrainConfig().batch_tokens


def test_unknown_key_in_file_is_named(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(ValueError, match=r"c.json: Unknown setting\(s\) \['epoch'\]"):
        resolve_settings(str(path), {})


def test_wrong_type_in_file_is_named(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": "three"}))
    with pytest.raises(ValueError, match=r"c.json: `epochs` must be int; received epochs='three'"):
        resolve_settings(str(path), {})


def test_vocabulary_sizes_cannot_be_set(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"source_vocabulary_size": 3}))
    with pytest.raises(ValueError, match="come from the trained tokenizers"):
        resolve_settings(str(path), {})


def test_bad_flag_value_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--run-dir", "r", "--epochs", "many"])
    assert "--epochs: invalid int value: 'many'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "values,message",
    [
        ({"schedule": "linear"}, r"`schedule` must be one of \['inverse_sqrt', 'cosine'\]; received schedule='linear'"),
        ({"label_smoothing": 1.5}, r"`label_smoothing` must be a number in \[0, 1\); received label_smoothing=1.5"),
        ({"epochs": 0}, r"`epochs` must be a positive integer; received epochs=0"),
        ({"strategy": "horovod"}, r"`strategy` must be one of .*received strategy='horovod'"),
    ],
)
def test_invalid_train_config_values(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**values)
