"""What a user installs: the conversion stack, never the harness's own development tools."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from ..support import ROOT

DEV_ONLY = {"hypothesis", "ruff", "check-jsonschema"}  # the harness's own tests, lint and CI recipes' check


def _names(requirements: Path) -> set[str]:
    found = set()
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            found.add(re.split(r"[=<>;\[ ]", line, maxsplit=1)[0].lower())
    return found


def test_the_runtime_stack_carries_no_development_tool_and_the_dev_stack_adds_them():
    runtime = _names(ROOT / "requirements_tflite.txt")
    assert {"torch", "onnx2tf", "pytest", "pytest-xdist", "psutil"} <= runtime  # the parser reads the file
    assert not runtime & DEV_ONLY, runtime & DEV_ONLY
    dev = (ROOT / "requirements_dev.txt").read_text()
    assert "-r requirements_tflite.txt" in dev and _names(ROOT / "requirements_dev.txt") >= DEV_ONLY
    assert "requirements_dev.txt" in (ROOT / ".ci" / "run").read_text()


def test_the_harness_never_imports_a_development_tool():
    """A user without requirements_dev.txt would get an ImportError from the plugin or a conversion."""
    imported = set()
    for path in (ROOT / "converter").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {(a.name.split(".")[0], path.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add((node.module.split(".")[0], path.name))
    assert {name for name, _ in imported} >= {"numpy", "psutil"}  # the walk sees the imports
    assert not [(n, f) for n, f in imported if n.replace("_", "-") in DEV_ONLY]  # check_jsonschema too
