"""The real pipeline on tiny models: every failure kind produced for real, in a child process."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from converter.assertions import assert_conversion
from converter.discovery import discover
from converter.failures import FailureKind
from converter.report import format_result
from converter.results import Result
from converter.runner import convert_case

from .. import builders
from ..support import ROOT, convert, settings_for


def autograph_files() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("__autograph_generated_file*"))


def test_cnn_converts_verifies_and_delivers_offline(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m", shape=(1, 3, 32, 32))
    autograph_before = autograph_files()
    result = convert(tmp_path, model)
    # TensorFlow's generated code goes to the child's own TMPDIR, removed with it
    assert not autograph_files() - autograph_before
    assert result.passed, result.failure
    assert result.export.exporter == "legacy" and result.export.opset == 17
    assert result.savedmodel.input_perms == ((0, 2, 3, 1),)  # NCHW -> NHWC applied by onnx2tf
    assert [d.recipe for d in result.deliverables] == ["drq"] and result.delivered == "drq"  # what was asked for
    assert all(c.range_rel_err < 1e-4 for c in result.savedmodel.outputs)  # onnx2tf's TF model, in float32
    assert all(c.range_rel_err < 5e-2 and c.cosine > 0.99 for c in result.deliverable_of("drq").outputs)
    assert result.verify.deployable
    deliverable = Path(result.deliverable)
    assert deliverable == tmp_path / "out" / "cnn.tflite"
    assert deliverable.read_bytes() == Path(result.deliverable_of("drq").path).read_bytes()
    assert not list(deliverable.parent.glob(".*tmp"))  # nothing half-written left behind
    # a static 3-channel image input is what makes onnx2tf try to download calibration data
    assert result.network_attempts == ()
    artifacts = tmp_path / "reports" / "artifacts" / "cnn"
    kept = {p.name for p in artifacts.iterdir()}
    assert {"model_drq.tflite", "convert.log", "result.json"} <= kept and "model_fp32.tflite" not in kept
    assert not {"model.onnx", "saved_model", "tmp"} & kept  # a verified model needs its intermediates no more
    on_disk = sum(p.stat().st_size for p in artifacts.rglob("*") if p.is_file())
    assert abs(result.artifacts_bytes - on_disk) < 4096  # the footprint reported (result.json was rewritten after)
    assert Result.read(artifacts / "result.json") == result
    assert "tensorflow" not in sys.modules  # the parent stays light
    kept = convert(tmp_path, model, keep_intermediates="1", no_cache="1")
    assert kept.passed and {"model.onnx", "saved_model"} <= {p.name for p in artifacts.iterdir()}


def test_the_conversion_child_refuses_and_records_network_access(tmp_path):
    source = """
    import socket
    import torch
    class Phones(torch.nn.Module):
        def forward(self, x):
            try:  # like a library that swallows its download error
                socket.create_connection(("192.0.2.1", 80), timeout=1)
            except OSError:
                pass
            return x * 2
    def phones():
        return Phones()
    """
    result = convert(tmp_path, builders.factory_model(tmp_path / "m", "phones", source, "phoning:phones", (1, 4)))
    assert result.passed, result.failure
    assert result.network_attempts and all("192.0.2.1" in a for a in result.network_attempts)


def test_interrupting_the_parent_kills_the_child(tmp_path):
    import psutil

    from converter.isolation import run_isolated

    (case,) = discover([builders.torchscript_cnn(tmp_path / "m").parent])
    started = []

    def interrupt(pid):
        started.append(pid)
        raise KeyboardInterrupt  # as Ctrl-C or pytest-timeout would, mid-conversion

    with pytest.raises(KeyboardInterrupt):
        run_isolated(case.spec, tmp_path / "a", threads=1, memory_limit_mb=4000,
                     on_start=interrupt)
    assert started and not psutil.pid_exists(started[0])


def test_training_checkpoint_dicts_are_unwrapped(tmp_path):
    import torch

    model = builders.torchscript_cnn(tmp_path / "m", toml="")  # only for its folder
    source = "import torch\ndef lin():\n    return torch.nn.Linear(4, 2)\n"
    (model.parent / "lins.py").write_text(source)
    torch.save({"epoch": 3, "state_dict": torch.nn.Linear(4, 2).state_dict(), "lr": 0.1},
               model.parent / "ckpt.pt")
    (model.parent / "ckpt.toml").write_text('factory = "lins:lin"\n[[inputs]]\nshape = [1, 4]\n')
    result = convert(tmp_path, model.parent / "ckpt.pt")
    assert result.passed, result.failure
    assert result.load.format == "state_dict"


def test_network_guard_refuses_and_records_connections():
    code = ("import socket, converter.stages.offline as o; o.install()\n"
            "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\n"
            "except OSError as e:\n    print('refused', e)\n"
            "print(o.attempts)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "refused" in out and "blocked by the conversion harness" in out and "192.0.2.1" in out


def test_corrupt_and_empty_files_are_load_errors(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not really a zip" * 10)
    (folder / "empty.pt").write_bytes(b"")
    for name in ("corrupt.pt", "empty.pt"):
        (folder / name).with_suffix(".toml").write_text("[[inputs]]\nshape = [1, 4]\n")
    settings = settings_for(tmp_path)
    results = {c.model_id: convert_case(c, settings) for c in discover([folder])}
    assert results["corrupt"].failure.kind is FailureKind.LOAD_ERROR
    assert "not a PyTorch file" in results["corrupt"].failure.message
    assert results["empty"].failure.kind is FailureKind.LOAD_ERROR
    assert "empty" in results["empty"].failure.message
    assert not (tmp_path / "out").exists()


def test_pickled_module_needs_opt_in(tmp_path):
    refused = convert(tmp_path, builders.pickled_module(tmp_path / "a"))
    assert refused.failure.kind is FailureKind.UNTRUSTED_PICKLE and refused.failure.stage == "load"
    assert "trust_pickle = true" in refused.failure.message
    trusted = convert(tmp_path, builders.pickled_module(tmp_path / "b", trusted=True))
    assert trusted.passed, trusted.failure
    assert trusted.load.format == "pickle"


def test_memory_ceiling_kills_the_child(tmp_path):
    result = convert(tmp_path, builders.torchscript_cnn(tmp_path / "m"), memory_limit_mb="400")
    assert result.failure.kind is FailureKind.OUT_OF_MEMORY
    assert "400 MB ceiling" in result.failure.message
    assert result.peak_rss_mb > 400
    assert not (tmp_path / "out" / "cnn.tflite").exists()


def test_timeout_kills_the_child(tmp_path, monkeypatch):
    model = builders.factory_model(tmp_path / "m", "slow", builders.waiting_model_source(kill_parent=False),
                                   "slowness:waits", (1, 4))
    model.with_suffix(".toml").write_text("timeout = 2\n" + model.with_suffix(".toml").read_text())
    monkeypatch.setenv("HARNESS_TEST_PID_FILE", str(tmp_path / "pid"))
    result = convert(tmp_path, model)
    assert result.failure.kind is FailureKind.TIMEOUT
    assert "2 s timeout (still in load)" in result.failure.message
    assert result.seconds < 30
    import psutil

    assert not psutil.pid_exists(int((tmp_path / "pid").read_text()))


def test_native_crash_is_classified_with_its_signal(tmp_path):
    model = builders.factory_model(tmp_path / "m", "segv", builders.SEGFAULT_SOURCE,
                                   "crashy:segfaults", (1, 4))
    result = convert(tmp_path, model)
    assert result.failure.kind is FailureKind.CRASH
    assert "SIGSEGV" in result.failure.message and result.failure.stage == "load"
    assert json.loads((tmp_path / "reports" / "artifacts" / "segv" / "result.json").read_text())["status"] == "failed"


def test_export_error_names_the_op(tmp_path):
    model = builders.factory_model(tmp_path / "m", "eig", builders.EIGH_SOURCE, "eighs:eigh", (1, 4, 4))
    result = convert(tmp_path, model)
    assert result.failure.kind is FailureKind.EXPORT_ERROR
    assert "linalg_eigh" in result.failure.message and "legacy" in result.failure.message


def test_a_torchscript_file_is_exported_by_legacy_alone_and_its_reason_is_the_message(tmp_path):
    """The dynamo exporter refuses every ScriptModule: trying it would put torch's generic refusal
    beside legacy's real reason, and asking for it is told in one line."""
    import textwrap

    import torch

    namespace: dict = {}
    exec(textwrap.dedent(builders.EIGH_SOURCE), namespace)
    folder = tmp_path / "m"
    folder.mkdir()
    torch.jit.trace(namespace["eigh"](), torch.randn(1, 4, 4)).save(str(folder / "eig.pt"))
    (folder / "eig.toml").write_text("[[inputs]]\nshape = [1, 4, 4]\n")
    result = convert(tmp_path, folder / "eig.pt")
    assert result.failure.kind is FailureKind.EXPORT_ERROR and result.load.format == "torchscript"
    assert result.failure.message.startswith("the legacy exporter failed: ") and "linalg_eigh" in result.failure.message
    assert "dynamo" not in result.failure.message and "ScriptModule" not in result.failure.message
    (folder / "eig.toml").write_text('exporter = "dynamo"\n[[inputs]]\nshape = [1, 4, 4]\n')
    asked = convert(tmp_path, folder / "eig.pt")
    assert asked.failure.kind is FailureKind.EXPORT_ERROR
    assert asked.failure.message.startswith("the dynamo exporter cannot take a TorchScript file")


