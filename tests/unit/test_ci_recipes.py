"""The CI recipes for a repository that holds models (ci/): each valid for its CI (checked against
the CI's own schema), installing this release of the harness, keeping the conversion cache under a
key that changes with what invalidates it, sharding and merging as the README says. The merge job's
lines are run for real in tests/e2e/test_install.py."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from converter import __version__

from ..support import ROOT

GITHUB = ROOT / "ci" / "github-workflow.yml"
GITLAB = ROOT / "ci" / "gitlab-ci.yml"
SCHEMAS = {GITHUB: "vendor.github-workflows", GITLAB: "vendor.gitlab-ci"}


def load(path):
    return yaml.safe_load(path.read_text())


def schema_check(path, schema: str) -> subprocess.CompletedProcess:
    """check-jsonschema against the CI's own schema (vendored in the package: nothing is fetched)."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=["github", "gitlab"])
def test_each_recipe_is_valid_for_its_ci_and_the_check_would_see_a_mistake(path, tmp_path):
    valid = schema_check(path, SCHEMAS[path])
    assert valid.returncode == 0, valid.stdout + valid.stderr
    # the same file with one mistake a hand could make: the check is not blind to it
    text = path.read_text()
    broken = text.replace("when: always", "when: allways") if path is GITLAB else text.replace("checks: write", "checks: writ")
    assert broken != text
    (tmp_path / path.name).write_text(broken)
    assert schema_check(tmp_path / path.name, SCHEMAS[path]).returncode != 0


def pinned(name: str) -> str:
    """`name==version` as requirements_tflite.txt pins it."""
    return re.search(rf"^{name}==\S+", (ROOT / "requirements_tflite.txt").read_text(), re.M).group(0)


def merge_lines(github: dict) -> list[str]:
    return [line for step in github["jobs"]["merge"]["steps"] if "run" in step for line in step["run"].splitlines()]


