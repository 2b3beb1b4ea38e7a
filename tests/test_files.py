"""atomic_directory: a directory appears whole or not at all."""

import os

import pytest

from keras_s2s.files import atomic_directory


def _write(folder, text):
    with open(os.path.join(folder, "file.txt"), "w") as f:
        f.write(text)


def _read(folder):
    with open(os.path.join(folder, "file.txt")) as f:
        return f.read()


def _hidden(parent):
    return [name for name in os.listdir(parent) if name.startswith(".")]


def test_the_staged_folder_is_renamed_into_place(tmp_path):
    target = tmp_path / "nested" / "run"
    with atomic_directory(str(target)) as staging:
        assert os.path.dirname(staging) == str(target.parent) and not target.exists()
        _write(staging, "new")
    assert _read(target) == "new" and _hidden(target.parent) == []


def test_a_failure_leaves_the_old_directory_and_no_staging(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    _write(target, "old")
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(str(target), overwrite=True) as staging:
        _write(staging, "half")
        raise RuntimeError("boom")
    assert _read(target) == "old" and _hidden(tmp_path) == []


def test_an_existing_directory_needs_overwrite(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    _write(target, "old")
    with pytest.raises(ValueError, match=r"run exists; pass overwrite=True \(--overwrite\)"):
        with atomic_directory(str(target)) as staging:
            _write(staging, "new")
    assert _read(target) == "old" and _hidden(tmp_path) == []
    with atomic_directory(str(target), overwrite=True) as staging:
        _write(staging, "new")
    assert _read(target) == "new" and _hidden(tmp_path) == []
