"""The test suite's own rules: no hidden fast tests, one home for shared helpers."""

import ast
import os

from tests.helpers import REPO_ROOT

TESTS = os.path.join(REPO_ROOT, "tests")


def _test_sources():
    """(relative path, parsed module) of every .py file under tests/."""
    for root, _, files in os.walk(TESTS):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as f:
                yield os.path.relpath(path, REPO_ROOT), ast.parse(f.read())


def _is_test_module(module_name):
    return module_name.split(".")[-1].startswith("test_") or module_name.endswith("conftest")


def test_no_module_level_slow_mark():
    # `make test-fast` (-m "not slow") must run every fast test: mark slow
    # tests one by one, never a whole module.
    offenders = []
    for path, tree in _test_sources():
        for node in tree.body:
            targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if "pytestmark" in targets and "slow" in ast.unparse(node.value):
                offenders.append(f"{path}:{node.lineno}")
    assert offenders == [], f"module-level slow marks (mark the slow tests instead): {offenders}"


def test_shared_helpers_are_not_imported_from_test_modules():
    # Shared code lives in tests/helpers.py (and tests/layer_checks.py);
    # importing one test module from another runs its tests' imports twice
    # and hides where a helper lives.
    offenders = []
    for path, tree in _test_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n.startswith("tests.") and _is_test_module(n) for n in names):
                offenders.append(f"{path}:{node.lineno}")
    assert offenders == [], f"import these from tests.helpers instead: {offenders}"
