"""Faults produced for real: a full disk (a tmpfs filled up), a read-only cache, a model file
swapped while its run waits, planted and broken cache entries, symbolic links, FIFOs and
devices named like models, a 4 GB sparse file. Each leaves every verified deliverable in place
and says what happened in one line."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from converter import cache
from converter.protocol import WAITING_FILE

from .. import builders
from ..mounts import FILL, needs_mounts, run_mounted
from ..support import NO_HYPOTHESIS, ROOT, convert, run, settings_for


def pytest_command(*args) -> str:
    return shlex.join([sys.executable, "-m", "pytest", *NO_HYPOTHESIS.split(), "-p", "no:cacheprovider",
                       "--tflite-conversion-threads=1", *args])


def cli_command(*args) -> list[str]:
    return [sys.executable, "-m", "converter", *map(str, args)]


def no_traceback(text: str) -> None:
    assert "Traceback" not in text and "INTERNALERROR" not in text, text


# --- a full disk ----------------------------------------------------------------------------


@needs_mounts
def test_a_full_reports_disk_is_one_line_per_model_and_removes_no_deliverable(harness):
    models = harness.path / "models"
    builders.torchscript_cnn(models, name="a_net")
    builders.torchscript_cnn(models, name="b_net", seed=1)
    batch = pytest_command("--tflite-models-dir", "models", "--junitxml=reports/junit.xml")
    # run 1 fills the folders; then the reports disk fills up (its summaries stay, stale), and the
    # unchanged models run again, restored from the cache (run 2) and converted afresh (run 3)
    script = f"""
{batch} > run1.txt 2>&1; echo $? > run1.rc
cp -r tflite_models delivered_by_run1
rm -r reports/artifacts
{FILL.format("reports")}
{batch} > run2.txt 2>&1; echo $? > run2.rc
{batch} --tflite-no-cache > run3.txt 2>&1; echo $? > run3.rc
ls -A reports > reports_after.txt
cat reports/junit.xml > junit_after.xml 2>/dev/null || true
"""
    run_mounted({harness.path / "reports": "size=64m"}, script, cwd=harness.path)
    here = harness.path
    assert (here / "run1.rc").read_text().strip() == "0", (here / "run1.txt").read_text()
    for name in ("run2", "run3"):
        out = (here / f"{name}.txt").read_text()
        assert (here / f"{name}.rc").read_text().strip() == "1", out
        no_traceback(out)
        for model in ("a_net", "b_net"):  # the machine's disk, named, not the model's fault
            lines = [ln for ln in out.splitlines() if ln.startswith(f"  {model}: ")]  # the batch's section names it
            assert lines == [f"  {model}: test [disk_full]"], out
            told = [ln for ln in out.splitlines() if ln.startswith(f"{model}: test failed [disk_full]: ")]
            assert len(told) == 1 and "no space left on the disk" in told[0], out  # its FAILURES entry says why
        assert "ERROR: the summaries cannot be written" in out and "ERROR: the JUnit report cannot be written" in out
        assert "summary: not written" in out and "summary.md (and .html" not in out  # no footer naming a missing file
    for model in ("a_net", "b_net"):  # the verified deliverables are all still there, unchanged
        delivered = here / "tflite_models" / f"{model}.tflite"
        assert delivered.read_bytes() == (here / "delivered_by_run1" / f"{model}.tflite").read_bytes()
    left = (here / "reports_after.txt").read_text().split()
    assert not {"summary.json", "summary.md", "summary.html", "junit.xml"} & set(left), left  # run 1's "2 passed"
    assert (here / "junit_after.xml").read_text() == ""  # no report cut off midway


@needs_mounts
def test_a_full_deliverables_disk_through_the_cli_is_one_line_and_keeps_the_old_file(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m", name="net")
    out = tmp_path / "out"
    command = shlex.join(cli_command(model, "--tflite-dir", out, "--reports-dir", tmp_path / "r", "--no-cache"))
    script = f"""