def test_the_github_recipe_installs_this_release_keeps_the_cache_and_merges_its_shards():
    workflow = load(GITHUB)
    assert workflow["permissions"] == {"contents": "read", "checks": "write"}  # the JUnit action writes a check run
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]  # main's cache serves every PR
    harness = workflow["env"]["TFLITE_HARNESS"]
    assert harness.startswith("tflite-harness @ git+https://") and harness.endswith(f"@v{__version__}")

    convert = workflow["jobs"]["convert"]
    groups = convert["strategy"]["matrix"]["group"]
    steps = {step.get("id") or step.get("name") or step["uses"]: step for step in convert["steps"]}
    install = steps["harness"]["run"]
    assert '-r requirements_tflite.txt' in install and '"$TFLITE_HARNESS"' in install and "pytest-split==" in install
    assert "--index-url https://download.pytorch.org/whl/cpu torch==" in install  # not PyPI's multi-GB CUDA build
    # the litert engine's environment, where the harness looks for it: .venv-litert in the repository
    assert "python -m venv .venv-litert" in install and ".venv-litert/bin/pip install -r requirements_litert.txt" in install
    assert install.count("--index-url https://download.pytorch.org/whl/cpu torch==") == 2
    restore, save = steps["cache"], steps["Keep the conversion cache, also when a model failed"]
    assert restore["uses"].startswith("actions/cache/restore@") and save["uses"].startswith("actions/cache/save@")
    key = restore["with"]["key"]
    for part in ("steps.harness.outputs.version", "hashFiles('requirements_tflite.txt', 'requirements_litert.txt')",
                 "hashFiles('models/**')",
                 "matrix.group"):  # what invalidates an entry, and the shard whose models it holds
        assert part in key, part
    assert restore["with"]["path"] == save["with"]["path"] == ".tflite_cache"
    assert save["if"] == "always()" and save["with"]["key"] == "${{ steps.cache.outputs.cache-primary-key }}"
    pytest_line = next(s["run"] for s in convert["steps"] if "-m pytest" in s.get("run", ""))
    assert f"--splits {len(groups)} --group ${{{{ matrix.group }}}}" in pytest_line
    assert "--tflite-reports-dir reports/shard-${{ matrix.group }}" in pytest_line

    merge = workflow["jobs"]["merge"]
    assert merge["needs"] == "convert" and merge["if"] == "always()"
    download = next(s for s in merge["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"] == {"pattern": "shard-*", "path": "reports"}
    assert merge_lines(workflow) == [
        "python -m venv .venv",
        f'.venv/bin/pip install --no-deps "$TFLITE_HARNESS" {pinned("psutil")}',
        ".venv/bin/python -m converter.merge reports/shard-* --reports-dir reports/merged"]
    junit = next(s for s in merge["steps"] if s.get("uses", "").startswith("mikepenz/action-junit-report@"))
    assert junit["with"]["report_paths"] == "reports/merged/junit.xml" and junit["if"] == "always()"
    assert "fork" in junit["with"]["annotate_only"]  # a fork's token cannot write a check run


def test_the_gitlab_recipe_does_the_same_with_the_same_merge():
    pipeline = load(GITLAB)
    variables = pipeline["variables"]
    assert variables["TFLITE_HARNESS_VERSION"] == __version__
    assert variables["TFLITE_HARNESS"].endswith("@v${TFLITE_HARNESS_VERSION}")

    shard = pipeline["tflite-shard"]
    (conversions,) = [c for c in shard["cache"] if ".tflite_cache" in c["paths"]]
    assert conversions["key"]["files"] == ["requirements_tflite.txt", "requirements_litert.txt"]
    assert conversions["when"] == "always"
    assert "$TFLITE_HARNESS_VERSION" in conversions["key"]["prefix"] and "$CI_NODE_INDEX" in conversions["key"]["prefix"]
    assert any('"$TFLITE_HARNESS"' in line and "-r requirements_tflite.txt" in line for line in shard["script"])
    assert ".venv-litert/bin/pip install -r requirements_litert.txt" in shard["script"]
    assert any("--splits $CI_NODE_TOTAL --group $CI_NODE_INDEX --tflite-reports-dir reports/shard-$CI_NODE_INDEX" in line
               for line in shard["script"])
    assert "reports/shard-$CI_NODE_INDEX/" in shard["artifacts"]["paths"] and shard["artifacts"]["when"] == "always"

    merge = pipeline["tflite-merge"]
    assert merge["needs"] == ["tflite-shard"] and merge["when"] == "always"
    assert merge["script"] == merge_lines(load(GITHUB))  # one merge, run for real by tests/e2e/test_install.py
    assert merge["artifacts"]["reports"]["junit"] == "reports/merged/junit.xml"


def test_the_readme_points_at_the_recipes_and_names_what_they_hold():
    readme = (ROOT / "README.md").read_text()
    gitlab, github = load(GITLAB), load(GITHUB)
    claims = {"ci/github-workflow.yml": GITHUB.is_file(), "ci/gitlab-ci.yml": GITLAB.is_file(),
              "`convert`": "convert" in github["jobs"], "`merge`": "merge" in github["jobs"],
              "`tflite-shard`": "tflite-shard" in gitlab, "`tflite-merge`": "tflite-merge" in gitlab,
              "`shard-N`": True, "`tflite-models-N`": True, "`tflite-merged`": True,
              "`reports/merged/junit.xml`": gitlab["tflite-merge"]["artifacts"]["reports"]["junit"]
              == "reports/merged/junit.xml"}
    for claim, holds in claims.items():
        assert claim in readme and holds, claim
    assert "\n".join(f"      {line}" for line in merge_lines(github)) in readme  # the merge lines it shows are the recipes'
    uploads = {s["with"]["name"] for job in github["jobs"].values() for s in job["steps"]
               if s.get("uses", "").startswith("actions/upload-artifact@")}
    assert uploads == {"shard-${{ matrix.group }}", "tflite-models-${{ matrix.group }}", "tflite-merged"}