def test_adaptive_pool_falls_back_to_dynamo_and_legacy_alone_explains_the_fix(tmp_path):
    source = """
    import torch
    class Pool(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.pool = torch.nn.AdaptiveAvgPool2d((7, 7))
            self.head = torch.nn.Linear(8 * 7 * 7, 3)
        def forward(self, x):
            return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))
    def pool():
        return Pool()
    """
    model = builders.factory_model(tmp_path / "m", "pool", source, "pools:pool", (1, 3, 20, 20))
    # the export is the subject: float32, exact, with no quantization between it and PyTorch (the random
    # head's three logits lie so close on some inputs that DRQ's error is 9 % of their range there)
    model.with_suffix(".toml").write_text('deliverables = ["fp32"]\n' + model.with_suffix(".toml").read_text())
    result = convert(tmp_path, model)
    assert result.passed, result.failure
    assert result.export.exporter == "dynamo"
    assert "adaptive_avg_pool2d" in result.export.attempts[0]
    model.with_suffix(".toml").write_text('exporter = "legacy"\n' + model.with_suffix(".toml").read_text())
    legacy = convert(tmp_path, model)
    assert legacy.failure.kind is FailureKind.EXPORT_ERROR
    assert "adaptive_avg_pool2d" in legacy.failure.message and "fixed input size" in legacy.failure.message


