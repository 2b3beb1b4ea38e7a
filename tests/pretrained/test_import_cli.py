"""`python -m training.import_marian`: argument handling and errors (no torch needed)."""

import json

import pytest

from training import import_marian


def test_missing_directory_is_an_error_naming_it(tmp_path):
    with pytest.raises(SystemExit, match=r"error: `model_dir` .*nope.* is not a directory"):
        import_marian.main(["--model-dir", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_another_architecture_is_an_error_naming_file_and_field(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(SystemExit, match=r"error: .*config.json: `model_type` must be 'marian'.*'t5'"):
        import_marian.main(["--model-dir", str(tmp_path / "ckpt"), "--run-dir", str(tmp_path / "run")])


def test_required_arguments():
    with pytest.raises(SystemExit):
        import_marian.parse_args(["--model-dir", "x"])
    args = import_marian.parse_args(["--model-dir", "x", "--run-dir", "y", "--dropout", "0.2"])
    assert (args.model_dir, args.run_dir, args.dropout, args.overwrite) == ("x", "y", 0.2, False)
