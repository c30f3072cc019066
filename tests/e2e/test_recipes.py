"""The deliverables beyond DRQ, each built, verified and run where it goes, for real: float16,
full-integer int8 with float and with int8 inputs and outputs (TensorFlow Lite Micro), calibration
samples (generated, or a folder of them, held out for verification), chains of recipes, outputs
judged per channel, bad samples as one-line spec errors, and the seeded inputs every file is verified
on without a calibration folder."""
from __future__ import annotations

import hashlib
import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from converter import cache
from converter.columns import junit_properties
from converter.discovery import discover
from converter.failures import FailureKind
from converter.html_report import render
from converter.recipes import RECIPES
from converter.report import format_result, summary_markdown
from converter.results import Result

from .. import builders
from ..support import ROOT, convert


def cnn_with(tmp_path, toml_extra: str, shape=(1, 3, 16, 16)) -> Path:
    model = builders.torchscript_cnn(tmp_path / "m", shape=shape)
    model.with_suffix(".toml").write_text(toml_extra + f'\n[[inputs]]\nname = "image"\nshape = {list(shape)}\n')
    return model


def test_every_recipe_is_built_verified_and_run_where_it_goes(tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    model = cnn_with(tmp_path, f"deliverables = {list(RECIPES)!r}".replace("'", '"'))
    result = convert(tmp_path, model)
    assert result.passed, result.failure
    built = {d.recipe: d for d in result.deliverables}
    assert list(built) == list(RECIPES) and result.delivered == "fp32"  # the first that verifies
    for recipe, d in built.items():  # each file on the default 8 seeded inputs, stacked along the batch axis
        assert d.passed and d.outputs[0].samples == 8 and d.outputs[0].reference_shape == (8, 5), recipe
        assert "elements off over 8 inputs" in d.outputs[0].describe(d.label)
        runtime = d.runtime
        assert runtime.runs and runtime.kernels_agree, (recipe, runtime)
        assert runtime.ops and runtime.invoke_ms > 0 and not runtime.flex_ops
        assert "CONV_2D" in dict(runtime.ops)
    # int8_io takes and gives int8 (quantized and dequantized around it), and runs on Micro
    details = Interpreter(model_path=built["int8_io"].path).get_signature_runner("serving_default")
    assert {v["dtype"] for v in details.get_input_details().values()} == {np.int8}
    assert {v["dtype"] for v in details.get_output_details().values()} == {np.int8}
    micro = built["int8_io"].runtime.micro
    assert micro.runs and micro.agrees and micro.arena_bytes > 0
    assert all(built[r].runtime.micro is None for r in RECIPES if r != "int8_io")
    # the float16 file holds float16 weights; the int8 ones int8 tensors
    assert built["fp16"].runtime.quantized_tensors > 0 and built["int8"].runtime.quantized_tensors > 0
    assert "float16" in str({t["dtype"] for t in Interpreter(model_path=built["fp16"].path).get_tensor_details()})
    # random calibration: said so wherever the model's caveats are read
    assert result.tflite.random_calibration and "random samples" in result.tflite.calibration
    assert any("random calibration does not represent real data" in c.describe() for c in result.caveats)
    # each file as the device sees it, read from the file by the runtime: int8_io takes int8 in onnx2tf's
    # NHWC (PyTorch's input is [1, 3, 16, 16]) with its own scale and zero point; the others take float32
    (image,), (output,) = built["int8_io"].signature.inputs, built["int8_io"].signature.outputs
    in_details = Interpreter(model_path=built["int8_io"].path).get_input_details()[0]
    assert (image.name, image.shape, image.layout, image.dtype) == ("image", (1, 16, 16, 3), "NHWC", "int8")
    assert (image.scale, image.zero_point) == (pytest.approx(in_details["quantization"][0]), in_details["quantization"][1])
    assert (output.name, output.shape, output.dtype) == ("output_0", (1, 5), "int8")
    assert output.scale > 0 and -128 <= output.zero_point <= 127
    for recipe in ("fp32", "fp16", "drq", "int8"):
        (t,) = built[recipe].signature.inputs
        assert (t.shape, t.layout, t.dtype, t.scale, t.zero_point) == ((1, 16, 16, 3), "NHWC", "float32", None, None)
    # ... and every report says so: result.json, the CLI screen, JUnit, the summaries and the page
    said = (f"image [1, 16, 16, 3] NHWC int8 (scale {image.scale:.6g}, zero point {image.zero_point})",
            f"TFLite Micro arena {micro.arena_bytes:,} bytes")
    stored = Result.read(Path(built["int8_io"].path).parent / "result.json")
    assert stored.deliverable_of("int8_io").signature == built["int8_io"].signature
    screen = format_result(result)
    assert f"int8-IO TFLite as the device sees it: input {said[0]}; output output_0 [1, 5] int8" in screen
    assert said[1] in screen and "float16 TFLite as the device sees it: input image [1, 16, 16, 3] NHWC float32" in screen
    properties = dict(junit_properties(result))
    assert properties["int8_io_inputs"] == said[0] and properties["int8_io_micro_arena_bytes"] == micro.arena_bytes
    assert properties["fp32_inputs"] == "image [1, 16, 16, 3] NHWC float32"
    assert properties["int8_io_outputs"].startswith("output_0 [1, 5] int8 (scale ")
    for page in (summary_markdown({"cnn": result}, {}), html.unescape(render({"cnn": result}, {}))):
        assert said[0] in page and said[1] in page
    again = convert(tmp_path, model)  # restored from the cache: the same signature, proven on its files
    assert again.cache_hit and [d.signature for d in again.deliverables] == [d.signature for d in result.deliverables]
    assert said[0] in format_result(again)
    # an entry whose record reports another signature than its file declares is not restored
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if (p / "manifest.json").is_file()]
    record = json.loads((entry / "result.json").read_text())
    int8_io = next(d for d in record["deliverables"] if d["recipe"] == "int8_io")
    int8_io["signature"]["inputs"][0]["zero_point"] += 1
    (entry / "result.json").write_text(json.dumps(record))
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["files"]["result.json"] = hashlib.sha256((entry / "result.json").read_bytes()).hexdigest()
    (entry / "manifest.json").write_text(json.dumps(manifest))
    (case,) = discover([model.parent])
    assert cache.restore(entry.parent, entry.name, tmp_path / "restored", case.spec,
                         model_digest=cache.file_digest(model)) is None
    assert "int8-IO TFLite file declares input image [1, 16, 16, 3] NHWC int8" in capsys.readouterr().out


