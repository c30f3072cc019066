"""A stale or foreign file never ships as verified: each fault produced for real (a sub-package
factory edited between runs, an entry transplanted from another model, a model that ignores its
input), with real conversions."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from converter import cache, firmware
from converter.failures import FailureKind
from converter.results import Deliverable

from .. import builders, users
from ..support import ROOT, convert, run

ARCH = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return {body}

def build():
    return Net()
"""


def sub_package_model(folder: Path, body: str = "self.fc(x)", seed: int = 0) -> Path:
    """A state_dict whose factory, `pkg.arch:build`, lives in a sub-package of the model's folder."""
    package = folder / "pkg"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "arch.py").write_text(textwrap.dedent(ARCH.format(body=body)))
    namespace: dict = {}
    exec(textwrap.dedent(ARCH.format(body=body)), namespace)
    torch.manual_seed(seed)
    path = folder / "net.pt"
    torch.save(namespace["build"]().state_dict(), path)
    path.with_suffix(".toml").write_text('factory = "pkg.arch:build"\n[[inputs]]\nshape = [1, 4]\n')
    return path


def test_an_edited_sub_package_factory_is_converted_again_not_restored(tmp_path):
    model = sub_package_model(tmp_path / "m")
    first = convert(tmp_path, model)
    assert first.passed and not first.cache_hit, first.failure
    shipped = (tmp_path / "out" / "net.tflite").read_bytes()
    assert convert(tmp_path, model).cache_hit  # unchanged: restored (the check below is not blind)
    arch = tmp_path / "m" / "pkg" / "arch.py"
    arch.write_text(arch.read_text().replace("return self.fc(x)", "return self.fc(x) * 3.0 + 1.0"))
    edited = convert(tmp_path, model)
    assert edited.passed and not edited.cache_hit, "the old conversion was restored for an edited factory"
    assert (tmp_path / "out" / "net.tflite").read_bytes() != shipped


def test_an_entry_transplanted_from_another_model_is_not_restored(tmp_path):
    folder = tmp_path / "m"
    mine = sub_package_model(folder)
    other_folder = tmp_path / "other"
    other = sub_package_model(other_folder, seed=1)  # the same architecture, other weights
    assert convert(tmp_path, other).passed
    theirs = {p.name: p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")}
    assert convert(tmp_path, mine).passed
    (mine_key,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".") and p.name not in theirs]
    (their_entry,) = theirs.values()
    # another user (or a careless copy) puts the other model's whole entry under this model's key
    shutil.rmtree(mine_key)
    shutil.copytree(their_entry, mine_key)
    manifest = json.loads((mine_key / cache.MANIFEST).read_text())
    (mine_key / cache.MANIFEST).write_text(json.dumps({**manifest, "key": mine_key.name}))
    (tmp_path / "out" / "net.tflite").unlink()
    again = convert(tmp_path, mine)
    assert again.passed and not again.cache_hit, "another model's entry was restored as this model's"
    assert again.model_sha256 == cache.file_digest(mine)
    assert (tmp_path / "out" / "net.tflite").read_bytes() != (their_entry / "model_drq.tflite").read_bytes()


def test_fail_on_vacuous_holds_on_a_cache_hit_and_a_cached_refusal_binds_no_run_without_it(tmp_path):
    model = sub_package_model(tmp_path / "m", body="self.fc(x * 0.0)")  # its output ignores its input
    lenient = convert(tmp_path, model)
    assert lenient.passed and lenient.caveats, lenient.failure
    strict = convert(tmp_path, model, fail_on_vacuous="1")
    assert strict.failure is not None and strict.failure.kind is FailureKind.VACUOUS_CHECK
    assert not (tmp_path / "out" / "net.tflite").exists()
    assert convert(tmp_path, model, fail_on_vacuous="1").failure.kind is FailureKind.VACUOUS_CHECK  # its own hit
    again = convert(tmp_path, model)
    assert again.passed and again.cache_hit


