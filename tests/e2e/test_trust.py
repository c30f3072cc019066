"""Trust, proven on real conversions: hostile files run no code, a cancelled run or a killed
worker leaves no child behind and hangs nothing, bad folders and numbers are one line."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest

from converter.failures import FailureKind

from .. import builders
from ..support import ROOT, convert, gone_within, run, start_pytest, wait_for_pid, with_group_killed

# --- code from untrusted files ----------------------------------------------------------------


@pytest.mark.parametrize("attack", builders.PT2_ATTACKS)
def test_a_crafted_pt2_never_runs_its_payload_through_the_harness(tmp_path, attack):
    marker = tmp_path / "marker"
    model = builders.crafted_pt2(tmp_path / "m", attack, marker)
    result = convert(tmp_path, model)
    assert result.failure.kind is FailureKind.UNTRUSTED_PICKLE and result.failure.stage == "load"
    assert "trust_pickle" in result.failure.message
    assert not marker.exists()


def test_a_crafted_pt2_never_runs_its_payload_through_the_cli(tmp_path):
    marker = tmp_path / "marker"
    model = builders.crafted_pt2(tmp_path / "m", "opaque_constant", marker)
    proc = subprocess.run([sys.executable, "-m", "converter", str(model), "--tflite-dir", str(tmp_path / "o"),
                           "--reports-dir", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "[untrusted_pickle]" in proc.stdout
    assert not marker.exists()


def test_a_plain_pt2_still_converts(tmp_path):
    result = convert(tmp_path, builders.plain_pt2(tmp_path / "m"))
    assert result.passed, result.failure
    assert result.load.format == "exported_program"


def test_a_factory_must_return_a_module_and_the_folder_shadows_no_package(tmp_path):
    folder = tmp_path / "m"
    model = builders.factory_model(folder, "net", "import torch\ndef net():\n    return torch.nn.Linear(4, 2)\n",
                                   "nets:net", (1, 4))
    # a stray file beside the models, named like a package the conversion imports later
    (folder / "tensorflow.py").write_text("raise ImportError('the models folder shadowed tensorflow')\n")
    result = convert(tmp_path, model)
    assert result.passed, result.failure
    model.with_suffix(".toml").write_text('factory = "os:getcwd"\n[[inputs]]\nshape = [1, 4]\n')
    refused = convert(tmp_path, model)
    assert refused.failure.kind is FailureKind.SPEC_ERROR
    assert "returned a str, not a torch.nn.Module" in refused.failure.message


# --- messages a user can act on ---------------------------------------------------------------


def test_load_failures_keep_their_reason_and_the_log_keeps_the_library_traceback(tmp_path):
    import zipfile

    folder = tmp_path / "m"
    good = builders.torchscript_cnn(folder, name="good")
    broken = folder / "broken.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if "/code/" in name and name.endswith(".py"):
                data = data.replace(b"-> Tensor:", b"-> NoSuchType:")
            dst.writestr(name, data)
    good.with_suffix(".toml").rename(broken.with_suffix(".toml"))
    (folder / "noise.pt").write_bytes(os.urandom(5000))
    (folder / "noise.toml").write_text("[[inputs]]\nshape = [1, 4]\n")
    good.unlink()
    results = {name: convert(tmp_path, folder / f"{name}.pt") for name in ("broken", "noise")}
    assert results["broken"].failure.kind is FailureKind.LOAD_ERROR
    assert "Unknown type name 'NoSuchType'" in results["broken"].failure.message
    assert results["noise"].failure.kind is FailureKind.LOAD_ERROR
    assert "not a PyTorch file" in results["noise"].failure.message
    assert "trust_pickle" not in results["noise"].failure.message
    log = (tmp_path / "reports" / "artifacts" / "broken" / "convert.log").read_text()
    assert "direct cause of the following exception" in log and "torch/jit/_serialization.py" in log


def test_cli_refuses_a_missing_model_or_a_folder_as_usage(tmp_path):
    for target, words in ((tmp_path / "nope.pt", "no such file"), (tmp_path, "is a folder")):
        proc = subprocess.run([sys.executable, "-m", "converter", str(target)], capture_output=True, text=True,
                              cwd=ROOT)
        assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_ignores_batch_only_settings_and_takes_no_abbreviations(tmp_path):
    env = dict(os.environ, TFLITE_HARNESS_REGRESSION_THRESHOLD="bogus", TFLITE_HARNESS_STATUS_INTERVAL="0")
    proc = subprocess.run([sys.executable, "-m", "converter", str(tmp_path / "nope.pt")], capture_output=True,
                          text=True, cwd=ROOT, env=env)
    assert proc.returncode == 2 and "no such file" in proc.stderr  # not the batch's threshold
    abbreviated = subprocess.run([sys.executable, "-m", "converter", str(tmp_path / "nope.pt"), "--thr", "1"],
                                 capture_output=True, text=True, cwd=ROOT)
    assert abbreviated.returncode == 2 and "unrecognized arguments: --thr" in abbreviated.stderr


def test_sigterm_to_the_cli_is_one_line_and_leaves_no_child(tmp_path):
    model = builders.factory_model(tmp_path / "m", "slow", builders.waiting_model_source(kill_parent=False),
                                   "slowness:waits", (1, 4))
    pid_file = tmp_path / "child.pid"
    proc = subprocess.Popen([sys.executable, "-m", "converter", str(model), "--tflite-dir", str(tmp_path / "o"),
                             "--reports-dir", str(tmp_path / "r")], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, HARNESS_TEST_PID_FILE=str(pid_file)),
                            start_new_session=True)
    try:
        child = wait_for_pid(pid_file, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        with_group_killed(proc)
    assert proc.returncode == 143, err
    *progress, last = err.strip().splitlines()
    assert last == "python -m converter: terminated by SIGTERM during the conversion of slow"
    assert all(line.startswith("slow: ") for line in progress)  # the stage lines before it, no traceback
    assert gone_within(child, 10) and not (tmp_path / "o" / "slow.tflite").exists()


def test_cli_and_pytest_help_work():
    cli = subprocess.run([sys.executable, "-m", "converter", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0 and "--memory-limit-mb" in cli.stdout and "80% of RAM" in cli.stdout
    batch = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert batch.returncode == 0 and "--tflite-conversion-timeout" in batch.stdout and "size:+10%" in batch.stdout


def test_cli_takes_a_relative_path_from_anywhere_and_files_follow_the_umask(tmp_path):
    builders.torchscript_cnn(tmp_path / "here", name="net")
    proc = subprocess.run([sys.executable, "-m", "converter", "here/net.pt", "--tflite-dir", "out", "--reports-dir", "rep"],
                          capture_output=True, text=True, cwd=tmp_path, umask=0o022,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in (tmp_path / "out" / "net.tflite", tmp_path / "rep" / "artifacts" / "net" / "result.json"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_an_id_of_dot_clears_no_other_model_and_delivers_no_hidden_file(tmp_path):
    folder = tmp_path / "m"
    builders.torchscript_cnn(folder, name="net")
    (folder / "net.pt").rename(folder / "..pt")
    (folder / "net.toml").rename(folder / "..toml")
    other = tmp_path / "reports" / "artifacts" / "other" / "convert.log"
    other.parent.mkdir(parents=True)
    other.write_text("another model's log")
    proc = subprocess.run([sys.executable, "-m", "converter", str(folder / "..pt"), "--tflite-dir", str(tmp_path / "out"),
                           "--reports-dir", str(tmp_path / "reports")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert other.read_text() == "another model's log"
    assert [p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".tflite"] == ["%2E.tflite"]
    assert (tmp_path / "reports" / "artifacts" / "%2E" / "result.json").is_file()


# --- bad output folders and concurrent runs: one line, before any conversion -----------------


def test_output_folders_that_are_files_are_one_line_usage_errors(harness):
    builders.torchscript_cnn(harness.path / "models", name="net")
    (harness.path / "taken").write_text("a file")
    for option in ("--tflite-reports-dir", "--tflite-dir"):
        result = run(harness, "--tflite-models-dir", "models", option, "taken")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert "Traceback" not in result.stderr.str() + result.stdout.str()
        result.stderr.fnmatch_lines(["ERROR: * folder *taken is a file, not a folder"])
        assert not (harness.path / "tflite_models").exists()  # refused before creating anything


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder this process cannot write into, even as root (where chmod is no obstacle)."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: no folder is read-only to root")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_deliverables_folder_is_refused_before_converting(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m", name="net")
    with read_only_folder(tmp_path / "out") as out:
        proc = subprocess.run([sys.executable, "-m", "converter", str(model), "--tflite-dir", str(out),
                               "--reports-dir", str(tmp_path / "rep")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "deliverables folder" in proc.stderr and "cannot be written" in proc.stderr
    assert not (tmp_path / "rep" / "artifacts" / "net").exists()  # refused before converting


def test_a_second_run_on_the_same_folders_is_refused_and_the_first_keeps_its_results(harness):
    from converter.output_folders import prepare

    (harness.path / "models").mkdir()
    (harness.path / "models" / "noshape.pt").write_bytes(b"")
    first = prepare(harness.path / "tflite_models", harness.path / "reports")  # a run in progress
    (harness.path / "reports" / "summary.json").write_text('{"the first run": "its summary"}')
    try:
        second = run(harness, "--tflite-models-dir", "models")
        assert second.ret == pytest.ExitCode.USAGE_ERROR
        second.stderr.fnmatch_lines([f"ERROR: * is in use by another run (pid {os.getpid()}, *"])
        assert json.loads((harness.path / "reports" / "summary.json").read_text()) == {"the first run": "its summary"}
        cli = subprocess.run([sys.executable, "-m", "converter", "models/noshape.pt", "--tflite-dir", "tflite_models",
                              "--reports-dir", "reports"], capture_output=True, text=True, cwd=harness.path)
        assert cli.returncode == 2 and "in use by another run" in cli.stderr
    finally:
        first.release()
    assert run(harness, "--tflite-models-dir", "models").ret == pytest.ExitCode.TESTS_FAILED  # free once it ended


def test_absurd_numbers_in_sidecars_fail_their_model_not_the_session(harness):
    models = harness.path / "models"
    models.mkdir()
    for name, toml in (("huge_timeout", "timeout = 1e308\n"), ("inf_range", "[[inputs]]\nshape=[1,4]\nrange=[0,1e400]\n"),
                       ("negative_seed", "seed = -1\n"), ("tiny_memory", "memory_limit_mb = 1\n")):
        (models / f"{name}.pt").write_bytes(b"")
        (models / f"{name}.toml").write_text(toml + ("" if "inputs" in toml else "[[inputs]]\nshape = [1, 4]\n"))
    result = run(harness, "--tflite-models-dir", "models")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(failed=4)
    rows = json.loads((harness.path / "reports" / "summary.json").read_text())["models"]
    assert {m: (r["failure"]["kind"], r["failure"]["message"].split(": ")[0].split("/")[-1]) for m, r in rows.items()} == {
        "huge_timeout": ("spec_error", "huge_timeout.toml key 'timeout'"),
        "inf_range": ("spec_error", "inf_range.toml key 'inputs'"),
        "negative_seed": ("spec_error", "negative_seed.toml key 'seed'"),
        "tiny_memory": ("spec_error", "tiny_memory.toml key 'memory_limit_mb'")}
    mask = os.umask(0)
    os.umask(mask)
    assert (harness.path / "reports" / "summary.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_broken_baseline_is_one_line_and_summaries_are_still_written(harness):
    (harness.path / "models").mkdir()
    (harness.path / "models" / "noshape.pt").write_bytes(b"")
    (harness.path / "baseline.json").write_text('{"schema_version": 1, "models": []}')
    result = run(harness, "--tflite-models-dir", "models", "--tflite-baseline", "baseline.json")
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["ERROR: cannot use the baseline *baseline.json: 'models' must be an object*"])
    assert (harness.path / "reports" / "summary.html").is_file()
    run(harness, "--tflite-models-dir", "models", "--tflite-baseline", "baseline.json", "--tflite-baseline-update")
    assert json.loads((harness.path / "baseline.json").read_text())["models"]["noshape"]["status"] == "failed"


# --- faults that must not hang, orphan or lose a run -------------------------------------------


@pytest.mark.parametrize("workers", [[], ["-n", "1"], ["-n", "2"]], ids=["plain", "one_worker", "two_workers"])
def test_sigterm_to_pytest_ends_the_run_delivers_nothing_after_it_and_says_so(harness, tmp_path, two_cached_cnns,
                                                                             workers):
    cancelled_run(harness, tmp_path, two_cached_cnns, workers, signal.SIGTERM)


def test_sigint_to_the_pytest_controller_under_xdist_ends_the_run_like_sigterm(harness, tmp_path, two_cached_cnns):
    cancelled_run(harness, tmp_path, two_cached_cnns, ["-n", "2"], signal.SIGINT)  # `kill -INT` to the controller alone


def cancelled_run(harness, tmp_path, cached: Path, workers: list[str], sig: signal.Signals) -> None:
    models = harness.path / "models"
    shutil.copytree(cached / "models", models)  # b_net and c_net, cached: the run would restore them
    shutil.copytree(cached / "cache", harness.path / ".tflite_cache", symlinks=True)
    builders.factory_model(models, "a_slow", builders.waiting_model_source(kill_parent=False),
                           "slowness:waits", (1, 4))
    pid_file = tmp_path / "child.pid"
    proc = start_pytest(harness, "--tflite-models-dir", "models", *workers,
                        env=dict(os.environ, HARNESS_TEST_PID_FILE=str(pid_file)))
    try:
        child = wait_for_pid(pid_file, proc)
        family = psutil.Process(proc.pid).children(recursive=True)  # workers, preloaded processes, children
        signalled = time.time()
        proc.send_signal(sig)  # pytest alone, as `docker stop` or a cancelled CI job does
        out = proc.communicate(timeout=120)[0]
        ended = time.time()
        assert proc.returncode != 0, out
        assert gone_within(child, 30), "the conversion child outlived the run"
        assert ended - signalled < 30, f"pytest lived {ended - signalled:.0f} s after {sig.name}"
        deadline = time.monotonic() + 15
        while (left := [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes of the run outlived it: {[(p.pid, p.name()) for p in left]}"
    finally:
        with_group_killed(proc)
    summary = json.loads((harness.path / "reports" / "summary.json").read_text())
    assert summary["ended"]["by"] == sig.name
    ran = set(summary["models"])
    stopped = summary["ended"]["stopped"]  # converting when the signal came: they ran, and are not "did not run"
    assert summary["ended"]["not_run"] + len(stopped) == 3 - len(ran), summary["ended"]
    assert "a_slow" in stopped or "a_slow" in ran, summary["ended"]
    if not workers or workers == ["-n", "1"]:  # one model at a time: the queued two never started
        assert summary["ended"]["not_run"] >= 2 and "b_net" not in ran and "c_net" not in ran
        assert stopped == ["a_slow"] and "a_slow" not in ran, summary["ended"]  # the one converting, named
    assert "a_slow" not in {m for m, r in summary["models"].items() if r["outcome"] == "passed"}
    assert all(summary["models"][m]["cache_hit"] for m in ran - {"a_slow"}), summary["models"]
    for delivered in (harness.path / "tflite_models").glob("*.tflite"):  # delivered before the signal, and reported
        assert delivered.stat().st_mtime < signalled, f"{delivered.name} was delivered after {sig.name}"
        assert summary["models"][delivered.stem]["outcome"] == "passed"
    assert "did not run, and nothing was delivered after it" in (harness.path / "reports" / "summary.md").read_text()
    assert f"The run was ended by {sig.name}" in out


def test_a_worker_killed_mid_conversion_fails_one_model_and_the_run_ends_by_itself(harness, tmp_path):
    models = harness.path / "models"
    # pytest escapes a non-ASCII id in its node ids: the crash must still be matched to its model
    builders.factory_model(models, "killer 模型", builders.waiting_model_source(kill_parent=True), "killers:waits",
                           (1, 4))
    for name in ("a_net", "b_net", "z_net"):
        builders.torchscript_cnn(models, name=name)
    pid_file = tmp_path / "child.pid"
    proc = start_pytest(harness, "-n", "2", "--tflite-models-dir", "models",
                        env=dict(os.environ, HARNESS_TEST_PID_FILE=str(pid_file)))
    try:
        out = proc.communicate(timeout=600)[0]  # a hang would end here, not in CI's limit
    finally:
        with_group_killed(proc)
    assert proc.returncode == 1, out
    assert gone_within(int(pid_file.read_text()), 10), "the killed worker's child lives on"
    rows = json.loads((harness.path / "reports" / "summary.json").read_text())["models"]
    killer = "killer 模型"
    assert sorted(rows) == ["a_net", "b_net", killer, "z_net"]
    assert rows[killer]["failure"]["kind"] == "crash" and "worker" in rows[killer]["failure"]["message"]
    assert all(rows[m]["outcome"] == "passed" for m in ("a_net", "b_net", "z_net"))
    names = {c.get("name") for c in ET.parse(harness.path / "junit.xml").getroot().iter("testcase")}
    assert names == set(rows)  # the plugin's items are named by the model id itself
    assert "3 converted and verified, 1 failed, 0 failed as expected, of 4 models" in out
    assert not [p for p in (harness.path / "tflite_models").iterdir() if p.name.startswith("killer")]