def write_samples(folder: Path, count: int, shape, seed: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        np.save(folder / f"s{i:02d}.npy", rng.standard_normal(shape).astype(np.float32))


def test_a_calibration_folder_calibrates_and_its_held_out_samples_verify_then_the_cache_proves_them(tmp_path):
    model = cnn_with(tmp_path, 'deliverables = ["int8"]\ncalibration = "samples"')
    write_samples(tmp_path / "m" / "samples", 10, (1, 3, 16, 16))
    result = convert(tmp_path, model)
    assert result.passed, result.failure
    (int8,) = result.deliverables
    assert int8.outputs[0].samples == 2  # the last fifth of 10, never seen by the calibration
    assert int8.outputs[0].reference_shape == (2, 5)  # stacked along the batch axis
    assert "8 samples from" in result.tflite.calibration and "2 held out" in result.tflite.calibration
    assert not result.tflite.random_calibration and not result.caveats
    again = convert(tmp_path, model)  # restored: its file run on the same held-out samples, same figures
    assert again.cache_hit and again.passed
    assert again.deliverables[0].outputs[0].range_rel_err == pytest.approx(int8.outputs[0].range_rel_err, rel=1e-3)
    # other samples are another conversion
    np.save(tmp_path / "m" / "samples" / "s00.npy", np.zeros((1, 3, 16, 16), np.float32))
    assert not convert(tmp_path, model).cache_hit


@pytest.mark.parametrize("sample, says", [
    (np.zeros((1, 3, 8, 8), np.float32), "s01.npy: input 'image': shape [1, 3, 8, 8] is not the input's [1, 3, 16, 16]"),
    (np.full((1, 3, 16, 16), np.nan, np.float32), "s01.npy: input 'image': holds NaN or infinite values"),
    (np.zeros((1, 3, 16, 16), np.complex64), "s01.npy: input 'image': dtype complex64 does not cast to the input's float32"),
    (b"not numpy", "s01.npy: is not a readable sample"),
])
def test_a_bad_calibration_sample_is_a_spec_error_naming_file_and_input(tmp_path, sample, says):
    model = cnn_with(tmp_path, 'deliverables = ["int8"]\ncalibration = "samples"')
    write_samples(tmp_path / "m" / "samples", 3, (1, 3, 16, 16))
    if isinstance(sample, bytes):
        (tmp_path / "m" / "samples" / "s01.npy").write_bytes(sample)
    else:
        np.save(tmp_path / "m" / "samples" / "s01.npy", sample)
    result = convert(tmp_path, model)
    assert result.failure.kind is FailureKind.SPEC_ERROR and result.failure.stage == "load"
    assert says in result.failure.message and "\n" not in result.failure.message


def test_too_few_samples_or_no_such_folder_is_told_before_converting(tmp_path):
    model = cnn_with(tmp_path, 'deliverables = ["int8"]\ncalibration = "samples"')
    write_samples(tmp_path / "m" / "samples", 1, (1, 3, 16, 16))
    result = convert(tmp_path, model)
    assert result.failure.kind is FailureKind.SPEC_ERROR and "at least 2" in result.failure.message
    model.with_suffix(".toml").write_text('calibration = "nowhere"\n[[inputs]]\nshape = [1, 3, 16, 16]\n')
    result = convert(tmp_path, model)
    assert result.failure.kind is FailureKind.SPEC_ERROR
    assert "cnn.toml key 'calibration'" in result.failure.message and "is not a folder" in result.failure.message


def test_a_chain_delivers_the_first_recipe_that_verifies_and_records_why(tmp_path):
    model = builders.torchscript_mlp(tmp_path / "m", hidden=256, outlier=40.0)
    # no repair (tests/e2e/test_repair.py): keeping a layer of this MLP in float32 would mend its DRQ file
    model.with_suffix(".toml").write_text('deliverables = ["drq", "fp16"]\nrepair = false\n[[inputs]]\nshape = [1, 32]\n')
    result = convert(tmp_path, model)
    assert result.passed and result.delivered == "fp16"
    assert not result.deliverable_of("drq").passed and result.deliverable_of("fp16").passed
    (fix,) = [f for f in result.fixes if f.name == "deliverable"]
    assert fix.detail == "fp16" and "DRQ TFLite output" in fix.reason
    assert Path(result.deliverable).read_bytes() == Path(result.deliverable_of("fp16").path).read_bytes()
    # DRQ alone: the model fails, and the message says it is the quantization
    model.with_suffix(".toml").write_text('deliverables = ["drq"]\nrepair = false\n[[inputs]]\nshape = [1, 32]\n')
    alone = convert(tmp_path, model)
    assert alone.failure.kind is FailureKind.NUMERIC_MISMATCH
    assert "the error is DRQ's quantization, not the conversion" in alone.failure.message
    assert alone.deliverable_of("drq").layers  # its per-layer report, repaired or not


class BoxesAndScores(nn.Module):
    """A detector's head in miniature: 4 box coordinates spanning hundreds of pixels and 6 class
    scores spanning a fraction of one, in one tensor [1, 10, 64]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 10, 1)

    def forward(self, x):
        y = self.conv(x)
        return torch.cat([y[:, :4] * 300.0 + 300.0, torch.sigmoid(y[:, 4:]) * 0.003], dim=1)


def test_an_output_judged_per_channel_shows_the_small_channels_error(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "m"
    folder.mkdir()
    torch.jit.trace(BoxesAndScores().eval(), torch.randn(1, 8, 64)).save(str(folder / "head.pt"))
    sidecar = 'deliverables = ["int8"]\noutput_names = ["boxes_scores"]\n[[inputs]]\nshape = [1, 8, 64]\n'
    (folder / "head.toml").write_text(sidecar)
    whole = convert(tmp_path, folder / "head.pt")
    # one range over the tensor hides the scores' error; undeclared, the default check also judges each
    # channel along axis 1 against its own range, and says which and what to declare
    assert whole.failure.kind is FailureKind.NUMERIC_MISMATCH
    (comparison,) = whole.deliverables[0].outputs
    assert comparison.range_rel_err <= comparison.tolerance and comparison.channel_worst >= 4  # a score channel
    assert "along axis 1 is off by" in whole.failure.message and 'task = "regression"' in whole.failure.message
    (folder / "head.toml").write_text(sidecar + "[channel_axis]\nboxes_scores = 1\n")
    per_channel = convert(tmp_path, folder / "head.pt")
    assert per_channel.failure.kind is FailureKind.NUMERIC_MISMATCH
    (comparison,) = per_channel.deliverables[0].outputs
    assert comparison.channel_axis == 1 and comparison.worst_channel >= 4  # a score channel
    assert "along axis 1, judged against its own range" in per_channel.failure.message


def test_micro_names_the_ops_it_lacks(tmp_path):
    """A file with an op TFLite has and Micro lacks (RFFT2D), built with TensorFlow, run by micro.py."""
    build = """
import sys, tensorflow as tf
class R(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32)])
    def f(self, x):
        return tf.abs(tf.signal.rfft(x))
