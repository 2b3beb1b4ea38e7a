"""The README and docs/ tell the truth: their runnable examples run, their flags tables
match the CLIs' `--help`, and the tests and links they cite exist."""

import contextlib
import glob
import importlib
import io
import os
import re

import pytest

from tests.helpers import REPO_ROOT

RUNNABLE = "<!-- runnable"  # an HTML comment (invisible on GitHub) on the line before ```python
PAGES = ["README.md"] + sorted(
    os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, "docs", "*.md"))
)


def read(page):
    with open(os.path.join(REPO_ROOT, page), encoding="utf-8") as f:
        return f.read()


def runnable_blocks():
    """(page, line number, code) of every ```python block marked runnable."""
    blocks = []
    for page in PAGES:
        lines = read(page).split("\n")
        for number, line in enumerate(lines):
            if line.startswith(RUNNABLE):
                assert lines[number + 1] == "```python", f"{page}:{number + 1}: no ```python after it"
                end = lines.index("```", number + 2)
                blocks.append((page, number + 3, "\n".join(lines[number + 2:end])))
    return blocks


BLOCKS = runnable_blocks()


def test_the_readme_has_a_runnable_example():
    assert [page for page, _, _ in BLOCKS].count("README.md") >= 1


@pytest.mark.parametrize("page, line, code", BLOCKS, ids=[f"{p}:{n}" for p, n, _ in BLOCKS])
def test_runnable_blocks_run(page, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files (model.keras)
    namespace = {"__name__": "__docs__"}
    # Blank lines up to `line` keep tracebacks pointing at the page's own line numbers.
    exec(compile("\n" * (line - 1) + code, os.path.join(REPO_ROOT, page), "exec"), namespace)


def test_keras_api_example_builds_trains_and_saves(tmp_path, monkeypatch):
    readme = read("README.md")
    section = readme[readme.index("## The Keras API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (1, 4, 8000)
    assert os.path.exists(tmp_path / "model.keras")


# --------------------------------------------------------------------------
# Flags tables.
# --------------------------------------------------------------------------

FLAGS_HEADING = re.compile(r"^#+ (?:All flags|Flags) of `python -m (training\.\w+)`", re.M)


def flags_sections():
    """(page, CLI module, section text) for each "Flags of `python -m training.X`" heading."""
    sections = []
    for page in PAGES:
        text = read(page)
        for match in FLAGS_HEADING.finditer(text):
            following = re.search(r"^#+ ", text[match.end():], re.M)
            end = match.end() + following.start() if following else len(text)
            sections.append((page, match.group(1), text[match.start():end]))
    return sections


SECTIONS = flags_sections()


def help_flags(module_name):
    """The options `python -m MODULE --help` lists, as its usage line names them."""
    module = importlib.import_module(module_name)
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), pytest.raises(SystemExit):
        module.parse_args(["--help"])
    usage = shown.getvalue().split("\n\n")[0]
    return {flag for flag in re.findall(r"(?<![\w-])--[\w-]+", usage)} - {"--help"}


def canonical(flag):
    return flag.replace("_", "-")  # train takes both spellings


def test_every_cli_has_a_flags_table():
    documented = {module for _, module, _ in SECTIONS}
    clis = {f"training.{os.path.basename(p)[:-3]}" for p in glob.glob(
        os.path.join(REPO_ROOT, "training", "*.py")) if not p.endswith("__init__.py")}
    assert clis - {"training.main_job"} <= documented


@pytest.mark.parametrize("page, module, section", SECTIONS, ids=[f"{p}:{m}" for p, m, _ in SECTIONS])
def test_flags_table_matches_help(page, module, section):
    table_flags = set()
    for row in re.findall(r"^\| (.+?) \|", section, re.M):
        table_flags.update(re.findall(r"(?<![\w-])--[\w-]+", row))
    mentioned = set(re.findall(r"(?<![\w-])--[\w-]+", section))
    shown = {canonical(f) for f in help_flags(module)}
    unknown = {canonical(f) for f in table_flags} - shown
    missing = shown - {canonical(f) for f in mentioned}
    assert not unknown, f"{page}: flags of `{module}` that --help does not list: {sorted(unknown)}"
    assert not missing, f"{page}: flags of `{module} --help` the page does not document: {sorted(missing)}"


def test_training_flags_table_lists_every_setting_with_its_default():
    from keras_s2s.training.settings import _settable_fields

    [section] = [s for page, module, s in SECTIONS
                 if (page, module) == ("docs/training.md", "training.train")]
    rows = dict(re.findall(r"^\| `--(\w+)` \| `([^`]*)` \|", section, re.M))
    fields = {field.name: repr(field.default) for field in _settable_fields()}
    assert rows == fields


# --------------------------------------------------------------------------
# References.
# --------------------------------------------------------------------------


def test_cited_tests_exist():
    for page in PAGES + ["CHANGELOG.md"]:
        for path, name in re.findall(r"(tests/[\w/]+\.py)::(\w+\*?)", read(page)):
            with open(os.path.join(REPO_ROOT, path), encoding="utf-8") as f:
                source = f.read()
            pattern = rf"def {name[:-1]}\w*\(" if name.endswith("*") else rf"def {name}\("
            assert re.search(pattern, source), f"{page} cites {path}::{name}, which does not exist"


# Pages other work writes; a link to them is checked once they exist.
PENDING_PAGES = set()


def anchors(page):
    """GitHub's anchors for the headings of a markdown page."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", read(page), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_relative_links_and_their_anchors_resolve():
    for page in PAGES + ["CHANGELOG.md"]:
        folder = os.path.dirname(os.path.join(REPO_ROOT, page))
        for target, anchor in re.findall(r"\]\(([^)#:]*)(?:#([^)]*))?\)", read(page)):
            path = os.path.normpath(os.path.join(folder, target or os.path.basename(page)))
            relative = os.path.relpath(path, REPO_ROOT)
            if relative in PENDING_PAGES:
                continue
            assert os.path.exists(path), f"{page} links to {target}, which does not exist"
            if anchor:
                assert anchor in anchors(relative), f"{page} links to {target}#{anchor}: no such heading"


def test_user_facing_text_names_no_development_paths():
    pages = PAGES + ["CHANGELOG.md"] + sorted(
        os.path.relpath(p, REPO_ROOT)
        for p in glob.glob(os.path.join(REPO_ROOT, "bench", "results", "*.md"))
    )
    for page in pages:
        for forbidden in ("../shared", "/work/"):
            assert forbidden not in read(page), f"{page} mentions {forbidden}"
