"""Hangs, orphans and denial of service, produced for real: another user's link where the slot
folder goes, FIFOs and huge files as calibration samples, a factory's setsid process, signals."""
from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path

from .. import users
from ..support import NO_HYPOTHESIS, ROOT

SLOT = """
import time
from converter.slots import conversion_slot, default_folder
folder, note = default_folder()
print(folder)
print(note)
start = time.monotonic()
with conversion_slot(2, limit=5):
    print(round(time.monotonic() - start, 1))
"""


def test_a_link_another_user_puts_where_the_slot_folder_goes_stalls_nothing():
    uid = users.other_uid()
    with users.reachable_folder() as scratch:
        temp = scratch / "tmp"
        temp.mkdir()
        temp.chmod(0o1777)  # like /tmp: anyone may create an entry, no one rename another's
        link = temp / f"tflite-harness-slots-{getpass.getuser()}"
        made = users.as_other(uid, "ln", "-s", "/proc/self", str(link))
        assert made.returncode == 0 and os.lstat(link).st_uid == uid, made.stderr
        env = dict(os.environ, TMPDIR=str(temp), HOME=str(scratch / "home"), XDG_CACHE_HOME="", PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, "-c", SLOT], capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr  # no NoSlot after waiting its whole limit
        folder, note, waited = done.stdout.splitlines()
        assert folder == str(scratch / "home" / ".cache" / "tflite-harness" / "slots")
        assert f"{link} is a symbolic link (uid {uid}), not a folder" in note
        assert float(waited) < 1.0


def huge_npy_header(shape) -> bytes:
    """The header of a float32 .npy of `shape`, as numpy writes it."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def zip_bomb(path: Path, shape) -> None:
    """An .npz whose one member, 'image', declares and holds `shape` of zeros: 1 GB that deflates to 1 MB."""
    import zipfile

    import numpy as np

    size = int(np.prod(shape)) * 4
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("image.npy", "w", force_zip64=True) as member:
            member.write(huge_npy_header(shape))
            chunk = bytes(2**24)
            for _ in range(size // len(chunk)):
                member.write(chunk)


def test_calibration_samples_that_are_bombs_huge_links_fifos_or_devices_are_named_unread(tmp_path):
    import numpy as np

    from converter.failures import FailureKind

    from .. import builders
    from ..support import convert

    model = builders.torchscript_cnn(tmp_path / "m", name="net", toml="")
    model.with_suffix(".toml").write_text('deliverables = ["int8"]\ncalibration = "samples"\n'
                                          '[[inputs]]\nname = "image"\nshape = [1, 3, 16, 16]\n')
    samples = tmp_path / "m" / "samples"
    samples.mkdir()
    for i in range(3):
        np.save(samples / f"s{i}.npy", np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32))
    huge = tmp_path / "huge.npy"  # 12 GB declared and present, sparse: a link to it is what the folder holds
    header = huge_npy_header((4096, 3, 512, 512))
    huge.write_bytes(header)
    os.truncate(huge, len(header) + 4096 * 3 * 512 * 512 * 4)

    def make(name: str, build) -> Path:
        for old in samples.glob("x_*"):
            old.unlink()
        build(samples / name)
        return samples / name

    cases = {
        "x_bomb.npz": (lambda p: zip_bomb(p, (256, 3, 512, 512)),
                       "x_bomb.npz: input 'image': shape [256, 3, 512, 512] is not the input's [1, 3, 16, 16]"),
        "x_huge.npy": (lambda p: p.symlink_to(huge),
                       "x_huge.npy: input 'image': shape [4096, 3, 512, 512] is not the input's [1, 3, 16, 16]"),
        "x_fifo.npy": (lambda p: os.mkfifo(p), "x_fifo.npy: is a FIFO, not a sample file"),
        "x_zero.npy": (lambda p: p.symlink_to("/dev/zero"), "x_zero.npy: is a character device, not a sample file"),
    }
    for name, (build, says) in cases.items():
        make(name, build)
        result = convert(tmp_path, model, no_cache="1")
        assert result.failure is not None and result.failure.kind is FailureKind.SPEC_ERROR, (name, result.failure)
        assert result.failure.stage == "load" and says in result.failure.message, (name, result.failure.message)
        assert result.peak_rss_mb < 1500, (name, result.peak_rss_mb)  # its data never read


DAEMON = """
import os, subprocess, torch

def leaves_one():
    # a factory that starts a helper in a session of its own (as a data server or a compiler might)
    helper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    with open(os.environ["HARNESS_TEST_PID_FILE"], "w") as fh:
        fh.write(str(helper.pid))
    return torch.nn.Linear(4, 2)