m = R()
c = tf.lite.TFLiteConverter.from_concrete_functions([m.f.get_concrete_function()], m)
open(sys.argv[1], "wb").write(c.convert())
"""
    subprocess.run([sys.executable, "-c", build, str(tmp_path / "rfft.tflite")], check=True, capture_output=True)
    np.savez(tmp_path / "in.npz", np.ones((1, 64), np.float32))
    proc = subprocess.run([sys.executable, "-m", "converter.stages.micro", str(tmp_path / "rfft.tflite"),
                           str(tmp_path / "in.npz"), str(tmp_path / "out.npz"), "1"], capture_output=True, text=True,
                          cwd=ROOT)
    assert '"runs": false' in proc.stdout and "RFFT2D" in proc.stdout, proc.stdout + proc.stderr


def test_deliverables_from_the_cli_and_bad_names_are_usage_or_spec_errors(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m")
    cli = subprocess.run([sys.executable, "-m", "converter", str(model), "--deliverables", "fp16,drq",
                          "--verify-samples", "3", "--tflite-dir", str(tmp_path / "o"), "--reports-dir",
                          str(tmp_path / "r"), "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "float16 TFLite where it goes: runs without TensorFlow" in cli.stdout
    # the screen shows PyTorch's input and, per file, what the device takes: onnx2tf's channels-last
    assert "PyTorch's inputs input [1, 3, 16, 16]" in cli.stdout
    assert ("float16 TFLite as the device sees it: input input [1, 16, 16, 3] NHWC float32; "
            "output output_0 [1, 5] float32") in cli.stdout
    # every figure says over how many inputs: the TFLite files' over the 3 asked for, ONNX's over the seeded one
    assert "ok  float16 TFLite output 'output_0': range-relative max error" in cli.stdout
    assert cli.stdout.count("elements off over 3 inputs") == 2 and "ONNX output 'output_0'" in cli.stdout
    assert "elements off over 1 input;" in cli.stdout
    assert "deliverable (fp16)" in cli.stdout
    bad = subprocess.run([sys.executable, "-m", "converter", str(model), "--deliverables", "int4"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "unknown recipe(s) 'int4'" in bad.stderr
    model.with_suffix(".toml").write_text('deliverables = ["drq", "drq"]\n[[inputs]]\nshape = [1, 3, 16, 16]\n')
    result = convert(tmp_path, model)
    assert result.failure.kind is FailureKind.SPEC_ERROR and "names a recipe twice" in result.failure.message


def test_a_padded_max_pool_gets_edge_padding_for_the_integer_recipes_only(tmp_path):
    """onnx2tf pads a MaxPool with float32's minimum, which full-integer quantization takes as the
    tensor's range (a PADV2 scale of 1e36: torchvision's ResNet-18 int8 file aborts the TFLite
    kernels). Edge padding is exact for a maximum; the float recipes keep onnx2tf's padding."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.Conv2d(8, 8, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    folder = tmp_path / "m"
    folder.mkdir()
    torch.jit.trace(net, torch.randn(1, 3, 16, 16)).save(str(folder / "pool.pt"))
    (folder / "pool.toml").write_text('deliverables = ["int8_io"]\n[[inputs]]\nshape = [1, 3, 16, 16]\n')
    result = convert(tmp_path, folder / "pool.pt")
    assert result.passed, result.failure
    assert "graph_rewrite:max_pool_padding" in [f.label for f in result.fixes]
    assert dict(result.deliverables[0].runtime.ops).get("MIRROR_PAD") and result.deliverables[0].runtime.micro.runs
    # what a TensorFlow Lite Micro user includes in firmware, beside the deliverable, compiled here
    no_compiler = compile_the_c_array(tmp_path, Path(result.deliverable), result.deliverables[0])
    (folder / "pool.toml").write_text('deliverables = ["drq"]\n[[inputs]]\nshape = [1, 3, 16, 16]\n')
    float_recipe = convert(tmp_path, folder / "pool.pt")
    assert float_recipe.passed and "graph_rewrite:max_pool_padding" not in [f.label for f in float_recipe.fixes]
    # a DRQ deliverable has no C array: the int8_io one's would no longer be the file beside it
    assert not Path(result.deliverable).with_suffix(".cc").exists()
    assert not Path(result.deliverable).with_suffix(".h").exists()
    if no_compiler:
        pytest.skip(no_compiler)