printf 'the earlier deliverable' > {shlex.quote(str(out / "net.tflite"))}
{FILL.format(shlex.quote(str(out)))}
{command} > cli.txt 2>&1; echo $? > cli.rc
cat {shlex.quote(str(out / "net.tflite"))} > kept.txt
"""
    # mode 755: a tmpfs is mounted 1777, and a deliverables folder others can write is refused
    run_mounted({out: "size=2m,mode=755"}, script, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    text = (tmp_path / "cli.txt").read_text()
    no_traceback(text)
    assert (tmp_path / "cli.rc").read_text().strip() == "1", text
    assert "[disk_full]" in text and "no space left on the disk during delivering net.tflite to …/out" in text
    assert (tmp_path / "kept.txt").read_text() == "the earlier deliverable"


# --- what the cache holds is what was converted -----------------------------------------------


def test_a_file_replaced_while_its_run_waits_is_cached_under_the_bytes_converted(tmp_path, monkeypatch):
    from converter import slots

    model = builders.torchscript_cnn(tmp_path / "m", name="net", seed=0)
    other = builders.torchscript_cnn(tmp_path / "other", name="net", seed=1).read_bytes()
    original = model.read_bytes()
    folder = tmp_path / "slots"
    monkeypatch.setattr(slots, "default_folder", lambda: (folder, None))  # this test's slots, no other run's
    waiting = tmp_path / "reports" / "artifacts" / "net" / WAITING_FILE
    results = []
    with slots.conversion_slot(1, folder=folder):  # the machine is busy: the run waits for this slot
        worker = threading.Thread(target=lambda: results.append(convert(tmp_path, model, max_conversions="1")))
        worker.start()
        deadline = time.monotonic() + 120
        while not waiting.exists():
            assert time.monotonic() < deadline and worker.is_alive(), "the run never waited for its slot"
            time.sleep(0.1)
        model.write_bytes(other)  # replaced while it waits, as a `git checkout` or a sync would
    worker.join(timeout=600)
    (swapped,) = results
    assert swapped.passed and swapped.load.model_sha256 == cache._sha256(other)
    model.write_bytes(original)  # put back: its run must convert it, not restore the other model
    back = convert(tmp_path, model, max_conversions="1")
    assert back.passed and not back.cache_hit and back.load.model_sha256 == cache._sha256(original)
    assert [o.range_rel_err for o in convert(tmp_path, model).deliverable_of("drq").outputs] == \
        [o.range_rel_err for o in back.deliverable_of("drq").outputs]  # and the entry it left serves again
    model.write_bytes(other)
    assert convert(tmp_path, model).cache_hit  # the swapped bytes' entry is theirs


def test_a_planted_or_broken_cache_entry_is_never_restored(tmp_path):
    folder = tmp_path / "m"
    small = builders.torchscript_cnn(folder, name="small", shape=(1, 3, 16, 16))
    wide = builders.torchscript_cnn(folder, name="wide", shape=(1, 3, 24, 24))
    twin = builders.torchscript_cnn(folder, name="twin", shape=(1, 3, 16, 16), seed=3)
    first = {p.stem: convert(tmp_path, p) for p in (small, wide, twin)}
    assert all(r.passed for r in first.values())
    settings = settings_for(tmp_path)
    from converter.discovery import discover

    cases = {c.model_id: c for c in discover([folder], timeout=settings.timeout, engine=settings.engine)}
    entries = {m: tmp_path / "cache" / cache.key(cases[m].spec, first[m].load.model_sha256) for m in cases}
    assert all(e.is_dir() for e in entries.values())
    pristine = {name: (entries["small"] / name).read_bytes() for name in os.listdir(entries["small"])}

    def plant(**files):
        """small's entry with some files replaced and its manifest rewritten to match."""
        for name, data in pristine.items():
            (entries["small"] / name).write_bytes(data)
        for name, data in files.items():
            path = entries["small"] / name
            path.unlink(missing_ok=True) if data is None else path.write_bytes(data)
        manifest = json.loads(pristine["manifest.json"])
        manifest["files"] = {n: cache._sha256((entries["small"] / n).read_bytes())
                             for n in manifest["files"] if (entries["small"] / n).is_file()}
        (entries["small"] / "manifest.json").write_text(json.dumps(manifest))

    def restored():
        return cache.restore(tmp_path / "cache", entries["small"].name, tmp_path / "restored", cases["small"].spec,
                             model_digest=first["small"].load.model_sha256)

    drq = "model_drq.tflite"
    record = json.loads(pristine["result.json"])
    attacks = {
        "another input shape": {drq: (entries["wide"] / drq).read_bytes()},
        "same signature, other weights": {drq: (entries["twin"] / drq).read_bytes()},
        "no result.json": {"result.json": None},
        "a result.json of '{'": {"result.json": b"{"},
        "no deliverables": {"result.json": json.dumps({**record, "deliverables": None}).encode()},
        "another model's samples": {"samples.npz": (entries["twin"] / "samples.npz").read_bytes()},
        "another model's whole entry": {n: (entries["twin"] / n).read_bytes() for n in pristine if n != "manifest.json"},
    }
    for attack, files in attacks.items():
        plant(**files)
        assert restored() is None, attack
        assert not entries["small"].exists(), f"{attack}: a bad entry is removed, not kept to fail every rerun"
        entries["small"].mkdir()
    plant()
    assert restored() is not None  # the same entry, unaltered, is restored: the checks above are not blind
    again = convert(tmp_path, small)
    assert again.passed and again.cache_hit
    assert again.deliverable_of("drq").outputs[0].range_rel_err == first["small"].deliverable_of("drq").outputs[0].range_rel_err


