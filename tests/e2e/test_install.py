"""The wheel, installed into a fresh environment, used from a folder that is not this repository:
the console scripts, `pytest` through the pytest11 entry point (its models folder named in the
repository's ini file, its reports folder outside the repository), and the merge with nothing
but psutil beside it. The environment reuses the installed stack (a .pth file naming its
site-packages) instead of downloading it again."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import psutil

from .. import builders
from ..support import ROOT


def run(*command, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_the_wheel_works_from_another_repository(tmp_path):
    source = tmp_path / "source"  # built from a copy: a build writes build/ and *.egg-info beside its sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "converter", source / "converter", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("TFLITE_HARNESS_")}
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
    where = run(python, "-c", "import converter; print(converter.__file__)", cwd=project, env=env).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not this checkout

    version = run(venv / "bin" / "tflite-harness", "--version", cwd=project, env=env)
    assert version.returncode == 0 and version.stdout.strip() == f"tflite-harness {version_of_checkout()}"
    cli = run(venv / "bin" / "tflite-harness", "models/net.pt", "--tflite-dir", "cli_out", "--reports-dir", "cli_reports",
              "--tflite-conversion-threads", "1", cwd=project, env=env)  # the batch's spelling works here too
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert (project / "cli_out" / "net.tflite").is_file()

    (project / "pytest.ini").write_text("[pytest]\ntflite_models_dir = models\n")
    # an existing folder outside the repository, given with a space: pytest, which picks its rootdir
    # before it loads the plugin, took it for a path to test and never read the ini file (0 items)
    reports = tmp_path / "their_reports"
    reports.mkdir()
    batch = run(python, "-m", "pytest", "-n", "1", "--tflite-conversion-threads", "1", "--tflite-reports-dir", reports,
                "-p", "no:cacheprovider", cwd=project, env=env)
    assert batch.returncode == 0, batch.stdout + batch.stderr
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["models"]["net"]["outcome"] == "passed" and (project / "tflite_models" / "net.tflite").is_file()
    assert 'name="net"' in (reports / "junit.xml").read_text()

    # the merge, as the README's CI recipe runs it: the harness and psutil, nothing else
    only = tmp_path / "only_psutil"
    only.mkdir()
    (only / "psutil").symlink_to(Path(psutil.__file__).parent)
    merged = run(python, "-S", "-m", "converter.merge", reports, "--reports-dir", "merged",
                 cwd=project, env={**env, "PYTHONPATH": f"{site}{os.pathsep}{only}"})
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert "merged 1 shards: 1 converted and verified" in merged.stdout
    merge_version = run(venv / "bin" / "tflite-harness-merge", "--version", cwd=project, env=env)
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