COMPILERS = ("g++", "c++", "cc", "gcc", "clang++")
FIRMWARE_MAIN = """#include <cstdint>
#include <cstdio>
#include <cstring>
#include "pool.h"
static unsigned char file[1 << 22];
int main(int argc, char** argv) {
  std::FILE* f = std::fopen(argv[1], "rb");
  std::size_t n = std::fread(file, 1, sizeof file, f);
  std::printf("%u %zu %d %d %.9g %d %.9g %d %u\\n", pool_tflite_len, n, std::memcmp(file, pool_tflite, n) == 0,
              static_cast<int>(reinterpret_cast<std::uintptr_t>(pool_tflite) % 16), pool_input_scale,
              pool_input_zero_point, pool_output_scale, pool_output_zero_point, pool_arena_bytes);
  return 0;
}
"""


def compile_the_c_array(tmp_path, tflite: Path, delivered) -> str | None:
    """The .cc/.h pair beside an int8_io deliverable, compiled with a main that checks it against the
    .tflite file and its record; the reason it could not be compiled, when no compiler exists."""
    source, header = tflite.with_suffix(".cc"), tflite.with_suffix(".h")
    assert source.is_file() and header.is_file(), sorted(p.name for p in tflite.parent.iterdir())
    assert "alignas(16)" in source.read_text()
    compiler = next((shutil.which(c) for c in COMPILERS if shutil.which(c)), None)
    if compiler is None:
        return f"no C compiler ({', '.join(COMPILERS)}) on this machine: the C array beside the deliverable was not compiled"
    (tmp_path / "main.cc").write_text(FIRMWARE_MAIN)
    built = subprocess.run([compiler, "-std=c++17", "-Wall", "-Werror", "-I", str(tflite.parent), str(tmp_path / "main.cc"),
                            str(source), "-o", str(tmp_path / "firmware")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    ran = subprocess.run([str(tmp_path / "firmware"), str(tflite)], capture_output=True, text=True, check=True)
    length, size, same, misaligned, in_scale, in_zero, out_scale, out_zero, arena = ran.stdout.split()
    assert int(length) == int(size) == tflite.stat().st_size and same == "1" and misaligned == "0"
    (image,), (output,) = delivered.signature.inputs, delivered.signature.outputs
    assert float(in_scale) == pytest.approx(image.scale, rel=1e-6) and int(in_zero) == image.zero_point
    assert float(out_scale) == pytest.approx(output.scale, rel=1e-6) and int(out_zero) == output.zero_point
    assert int(arena) == delivered.runtime.micro.arena_bytes > 0
    return None


def test_a_file_micro_refuses_falls_back_saying_why(tmp_path):
    """Token ids into an embedding: the int8_io file runs on the TFLite runtime, but Micro's GATHER
    takes no int64 positions. The chain delivers int8, and the recorded reason is Micro's, not a
    tolerance the file met. Its logits are a classification (random weights, random calibration: on
    8 inputs one logit is off by 0.16 of its input's range while every answer is PyTorch's)."""
    import shutil

    examples = ROOT / "model_cases" / "examples"
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(examples / "token_classifier.pt", folder)
    (folder / "token_classifier.toml").write_text('deliverables = ["int8_io", "int8"]\ntask = "classification"\n'
                                                  + (examples / "token_classifier.toml").read_text())
    result = convert(tmp_path, folder / "token_classifier.pt")
    assert result.passed and result.delivered == "int8"
    micro = result.deliverable_of("int8_io").runtime.micro
    assert not micro.runs and "GATHER" in micro.message and "INT64" in micro.message
    assert result.deliverable_of("int8").outputs[0].task.flipped == 0
    (fix,) = [f for f in result.fixes if f.name == "deliverable"]
    assert "does not run on TensorFlow Lite Micro" in fix.reason and "tolerance" not in fix.reason


class PReLUNet(nn.Module):
    """An MTCNN R-Net-like classifier (convolutions, PReLU, ceil-mode pooling, two heads): XNNPACK
    cannot prepare its full-integer file ('failed to create XNNPACK runtime ... failed to prepare')."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 28, 3), nn.PReLU(28), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  nn.Conv2d(28, 48, 3), nn.PReLU(48), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  nn.Conv2d(48, 64, 2), nn.PReLU(64))
        self.fc = nn.Linear(64 * 3 * 3, 128)
        self.prelu = nn.PReLU(128)
        self.cls = nn.Linear(128, 2)
        self.box = nn.Linear(128, 4)

    def forward(self, x):
        h = self.prelu(self.fc(self.body(x).flatten(1)))
        return torch.softmax(self.cls(h), 1), self.box(h)


def test_a_recipe_the_runtime_cannot_run_is_recorded_and_the_chain_goes_on(tmp_path):
    """Each recipe is judged on its own: the int8 file XNNPACK refuses fails that recipe, with its
    words, not the model; the next recipe of the chain is verified and delivered."""
    torch.manual_seed(0)
    model = tmp_path / "m" / "rnet.pt"
    model.parent.mkdir()
    torch.jit.trace(PReLUNet().eval(), torch.randn(1, 3, 24, 24)).save(str(model))
    spec = '[[inputs]]\nshape = [1, 3, 24, 24]\nrange = [-1.0, 1.0]\n'
    model.with_suffix(".toml").write_text('deliverables = ["int8", "drq"]\ncalibration_samples = 8\n' + spec)
    result = convert(tmp_path, model)
    assert result.passed and result.delivered == "drq", result.failure
    int8 = result.deliverable_of("int8")
    assert not int8.verified and not int8.runtime.runs and "XNNPACK" in int8.runtime.message
    (fix,) = [f for f in result.fixes if f.name == "deliverable"]
    assert fix.detail == "drq" and "int8 TFLite does not run" in fix.reason and "failed to prepare" in fix.reason
    assert result.deliverable_of("drq").passed
    model.with_suffix(".toml").write_text('deliverables = ["int8"]\ncalibration_samples = 8\n' + spec)
    alone = convert(tmp_path, model)  # the only recipe asked for: the model fails, in one line saying why
    assert alone.failure.kind is FailureKind.TFLITE_ERROR and "XNNPACK" in alone.failure.message


def test_a_trained_classifier_declared_as_such_is_judged_by_its_answers(tmp_path):
    """The bundled int8_classifier (trained in code, real samples of its data): with `task =
    "classification"` its int8-IO file is judged by its top-1 answers on the held-out samples, its
    tensor figures beside, its reference kernels too; the answers reach JUnit."""
    import shutil

    examples = ROOT / "model_cases" / "examples"
    folder = tmp_path / "m"
    shutil.copytree(examples / "int8_classifier_samples", folder / "int8_classifier_samples")
    shutil.copy(examples / "int8_classifier.pt", folder)
    sidecar = (examples / "int8_classifier.toml").read_text()
    (folder / "int8_classifier.toml").write_text('task = "classification"\n' + sidecar)
    result = convert(tmp_path, folder / "int8_classifier.pt")
    assert result.passed, result.failure
    (logits,) = result.deliverables[0].outputs
    assert logits.samples == 4 and logits.task.task == "classification" and logits.task.detail == "top-1 class"
    assert (logits.task.units, logits.task.agree, logits.task.flipped) == (4, 4, 0) and logits.passed
    assert logits.range_rel_err > 0 and logits.cosine > 0.9  # the tensor figures, reported beside
    said = logits.describe(result.deliverables[0].label)
    assert "judged by its task, classification: 4/4 rows agree (top-1 class)" in said and "over 4 inputs" in said
    assert result.deliverables[0].runtime.kernels_agree  # the reference kernels judged by the task too
    from converter.columns import junit_properties

    properties = dict(junit_properties(result))
    assert properties["task_agreement"] == "logits: classification 4/4" and properties["int8_io_verify_inputs"] == 4
