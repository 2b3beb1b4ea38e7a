"""The README's Keras API example runs as written."""

import os
import re

from tests.helpers import REPO_ROOT


def test_keras_api_example_runs(tmp_path, monkeypatch):
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("## The Keras API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # it saves model.keras
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (1, 4, 8000)
    assert os.path.exists(tmp_path / "model.keras")


def test_flag_table_lists_every_training_flag_with_its_default():
    from keras_s2s.training.settings import _settable_fields

    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("### All flags of `python -m training.train`"):]
    rows = dict(re.findall(r"^\| `--(\w+)` \| `([^`]*)` \|", section, re.M))
    fields = {field.name: repr(field.default) for field in _settable_fields()}
    assert rows == fields