WIDE = """
import torch

def wide():
    return torch.nn.Linear(4, 8)
"""


def test_a_channel_axis_the_output_lacks_or_its_batch_axis_is_a_spec_error_not_wrapped(tmp_path):
    model = builders.factory_model(tmp_path / "m", "wide", WIDE, "wides:wide", (1, 4))
    sidecar = model.with_suffix(".toml").read_text()
    for axis in (5, -2):  # on a [1, 8] output: 5 used to become 1, and -2 the batch axis 0
        model.with_suffix(".toml").write_text(sidecar + f"[channel_axis]\noutput_0 = {axis}\n")
        result = convert(tmp_path, model)
        assert result.failure is not None and result.failure.kind is FailureKind.SPEC_ERROR, (axis, result.failure)
        assert f"[channel_axis] output_0 = {axis} is not an axis of output 'output_0' (shape [1, 8])" \
            in result.failure.message
        assert not (tmp_path / "out" / "wide.tflite").exists()
    model.with_suffix(".toml").write_text(sidecar + "[channel_axis]\noutput_0 = -1\n")
    fixed = convert(tmp_path, model)  # the sidecar's fix is converted, not the cached refusal restored
    assert fixed.passed, fixed.failure
    assert fixed.deliverable_of("drq").outputs[0].channel_axis == 1


LOG = """
import torch

class Log(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.log(x) + self.fc(x)  # NaN wherever an input is negative: where moves with the input

def log():
    return Log()
"""


def test_nan_outputs_that_move_with_the_input_are_not_called_vacuous(tmp_path):
    model = builders.factory_model(tmp_path / "m", "log", LOG, "logs:log", (1, 4))
    result = convert(tmp_path, model, fail_on_vacuous="1")
    assert result.failure is None or result.failure.kind is not FailureKind.VACUOUS_CHECK, result.failure
    assert not result.caveats, [c.describe() for c in result.caveats]
    assert result.passed, result.failure


def cli(model: Path, tflite: Path, reports: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "converter", str(model), "--tflite-dir", str(tflite),
                           "--reports-dir", str(reports), "--no-cache"], capture_output=True, text=True, cwd=ROOT)


def test_output_folders_another_user_can_write_are_refused_before_the_child_reads_a_job_there():
    uid = users.other_uid()
    with users.reachable_folder() as tmp_path:
        folders_of_another_user_are_refused(tmp_path, uid)


def folders_of_another_user_are_refused(tmp_path: Path, uid: int) -> None:
    model = builders.torchscript_cnn(tmp_path / "m", name="net")
    reports = tmp_path / "reports"
    (reports / "artifacts").mkdir(parents=True, mode=0o755)
    os.chown(reports, uid, -1)  # the other user's folder: they can replace artifacts/net/ at will
    planted = users.as_other(uid, "mkdir", str(reports / "planted"))
    assert planted.returncode == 0, planted.stderr  # they really can write there
    refused = cli(model, tmp_path / "out", reports)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"reports folder {reports} belongs to another user (uid {uid})" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (reports / "artifacts" / "net").exists()
    os.chown(reports, os.getuid(), -1)
    for folder, what in ((reports / "artifacts", "artifacts folder"), (tmp_path / "out", "deliverables folder")):
        folder.mkdir(exist_ok=True)
        folder.chmod(0o777)  # this user's own, which anyone may write
        refused = cli(model, tmp_path / "out", reports)
        assert refused.returncode == 2 and f"{what} {folder} can be written by others (mode 777)" in refused.stderr
        folder.chmod(0o755)
    above = tmp_path / "shared"
    above.mkdir()
    os.chown(above, uid, -1)  # a folder above them that the other user owns: they could rename ours away
    refused = cli(model, above / "out", above / "reports")
    assert refused.returncode == 2 and f"is inside {above}, which belongs to another user (uid {uid})" in refused.stderr
    passed = cli(model, tmp_path / "out", reports)
    assert passed.returncode == 0, passed.stdout + passed.stderr  # the same folders, this user's alone: converted


