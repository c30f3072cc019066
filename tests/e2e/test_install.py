"""The wheel, installed into a fresh environment, used from a folder that is not this repository:
the console scripts, `pytest` through the pytest11 entry point (its models folder named in the
repository's ini file, its reports folder outside the repository, given with a space), and the CI
recipe's merge job, run as written in an environment of its own. The first environment reuses the
installed stack (a .pth file naming its site-packages) instead of downloading it again; nothing
here reaches a package index."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import yaml

from converter.failures import FailureKind

from .. import builders
from ..support import NO_HYPOTHESIS, ROOT


def run(*command, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_the_wheel_works_from_another_repository(tmp_path):
    source = tmp_path / "source"  # built from a copy: a build writes build/ and *.egg-info beside its sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "converter", source / "converter", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("TFLITE_HARNESS_")},
           "PYTEST_ADDOPTS": NO_HYPOTHESIS}
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
                source, cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("tflite_harness-*.whl")

    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path,
                    env=env).stdout.strip())
    (site / "stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, TF, onnx2tf, pytest: reused
    installed = run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel,
                    cwd=tmp_path, env=env)
    assert installed.returncode == 0, installed.stderr

    project = tmp_path / "their_repo"  # nothing of this repository: only models
    builders.torchscript_cnn(project / "models", name="net")
    (project / "models" / "noshape.pt").write_bytes(b"")  # fails at once (spec_error): no conversion
    where = run(python, "-c", "import converter; print(converter.__file__)", cwd=project, env=env).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not this checkout

    version = run(venv / "bin" / "tflite-harness", "--version", cwd=project, env=env)
    assert version.returncode == 0 and version.stdout.strip() == f"tflite-harness {version_of_checkout()}"
    cli = run(venv / "bin" / "tflite-harness", "models/net.pt", "--tflite-dir", "cli_out", "--reports-dir", "cli_reports",
              "--tflite-conversion-threads", "1", cwd=project, env=env)  # the batch's spelling works here too
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert (project / "cli_out" / "net.tflite").is_file()
    # the litert engine's environment is looked for in this repository (not beside the installed package)
    litert = run(venv / "bin" / "tflite-harness", "models/net.pt", "--engine", "litert", "--reports-dir", "cli_reports",
                 cwd=project, env=env)
    assert litert.returncode == 1 and "engine_missing" in litert.stdout, litert.stdout + litert.stderr
    assert ("engine litert not installed: .venv-litert/bin/python not found; run `python3 -m "
            "venv .venv-litert && .venv-litert/bin/pip install -r requirements_litert.txt` in this repository, with "
            "requirements_litert.txt from the harness release") in litert.stdout, litert.stdout

    (project / "pytest.ini").write_text("[pytest]\ntflite_models_dir = models\n")
    # a CI shard, as the recipe runs it (pytest-split's options aside), its reports folder an existing
    # one outside the repository given with a space: pytest, which picks its rootdir before it loads
    # the plugin, took it for a path to test and never read the ini file (0 items). The installed
    # plugin's modules are rewritten by pytest, and no `assert Failure(...) is None` line may join
    # the message
    outside = tmp_path / "their_reports"
    (outside / "shard-1").mkdir(parents=True)
    (project / "reports").symlink_to(outside)  # where the merge job finds the shards it downloaded
    batch = run(python, "-m", "pytest", "-n", "1", "--tflite-conversion-threads", "1",
                "--tflite-reports-dir", outside / "shard-1", "-p", "no:cacheprovider", cwd=project,
                env={**env, "CI": "true"})
    assert batch.returncode == 1, batch.stdout + batch.stderr
    assert batch.stdout.count("no input shape from any source") == 1 and "assert " not in batch.stdout, batch.stdout
    assert f"  next: {FailureKind.SPEC_ERROR.next_step}" in batch.stdout.splitlines()
    shard = outside / "shard-1"
    summary = json.loads((shard / "summary.json").read_text())
    assert summary["models"]["net"]["outcome"] == "passed" and (project / "tflite_models" / "net.tflite").is_file()
    assert 'name="net"' in (shard / "junit.xml").read_text()

    merged = merge_job(tmp_path, project, wheel)
    assert merged.returncode == 1, merged.stdout + merged.stderr  # noshape failed: the merged verdict says so
    assert "merged 1 shards: 1 converted and verified, 1 failed" in merged.stdout, merged.stdout + merged.stderr
    assert json.loads((project / "reports" / "merged" / "summary.json").read_text())["models"].keys() == {"net", "noshape"}
    fresh = project / ".venv" / "bin"
    found = run(fresh / "python", "-c", "import importlib.util as u; print(sorted(m for m in ('torch', 'tensorflow', "
                "'onnx2tf', 'numpy', 'converter', 'psutil') if u.find_spec(m)))", cwd=project, env=env)
    assert found.stdout.strip() == "['converter', 'psutil']", found.stdout + found.stderr  # the merge needed nothing else
    merge_version = run(fresh / "tflite-harness-merge", "--version", cwd=project, env=env)
    assert merge_version.stdout.strip() == f"tflite-harness-merge {version_of_checkout()}"

    plain = tmp_path / "unrelated_repo"  # the plugin is loaded here too, and does nothing
    plain.mkdir()
    (plain / "test_plain.py").write_text("def test_ok():\n    pass\n")
    unrelated = run(python, "-m", "pytest", "-p", "no:cacheprovider", cwd=plain, env=env)
    assert unrelated.returncode == 0 and "1 passed" in unrelated.stdout, unrelated.stdout
    assert "tflite harness" not in unrelated.stdout
    assert not {"tflite_models", "reports", ".tflite_cache"} & {p.name for p in plain.iterdir()}


def version_of_checkout() -> str:
    from converter import __version__

    return __version__


def merge_job(tmp_path: Path, project: Path, wheel: Path) -> subprocess.CompletedProcess:
    """The merge job's `run:` lines from ci/github-workflow.yml (the GitLab recipe's are the same,
    tests/unit/test_ci_recipes.py holds them so), run by bash as the runner runs them: `python` a
    Python 3.11 with no package of this environment, the harness the wheel just built (TFLITE_HARNESS
    names it, where the recipe names a git tag), and pip told to find packages in a folder rather than
    on an index: the wheel and psutil's."""
    workflow = yaml.safe_load((ROOT / "ci" / "github-workflow.yml").read_text())
    script = "\n".join(step["run"] for step in workflow["jobs"]["merge"]["steps"] if "run" in step)
    assert "--no-deps \"$TFLITE_HARNESS\"" in script  # (tests/unit/test_ci_recipes.py reads the rest)
    found = tmp_path / "wheelhouse"
    found.mkdir()
    shutil.copy(wheel, found)
    installed_wheel("psutil", found)
    interpreter = tmp_path / "runner_bin"
    interpreter.mkdir()
    (interpreter / "python").symlink_to(sys._base_executable)  # the interpreter this venv was made from
    env = {"PATH": f"{interpreter}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "TFLITE_HARNESS": str(found / wheel.name), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(found),
           "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return run("bash", "-eo", "pipefail", "-c", script, cwd=project, env=env)


def installed_wheel(name: str, into: Path) -> Path:
    """The wheel pip installed `name` from, put together again from the installed copy, since this
    test may reach no package index: every file the distribution's RECORD lists, each checked
    against the hash pip recorded when it installed it from the index's wheel, less what pip added
    on installing (INSTALLER, REQUESTED, direct_url.json, byte code), under a RECORD of its own."""
    dist = metadata.distribution(name)
    tags = [line.split(": ", 1)[1] for line in dist.read_text("WHEEL").splitlines() if line.startswith("Tag: ")]
    info = next(f for f in dist.files if f.name == "METADATA").parent
    added = {f"{info}/{n}" for n in ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")}
    path = into / f"{dist.metadata['Name']}-{dist.version}-{tags[0]}.whl"
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in dist.files:
            if str(file) in added or "__pycache__" in file.parts or file.parts[0] == "..":
                continue
            data = file.locate().read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert file.hash is not None and file.hash.value == digest, file  # the bytes the index's wheel held
            wheel.writestr(str(file), data)
            record.append(f"{file},sha256={digest},{len(data)}")
        wheel.writestr(f"{info}/RECORD", "\n".join(record + [f"{info}/RECORD,,"]) + "\n")
    return path
