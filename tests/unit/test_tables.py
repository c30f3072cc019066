"""One entry per thing: a recipe, a failure kind, a setting is one row, and every table that
depends on it reads that row. These tests fail when a row and its satellites drift apart.
No conversion runs here."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from converter.failures import FailureKind
from converter.recipes import RECIPES, Recipe
from converter.settings import BY_OPTION, SETTINGS, Settings, resolve

PACKAGE = Path(__file__).resolve().parents[2] / "converter"


# --- a recipe ---------------------------------------------------------------------------


def test_every_recipe_has_its_converter_settings_and_every_field_given():
    from converter.stages.tflite import CONVERTER_SETTINGS

    assert set(CONVERTER_SETTINGS) == set(RECIPES)
    # no field a new row could leave out by mistake: each but the two switches is given in the row
    optional = {f.name for f in dataclasses.fields(Recipe) if f.default is not dataclasses.MISSING}
    assert optional == {"calibrated", "integer_io"}
    colours = [r.colour for r in RECIPES.values()]
    assert len(set(colours)) == len(colours) and all(c.startswith("#") and len(c) == 7 for c in colours)
    assert all(r.quantized_dtype in (None, "float16", "int8") for r in RECIPES.values())
    assert RECIPES["fp32"].quantized_dtype is None


def test_the_html_page_help_and_runtime_check_read_each_recipes_row():
    from converter.html_report import render
    from converter.stages.deploy import quantized_tensors

    page = render({}, {})
    help_text = BY_OPTION["deliverables"].help
    for name, recipe in RECIPES.items():
        assert f'<span style="background:{recipe.colour}"></span>{recipe.label}' in page, name
        assert name in help_text, name
        tensors = [{"dtype": np.float32}, {"dtype": np.int8}, {"dtype": np.float16}, {"dtype": np.int8}]
        interpreter = SimpleNamespace(get_tensor_details=lambda: tensors)
        expected = {None: None, "int8": 2, "float16": 1}[recipe.quantized_dtype]
        assert quantized_tensors(interpreter, name) == expected, name


# --- a failure kind ----------------------------------------------------------------------


def _kind_collections(tree: ast.AST) -> list[int]:
    """Lines of a set, list, tuple or dict literal whose own elements (keys or values) are two
    FailureKind members or more; a table of rows that each name their kind is not one."""
    def is_kind(node) -> bool:
        return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "FailureKind"

    def elements(node) -> list:
        return node.keys + node.values if isinstance(node, ast.Dict) else node.elts
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, (ast.Set, ast.List, ast.Tuple, ast.Dict)) and sum(map(is_kind, elements(node))) >= 2]


def test_no_module_keeps_its_own_list_of_failure_kinds():
    """What a kind means (cached, retried, rejudged, the machine's) is asked of the kind itself;
    a set of kinds elsewhere is a policy a new kind would silently miss."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "failures.py":
            continue
        lines = _kind_collections(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            found[str(path.relative_to(PACKAGE))] = lines
    assert found == {}
    assert _kind_collections(ast.parse("x = {FailureKind.TIMEOUT, FailureKind.CRASH}")) == [1]  # the check sees one
    assert _kind_collections(ast.parse("k = {1: FailureKind.TIMEOUT,\n 2: FailureKind.CRASH}")) == [1]
    assert _kind_collections(ast.parse("rows = (Row('a', FailureKind.TIMEOUT), Row('b', FailureKind.CRASH))")) == []


def test_every_kind_answers_every_policy_question():
    for kind in FailureKind:
        answers = (kind.model, kind.cached, kind.machine, kind.rejudged, kind.retried, kind.wrong_numbers,
                   kind.removes_deliverable)
        assert all(isinstance(a, bool) for a in answers), kind


# --- a setting ---------------------------------------------------------------------------

# the stems of the user-facing spellings: renaming one breaks every user's command lines, ini files and CI variables
OPTIONS = ("models_dir", "tflite_dir", "reports_dir", "input_shape", "deliverables", "engine", "litert_python",
           "verify_samples", "conversion_timeout",
           "memory_limit_mb", "conversion_threads", "max_conversions", "slow_stage_fraction", "diagnosis_share",
           "fail_on_vacuous", "status_interval", "tflite_cache_dir", "no_cache", "no_preload", "keep_intermediates",
           "baseline", "regression_threshold")


def test_every_setting_is_one_row_named_as_its_settings_field():
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert sorted(s.name for s in SETTINGS) == sorted(f for f in fields if f != "deprecations")
    assert tuple(s.option for s in SETTINGS) == OPTIONS
    for setting in SETTINGS:  # pytest's options and ini keys in the plugin's one namespace, the environment's prefixed
        namespaced = setting.option if setting.option.startswith("tflite_") else "tflite_" + setting.option
        assert (setting.flag, setting.ini, setting.env) == (
            "--" + namespaced.replace("_", "-"), namespaced, "TFLITE_HARNESS_" + setting.option.upper())


def test_no_message_spells_an_option_by_its_name_from_before_the_namespace():
    """The package's messages name options as the pytest plugin declares them (the CLI and the merge
    take those too); only the CLI and the merge, which also take the short spellings, name their own."""
    import re

    from converter.settings import renamed_flags

    old = set(renamed_flags())
    assert {"--reports-dir", "--baseline", "--no-cache"} <= old  # the search knows what it looks for
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("settings.py", "merge.py"):
            continue
        words = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", path.read_text(encoding="utf-8")))
        if words & old:
            found[str(path.relative_to(PACKAGE))] = sorted(words & old)
    assert found == {}


def test_each_row_fills_its_own_field(tmp_path):
    """A value given under a setting's option reaches the Settings field of its row."""
    given = {"models_dir": ["m"], "tflite_dir": "t", "reports_dir": "r", "input_shape": ["1,4"],
             "deliverables": "fp16,drq", "engine": "litert", "litert_python": "lp/python", "verify_samples": "5",
             "conversion_timeout": "11", "memory_limit_mb": "700",
             "conversion_threads": "3", "max_conversions": "2", "slow_stage_fraction": "0.3", "diagnosis_share": "0.2",
             "fail_on_vacuous": True, "status_interval": "7", "tflite_cache_dir": "c", "no_cache": False,
             "no_preload": True, "keep_intermediates": True, "baseline": "b.json", "regression_threshold": "err:x3"}
    assert set(given) == set(OPTIONS)
    s = resolve(given, {}, {}, base=tmp_path)
    assert (s.models_dirs, s.tflite_dir, s.reports_dir) == ((tmp_path / "m",), tmp_path / "t", tmp_path / "r")
    assert (s.input_shapes, s.deliverables, s.timeout, s.memory_limit_mb) == (((1, 4),), ("fp16", "drq"), 11, 700)
    assert (s.threads, s.max_conversions, s.slow_stage_fraction, s.diagnosis_share) == (3, 2, 0.3, 0.2)
    assert (s.fail_on_vacuous, s.status_interval, s.cache_dir, s.no_cache) == (True, 7, tmp_path / "c", False)
    assert (s.preload, s.keep_intermediates, s.baseline) == (False, True, tmp_path / "b.json")
    assert s.thresholds.err == 3 and s.verify_samples == 5
    assert (s.engine, s.litert_python) == ("litert", tmp_path / "lp/python")
    off = resolve({"no_cache": True}, {}, {}, base=tmp_path)
    assert off.cache_dir is None and off.no_cache and off.preload


# --- the two sides ------------------------------------------------------------------------


def test_the_parent_side_imports_none_of_the_childs_stages():
    """spec.py decides before any child runs (is it a state_dict?) through the shared pickle_sniff.py."""
    import subprocess
    import sys

    code = ("import sys, converter.spec, converter.pytest_plugin, converter.merge\n"
            "print(sorted(m for m in sys.modules if m.startswith('converter.stages')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout
    assert out.strip() == "[]"