def test_a_cache_folder_others_can_write_is_not_used_and_the_run_says_so(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m", name="net")
    folder = tmp_path / "cache"
    args = (model, "--tflite-dir", tmp_path / "out", "--reports-dir", tmp_path / "r", "--tflite-cache-dir", folder)
    first = subprocess.run(cli_command(*args), capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stdout + first.stderr
    folder.chmod(0o777)  # anyone on the machine could plant an entry here
    shared = subprocess.run(cli_command(*args), capture_output=True, text=True, cwd=ROOT)
    assert shared.returncode == 0 and "restored from the cache" not in shared.stdout
    assert f"cache folder {folder} can be written by others (mode 777)" in shared.stderr
    assert "converting without the cache" in shared.stderr
    if os.getuid() == 0:  # another user's folder, mode 700
        folder.chmod(0o700)
        os.chown(folder, 65534, 65534)
        foreign = subprocess.run(cli_command(*args), capture_output=True, text=True, cwd=ROOT)
        assert foreign.returncode == 0 and "belongs to another user (uid 65534)" in foreign.stderr


@needs_mounts
def test_a_read_only_cache_is_said_once_and_the_model_still_passes(harness):
    builders.torchscript_cnn(harness.path / "models", name="net")
    script = f"{pytest_command('--tflite-models-dir', 'models', '--junitxml=junit.xml')} > out.txt 2>&1; echo $? > rc"
    run_mounted({harness.path / ".tflite_cache": "ro"}, script, cwd=harness.path)
    out = (harness.path / "out.txt").read_text()
    assert (harness.path / "rc").read_text().strip() == "0", out
    no_traceback(out)
    assert "cannot be written (Read-only file system): converting without the cache" in out
    assert (harness.path / "tflite_models" / "net.tflite").is_file()


# --- odd entries in a models folder ---------------------------------------------------------------


def test_symlinks_fifos_and_devices_are_cases_of_their_own(harness, tmp_path):
    models = harness.path / "models"
    outside = builders.torchscript_cnn(tmp_path / "elsewhere", name="stored")  # git-annex / DVC keep models so
    (models / "a").mkdir(parents=True)
    (models / "a" / "net.pt").symlink_to(outside)
    (models / "a" / "net.toml").symlink_to(outside.with_suffix(".toml"))
    builders.torchscript_cnn(models / "b", name="net", seed=1)
    os.mkfifo(models / "fifo.pt")
    (models / "zero.pt").symlink_to("/dev/zero")
    (models / "dangling.pt").symlink_to(tmp_path / "gone.pt")
    for name in ("fifo", "zero", "dangling"):
        (models / f"{name}.toml").write_text("[[inputs]]\nshape = [1, 3, 16, 16]\n")
    result = run(harness, "--tflite-models-dir", "models")
    result.assert_outcomes(passed=2, failed=3)
    out = result.stdout.str()
    no_traceback(out)
    for line in ("dangling: load failed [load_error]: model file dangling.pt is a symbolic link to a missing file",
                 "fifo: load failed [load_error]: model file fifo.pt is a FIFO, not a file",
                 "zero: load failed [load_error]: model file zero.pt is a character device, not a file"):
        assert line in out.splitlines(), out
    rows = json.loads((harness.path / "reports" / "summary.json").read_text())["models"]
    assert {m for m, r in rows.items() if r["outcome"] == "passed"} == {"a/net", "b/net"}
    assert all(Path(rows[m]["deliverable"]).is_file() for m in ("a/net", "b/net"))


def test_a_4gb_sparse_file_is_refused_unread_under_its_memory_ceiling(tmp_path):
    sparse = tmp_path / "elsewhere" / "huge.bin"
    sparse.parent.mkdir()
    with open(sparse, "wb") as fh:
        fh.truncate(4 * 2**30)  # 4 GB that take no disk
    link = tmp_path / "m" / "huge.pt"
    link.parent.mkdir()
    link.symlink_to(sparse)
    link.with_suffix(".toml").write_text("[[inputs]]\nshape = [1, 4]\n")
    # the peak resident memory of the CLI and every process it waited for, measured from outside
    probe = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, done.returncode)")
    proc = subprocess.run([sys.executable, "-c", probe, *cli_command(link, "--tflite-dir", tmp_path / "o",
                                                                     "--reports-dir", tmp_path / "r",
                                                                     "--tflite-cache-dir", tmp_path / "c",
                                                                     "--memory-limit-mb", "500")],
                          capture_output=True, text=True, cwd=ROOT)
    peak_mb, status = map(int, proc.stdout.strip().splitlines()[-1].split())
    assert status == 1 and "[out_of_memory]" in proc.stdout, proc.stdout + proc.stderr
    assert "model file is 4,096 MB, more than the 500 MB memory ceiling" in proc.stdout
    assert peak_mb < 1500, f"{peak_mb} MB resident: the 4 GB file was read whole"


# --- numbers that are not finite ----------------------------------------------------------------

LOG_SOURCE = """
import torch


class LogLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, 6)

    def forward(self, x):
        return torch.log(self.fc(x))  # NaN wherever the linear part is negative, in PyTorch too


def log_linear():
    return LogLinear()
"""


def test_outputs_that_are_nan_where_pytorchs_are_pass(tmp_path):
    model = builders.factory_model(tmp_path / "m", "loglin", LOG_SOURCE, "loglin:log_linear", (1, 4))
    result = convert(tmp_path, model)
    assert result.passed, result.failure
    reference = np.load(Path(result.deliverable_of("drq").path).parent / "samples.npz")["reference_0"]
    assert np.isnan(reference).any() and np.isfinite(reference).any()  # the check had NaN to agree on


def test_a_non_finite_output_where_pytorchs_is_finite_counts_as_an_element_off():
    from converter.metrics import compare

    reference = np.array([[1.0, 2.0, 3.0, np.nan]])
    assert compare("y", reference, reference.copy(), 0.01).passed
    wrong = compare("y", reference, np.array([[1.0, np.inf, 3.0, np.nan]]), 0.01)
    assert not wrong.passed and wrong.mismatched == 1
    assert "(1/4 elements off" in wrong.brief("drq")
    assert not compare("y", reference, np.array([[1.0, 2.0, 3.0, 4.0]]), 0.01).passed


# --- settings and folders the machine gives ------------------------------------------------------


def test_a_slot_folder_of_another_user_is_said_and_runs_of_this_user_still_share_one(tmp_path):
    if os.getuid() != 0:
        pytest.skip("making a folder another user's needs root")
    import getpass

    temp = tmp_path / "tmp"
    taken = temp / f"tflite-harness-slots-{getpass.getuser()}"
    taken.mkdir(parents=True)
    os.chown(taken, 65534, 65534)
    code = "from converter.slots import default_folder; folder, note = default_folder(); print(folder); print(note)"
    env = dict(os.environ, TMPDIR=str(temp), HOME=str(tmp_path / "home"), XDG_CACHE_HOME="")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
            for _ in range(2)]
    folders = {r.stdout.splitlines()[0] for r in runs}
    assert folders == {str(tmp_path / "home" / ".cache" / "tflite-harness" / "slots")}  # one, shared, no litter
    assert "cannot be used" in runs[0].stdout and "other users' conversions are not counted" in runs[0].stdout
    assert sorted(p.name for p in temp.iterdir()) == [taken.name]


def test_a_lock_file_that_is_a_folder_costs_its_slot_not_the_run(tmp_path):
    from converter.slots import NoSlot, conversion_slot

    (tmp_path / "slot-0.lock").mkdir()
    with conversion_slot(2, folder=tmp_path) as index:
        assert index == 1
    with pytest.raises(NoSlot, match="every lock file in .* is unusable"):
        with conversion_slot(1, folder=tmp_path):
            pass