def test_deliverables_of_removed_or_renamed_models_leave_the_deliverables_folder(harness):
    models = harness.path / "models"
    for name in ("a_net", "b_net"):
        builders.torchscript_cnn(models / "sub", name=name, seed=len(name))
    run(harness, "--tflite-models-dir", "models").assert_outcomes(passed=2)
    out = harness.path / "tflite_models"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tflite")) == ["a_net.tflite", "b_net.tflite"]
    (out / "notes.txt").write_text("the user's own file")
    # as if a_net had been delivered as int8_io: its C array goes with it; a header of the user's stays
    firmware.write_c_array(out / "a_net.tflite", "a_net", (out / "a_net.tflite").read_bytes(), Deliverable("int8_io", "", 0))
    (out / "b_net.h").write_text("// the user's own header\n")
    for suffix in (".pt", ".toml"):
        (models / "sub" / f"a_net{suffix}").unlink()  # removed
        (models / "sub" / f"b_net{suffix}").rename(models / f"c_net{suffix}")  # renamed (and moved)
    second = run(harness, "--tflite-models-dir", "models")
    second.assert_outcomes(passed=1)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tflite")) == ["c_net.tflite"]
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert not (out / "a_net.cc").exists() and not (out / "a_net.h").exists()
    assert (out / "b_net.h").read_text() == "// the user's own header\n"
    second.stdout.fnmatch_lines(["note: removed 2 deliverable(s) of models no longer in the models folders from *: "
                                 "a_net.tflite, b_net.tflite (no run verifies them any more)"])


def test_a_cache_the_controller_refuses_is_not_used_by_xdist_workers(harness):
    builders.torchscript_cnn(harness.path / "models", name="net")
    args = ("--tflite-models-dir", "models", "--tflite-cache-dir", "cache")
    run(harness, *args).assert_outcomes(passed=1)
    run(harness, *args, "-n", "1").assert_outcomes(passed=1)
    assert 'name="cache_hit" value="hit"' in (harness.path / "junit.xml").read_text()  # a worker uses a good cache
    (harness.path / "cache").chmod(0o777)  # anyone on the machine could plant an entry now
    refused = run(harness, *args, "-n", "1")
    refused.assert_outcomes(passed=1)
    refused.stdout.fnmatch_lines(["note: cache folder * can be written by others (mode 777)*converting without the cache"])
    assert 'name="cache_hit" value=""' in (harness.path / "junit.xml").read_text()
    rows = json.loads((harness.path / "reports" / "summary.json").read_text())["models"]
    assert rows["net"]["cache_hit"] is False


def test_one_folder_for_deliverables_and_reports_is_refused_in_one_line(harness):
    model = builders.torchscript_cnn(harness.path / "models", name="net")
    for tflite, reports, how in (("out", "out", "is"), ("out", "out/reports", "overlaps"), ("rep/tfl", "rep", "overlaps")):
        done = cli(model, harness.path / tflite, harness.path / reports)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert f"the deliverables folder and the reports folder must be apart: {harness.path / tflite} {how}" in done.stderr
        batch = run(harness, "--tflite-models-dir", "models", "--tflite-dir", tflite, "--tflite-reports-dir", reports)
        assert batch.ret == 4 and "Traceback" not in batch.stdout.str() + batch.stderr.str()
        batch.stderr.fnmatch_lines(["ERROR: the deliverables folder and the reports folder must be apart: *"])
        assert not (harness.path / "out" / "net.tflite").exists() and not (harness.path / "rep").exists()