def test_tight_tolerance_is_a_numeric_mismatch_with_figures(tmp_path):
    model = builders.torchscript_cnn(
        tmp_path / "m", toml="[tolerance]\ndrq = 1e-9\n[[inputs]]\nshape = [1, 3, 16, 16]\n")
    result = convert(tmp_path, model)
    assert result.failure.kind is FailureKind.NUMERIC_MISMATCH
    assert "DRQ TFLite output 'output_0'" in result.failure.message
    assert "> tolerance 1e-09" in result.failure.message
    assert not (tmp_path / "out" / "cnn.tflite").exists()
    assert (tmp_path / "reports" / "artifacts" / "cnn" / "model_drq.tflite").is_file()  # kept to diagnose
    assert (tmp_path / "reports" / "artifacts" / "cnn" / "saved_model").is_dir()
    assert (tmp_path / "reports" / "artifacts" / "cnn" / "model.onnx").is_file()


def test_a_model_that_stops_passing_loses_its_stale_deliverable(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m")
    assert convert(tmp_path, model).passed
    assert (tmp_path / "out" / "cnn.tflite").is_file()
    model.write_bytes(b"")
    assert convert(tmp_path, model).failure.kind is FailureKind.LOAD_ERROR
    assert not (tmp_path / "out" / "cnn.tflite").exists()


def test_allocation_failure_is_out_of_memory_with_advice(tmp_path):
    source = """
    import torch
    class Greedy(torch.nn.Module):
        def forward(self, x):
            return x + torch.empty(10 ** 13).sum()  # 40 TB: the allocator refuses at once
    def greedy():
        return Greedy()
    """
    result = convert(tmp_path, builders.factory_model(tmp_path / "m", "greedy", source, "greedies:greedy", (1, 4)))
    assert result.failure.kind is FailureKind.OUT_OF_MEMORY and result.failure.stage == "load"
    assert "more memory" in result.failure.message and "smaller input shape" in result.failure.message


def test_gelu_without_pseudo_op_needs_flex(tmp_path):
    source = """
    import torch
    class Gelu(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)
        def forward(self, x):
            return torch.nn.functional.gelu(self.fc(x))
    def gelu():
        return Gelu()
    """
    model = builders.factory_model(tmp_path / "m", "gelu", source, "gelus:gelu", (1, 8))
    model.with_suffix(".toml").write_text("auto_fixes = false\n" + model.with_suffix(".toml").read_text())
    result = convert(tmp_path, model)  # what the fix in test_fixes.py replaces
    assert result.failure.kind is FailureKind.FLEX_OPS and "Erf" in result.failure.message


def test_flex_ops_when_allowed_are_reported_and_bool_inputs_are_fed(tmp_path):
    source = """
    import torch
    class MaskedGelu(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)
        def forward(self, x, mask):
            return torch.nn.functional.gelu(self.fc(x * mask.to(x.dtype)))
    def masked_gelu():
        return MaskedGelu()
    """
    model = builders.factory_model(tmp_path / "m", "flexy", source, "flexies:masked_gelu", (1, 8))
    model.with_suffix(".toml").write_text('factory = "flexies:masked_gelu"\nallow_flex = true\n'
                                          '[[inputs]]\nname = "x"\nshape = [1, 8]\n'
                                          '[[inputs]]\nname = "mask"\nshape = [1, 8]\ndtype = "bool"\n')
    result = convert(tmp_path, model)
    assert result.passed, result.failure
    assert result.tflite.flex_ops == ("FlexErf",)
    assert all(d.verified for d in result.deliverables)  # its numbers were checked, Flex or not
    assert not result.verify.deployable and "Flex" in result.verify.deploy_message
    assert_conversion(result)  # allowed Flex is reported, not failed
    assert "Flex ops FlexErf" in format_result(result)


def test_cli_exit_codes(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m", toml="")
    base = [sys.executable, "-m", "converter", str(model), "--tflite-dir", str(tmp_path / "out"),
            "--reports-dir", str(tmp_path / "reports")]
    ok = subprocess.run(base + ["--input-shape", "1,3,16,16"], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "cnn: PASS" in ok.stdout and "DRQ TFLite output" in ok.stdout
    no_shape = subprocess.run(base, capture_output=True, text=True, cwd=ROOT)
    assert no_shape.returncode == 1 and "[spec_error]" in no_shape.stdout
    bad = subprocess.run(base + ["--input-shape", "1,abc"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "input-shape" in bad.stderr


def test_a_torchscript_error_names_its_cause_not_the_interpreter(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m", name="net", toml="[[inputs]]\nshape = [1, 3, 32]\n")
    result = convert(tmp_path, model)
    message = result.failure.message
    assert result.failure.stage == "load" and "failed in the TorchScript interpreter" not in message
    assert "input" in message and "[1, 3, 32]" in message, message


def test_convert_log_holds_no_terminal_colour_codes(tmp_path):
    """onnx2tf colours its warnings; the log is read in editors and CI pages, not terminals."""
    source = """
    import sys
    import torch
    class Loud(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)
        def forward(self, x):
            print("\\x1b[33mWARNING:\\x1b[0m loud model", file=sys.stderr)
            return self.fc(x)
    def loud():
        return Loud()
    """
    model = builders.factory_model(tmp_path / "m", "loud", source, "louds:loud", (1, 4))
    result = convert(tmp_path, model)
    assert result.passed, result.failure
    log = (tmp_path / "reports" / "artifacts" / "loud" / "convert.log").read_text()
    assert "WARNING: loud model" in log and "\x1b" not in log


def test_a_pt2_given_another_shape_than_it_was_exported_with_is_a_spec_error_in_words(tmp_path):
    model = builders.plain_pt2(tmp_path / "m")  # exported with a [1, 4] input
    model.with_suffix(".toml").write_text("[[inputs]]\nshape = [1, 8]\n")
    result = convert(tmp_path, model)
    assert result.failure.kind is FailureKind.SPEC_ERROR and result.failure.stage.value == "load"
    assert "the .toml's shape [1, 8] is not the shape the .pt2 was exported with [1, 4]" in result.failure.message
    assert "Guard failed" not in result.failure.message
    model.with_suffix(".toml").write_text("[[inputs]]\nshape = [1, 4]\n")
    assert convert(tmp_path, model).passed
