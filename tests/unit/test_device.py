"""What a device sees of a deliverable (signature.py) and what firmware includes (firmware.py): the
model as an aligned C array with its quantization constants and arena, compiled by the machine's
C compiler. No conversion: a few bytes stand in for a .tflite file."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from converter import firmware
from converter.checks import MicroCheck, RuntimeCheck
from converter.results import Deliverable
from converter.signature import Signature, TensorSignature, layout_of

COMPILER = next((shutil.which(c) for c in ("g++", "c++", "cc", "gcc", "clang++") if shutil.which(c)), None)
NO_COMPILER = "no C compiler (g++, c++, cc, gcc, clang++) on this machine, so the C array is not compiled"


def micro_file(arena: int = 14_672, inputs: int = 1) -> Deliverable:
    signature = Signature(
        tuple(TensorSignature(f"image{i}" if inputs > 1 else "image", f"serving_default_image{i}:0", (1, 32, 32, 1),
                              "int8", "NHWC", 0.00817 * (i + 1), -61 + i) for i in range(inputs)),
        (TensorSignature("logits", "PartitionedCall:0", (1, 10), "int8", "", 0.0319, 19),))
    return Deliverable("int8_io", "model_int8_io.tflite", 0, signature=signature,
                       runtime=RuntimeCheck(True, micro=MicroCheck(True, arena_bytes=arena, agrees=True)))


def test_layouts_are_named_from_the_permutation_onnx2tf_chose():
    assert layout_of((0, 2, 3, 1)) == "NHWC" and layout_of((0, 1, 2, 3)) == "NCHW"
    assert layout_of((0, 2, 3, 4, 1)) == "NDHWC" and layout_of((0, 2, 1)) == "NWC"
    assert layout_of((0, 1)) == "" and layout_of((0, 1, 2)) == ""  # a sequence or a vector: its shape says it


def test_a_signature_describes_names_shapes_layouts_dtypes_and_quantization():
    d = micro_file()
    assert d.signature.describe() == ("input image [1, 32, 32, 1] NHWC int8 (scale 0.00817, zero point -61); "
                                      "output logits [1, 10] int8 (scale 0.0319, zero point 19)")
    assert d.device_view() == d.signature.describe() + "; TFLite Micro arena 14,672 bytes"


@pytest.mark.skipif(COMPILER is None, reason=NO_COMPILER)
def test_c_arrays_of_odd_model_names_compile_and_link_into_one_firmware(tmp_path):
    """Each model's array, constants and header guard are its own identifiers, whatever its name."""
    data = bytes(range(256)) * 3 + b"\x00\x01"
    names = {"2net": 1, "a/b.c": 1, "模型": 2, "int": 1, "my-model v2": 1, "two\nlines\\": 1}
    headers = []
    for i, (model_id, inputs) in enumerate(names.items()):
        tflite = tmp_path / f"m{i}" / "model.tflite"
        tflite.parent.mkdir()
        tflite.write_bytes(data)
        source, header = firmware.write_c_array(tflite, model_id, data, micro_file(1000 + i, inputs))
        assert (source, header) == (tflite.with_suffix(".cc"), tflite.with_suffix(".h"))
        assert "alignas(16)" in source.read_text() and firmware.MARKER in header.read_text()
        headers.append((header, firmware.identifier(model_id)))
    assert len({ident for _, ident in headers}) == len(headers)
    checks = "\n".join(f'  ok = ok && {ident}_tflite_len == {len(data)} && std::memcmp({ident}_tflite, expected, '
                       f'{len(data)}) == 0 && reinterpret_cast<std::uintptr_t>({ident}_tflite) % 16 == 0 && '
                       f'{ident}_arena_bytes == {1000 + i};'
                       for i, (_, ident) in enumerate(headers))
    main = tmp_path / "main.cc"
    main.write_text("#include <cstdint>\n#include <cstdio>\n#include <cstring>\n"
                    + "".join(f'#include "{h}"\n' for h, _ in headers)
                    + "static const unsigned char expected[] = {" + ", ".join(str(b) for b in data) + "};\n"
                    "int main() {\n  bool ok = true;\n" + checks + "\n"
                    f"  ok = ok && {headers[0][1]}_input_zero_point == -61 && {headers[2][1]}_input1_zero_point == -60;\n"
                    '  std::printf(ok ? "ok\\n" : "wrong\\n");\n  return ok ? 0 : 1;\n}\n')
    built = subprocess.run([COMPILER, "-std=c++17", "-Wall", "-Werror", str(main),
                            *(str(h.with_suffix(".cc")) for h, _ in headers), "-o", str(tmp_path / "firmware")],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    ran = subprocess.run([str(tmp_path / "firmware")], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout == "ok\n", ran.stdout + ran.stderr


def test_only_the_harness_own_c_files_are_removed_with_their_deliverable(tmp_path):
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"TFL3")
    firmware.write_c_array(tflite, "m", b"TFL3", micro_file())
    firmware.remove_c_array(tflite)
    assert not tflite.with_suffix(".cc").exists() and not tflite.with_suffix(".h").exists()
    tflite.with_suffix(".cc").write_text("// the user's own code\n")
    firmware.remove_c_array(tflite)
    assert tflite.with_suffix(".cc").read_text() == "// the user's own code\n"