def test_a_model_file_that_fails_to_read_is_one_line_not_a_traceback_from_the_cache(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "mem.pt").symlink_to("/proc/self/mem")  # a regular file to stat; reading it is EIO
    (folder / "mem.toml").write_text("[[inputs]]\nshape = [1, 4]\n")
    done = subprocess.run([sys.executable, "-m", "converter", str(folder / "mem.pt"), "--tflite-dir",
                           str(tmp_path / "out"), "--reports-dir", str(tmp_path / "rep"), "--tflite-cache-dir",
                           str(tmp_path / "cache")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "[load_error]" in done.stdout and "model file mem.pt cannot be read (Input/output error)" in done.stdout, \
        done.stdout


def test_a_bad_cli_option_value_is_one_line_without_the_usage_block(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m", name="net")
    for args, words in ((["--conversion-timeout", "soon"], "--conversion-timeout"), (["--layout", "sideways"], "--layout"),
                        (["--no-such-option"], "unrecognized arguments: --no-such-option")):
        done = subprocess.run([sys.executable, "-m", "converter", str(model), *args], capture_output=True, text=True,
                              cwd=ROOT)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("python -m converter: error: ") and words in done.stderr, done.stderr


def test_a_factory_that_raises_keyboard_interrupt_is_a_load_error_not_a_crash(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "stops.py").write_text("def stop():\n    raise KeyboardInterrupt('the factory gave up')\n")
    torch.save(torch.nn.Linear(4, 2).state_dict(), folder / "net.pt")
    (folder / "net.toml").write_text('factory = "stops:stop"\n[[inputs]]\nshape = [1, 4]\n')
    result = convert(tmp_path, folder / "net.pt")
    assert result.failure is not None and result.failure.kind is FailureKind.LOAD_ERROR, result.failure
    assert result.failure.stage == "load"
    assert "factory 'stops:stop' raised KeyboardInterrupt (the factory gave up)" in result.failure.message


def test_names_tensorflow_rejects_are_spec_errors_before_converting(tmp_path):
    model = builders.torchscript_mlp(tmp_path / "m", name="mlp")
    sidecar = model.with_suffix(".toml")
    for toml, says in (('output_names = ["in put"]\n[[inputs]]\nshape = [1, 32]\n',
                        "'in put' is not a name TensorFlow accepts for an output"),
                       ('[[inputs]]\nname = "é"\nshape = [1, 32]\n', "name 'é' is not one TensorFlow accepts for an input")):
        sidecar.write_text(toml)
        result = convert(tmp_path, model)
        assert result.failure is not None and result.failure.kind is FailureKind.SPEC_ERROR, result.failure
        assert result.failure.stage == "spec" and says in result.failure.message, result.failure.message
    sidecar.write_text('output_names = ["scores/out>1"]\n[[inputs]]\nname = "in put"\nshape = [1, 32]\n')
    assert convert(tmp_path, model).passed  # what TensorFlow takes still converts


def test_an_edited_factory_package_on_pythonpath_outside_the_models_folder_is_converted_again(tmp_path):
    lib = tmp_path / "lib" / "netlib"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    (lib / "arch.py").write_text(textwrap.dedent(ARCH.format(body="self.fc(x)")))
    namespace: dict = {}
    exec(textwrap.dedent(ARCH.format(body="self.fc(x)")), namespace)
    model = tmp_path / "m" / "net.pt"
    model.parent.mkdir()
    torch.save(namespace["build"]().state_dict(), model)
    model.with_suffix(".toml").write_text('factory = "netlib.arch:build"\n[[inputs]]\nshape = [1, 4]\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "lib"), str(ROOT)]))
    command = [sys.executable, "-m", "converter", str(model), "--tflite-dir", str(tmp_path / "out"), "--reports-dir",
               str(tmp_path / "rep"), "--tflite-cache-dir", str(tmp_path / "cache")]
    first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    shipped = (tmp_path / "out" / "net.tflite").read_bytes()
    assert "restored from the cache" in subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                                                       env=env).stdout  # unchanged: restored
    (lib / "arch.py").write_text((lib / "arch.py").read_text().replace("return self.fc(x)", "return self.fc(x) * 3.0"))
    edited = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert edited.returncode == 0, edited.stdout + edited.stderr
    assert "restored from the cache" not in edited.stdout, "the old conversion was restored for an edited factory"
    assert (tmp_path / "out" / "net.tflite").read_bytes() != shipped