"""


def test_a_factorys_setsid_subprocess_does_not_outlive_the_conversion(tmp_path, monkeypatch):
    import psutil

    from .. import builders
    from ..support import convert

    pid_file = tmp_path / "helper.pid"
    monkeypatch.setenv("HARNESS_TEST_PID_FILE", str(pid_file))
    model = builders.factory_model(tmp_path / "m", "net", DAEMON, "daemons:leaves_one", (1, 4))
    own = int(pid_file.read_text())  # the builder ran the factory here too: that helper is this test's
    os.kill(own, 9)
    os.waitpid(own, 0)
    pid_file.unlink()
    result = convert(tmp_path, model, no_cache="1")
    assert result.passed, result.failure
    helper = int(pid_file.read_text())
    try:
        proc = psutil.Process(helper)
        proc.wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        os.kill(helper, 9)
        raise AssertionError("the factory's setsid subprocess outlived the conversion") from None


def deep_chain(base: Path, depth: int) -> None:
    """`depth` nested folders, made relative to each other (no path gets longer than one name)."""
    fd = os.open(base, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = deeper
    finally:
        os.close(fd)


def remove_chain(base: Path) -> None:
    """The chain removed from the bottom up (shutil.rmtree recurses, and would fail on it)."""
    depth, path = 0, base
    while (path / "d").is_dir():
        path, depth = path / "d", depth + 1
    fd = os.open(base, os.O_RDONLY)
    fds = [fd]
    for _ in range(depth - 1):
        fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
    for parent in reversed(fds):
        os.rmdir("d", dir_fd=parent)
        os.close(parent)


def test_a_1100_deep_folder_chain_in_the_models_folder_is_no_internal_error(harness):
    models = harness.path / "models"
    models.mkdir()
    (models / "noshape.pt").write_bytes(b"")  # fails at once (spec_error): the batch runs
    deep_chain(models, 1100)
    try:
        result = harness.runpytest_subprocess("-p", "no:cacheprovider", "--tflite-models-dir", "models")
    finally:
        remove_chain(models)
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "RecursionError" not in output, output[-3000:]
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["note: folders more than 100 levels below *models are not searched for models*"])


def test_a_slot_folder_of_unusable_lock_files_is_no_slot_and_keeps_the_earlier_deliverable(tmp_path):
    from .. import builders

    model = builders.torchscript_cnn(tmp_path / "m", name="net")
    temp = tmp_path / "tmp"
    env = dict(os.environ, TMPDIR=str(temp), TFLITE_HARNESS_MAX_CONVERSIONS="1")
    command = [sys.executable, "-m", "converter", str(model), "--tflite-dir", str(tmp_path / "out"), "--reports-dir",
               str(tmp_path / "rep"), "--no-cache"]
    temp.mkdir()
    first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    delivered = (tmp_path / "out" / "net.tflite").read_bytes()
    slots = temp / f"tflite-harness-slots-{getpass.getuser()}"
    (slots / "slot-0.lock").unlink()
    (slots / "slot-0.lock").mkdir()  # a folder where the lock file belongs: the slot can never be taken
    blocked = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert blocked.returncode == 1 and "Traceback" not in blocked.stdout + blocked.stderr, blocked.stdout
    assert "[no_slot]" in blocked.stdout and "no conversion slot can be taken" in blocked.stdout, blocked.stdout
    assert (tmp_path / "out" / "net.tflite").read_bytes() == delivered  # the machine's fault, not the model's


def test_proc_as_the_models_folder_while_processes_come_and_go_is_one_line(tmp_path):
    """Folders that vanish during the walk (/proc/<pid> of processes that end meanwhile, started here
    in a loop so that some do): discovery passes over them, and the run says in one line that it
    found no models."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    churn = subprocess.Popen(["sh", "-c", "while :; do sh -c 'sleep 0.01' & sleep 0.005; done"],
                             start_new_session=True)
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "converter.pytest_plugin"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300,
                              env=dict(os.environ, TFLITE_HARNESS_MODELS_DIR="/proc", PYTHONPATH=str(ROOT),
                                       PYTEST_ADDOPTS=NO_HYPOTHESIS))
    finally:
        os.killpg(churn.pid, 9)
        churn.wait()
    output = done.stdout + done.stderr
    assert "INTERNALERROR" not in output and "Traceback" not in output, output[-3000:]
    assert done.returncode == 4 and output.strip().splitlines()[-1] == "ERROR: no model files (.pt, .pth, .pt2) under /proc"
