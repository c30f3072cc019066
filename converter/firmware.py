"""What TensorFlow Lite Micro users include in firmware: an `int8_io` deliverable as a C array.

Beside `<id>.tflite` go `<id>.cc` and `<id>.h`: the file's bytes as `xxd -i` would write them, but
const and aligned to 16 bytes (TFLite Micro reads the flatbuffer in place, and its tensors' data
must be aligned), with their length, each input's and output's scale and zero point (the firmware
quantizes its inputs and dequantizes its outputs itself) and the tensor arena TFLite Micro
allocated for it, as constants. Written by the parent from the verified file and its record (so a
cache hit writes the same), removed with the deliverable; files there that do not carry MARKER are
the user's and are left alone.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from . import __version__
from .protocol import write_text_atomic
from .recipes import RECIPES

MARKER = "Written by tflite-harness"
BYTES_PER_LINE = 12  # as xxd -i
SUFFIXES = (".h", ".cc")


def identifier(model_id: str) -> str:
    """The C name every constant of a model starts with: its id where that is one, else the id with
    every other character made '_' plus a digest of the id, so that two models never share one
    (and never one that starts with a digit or holds '__', which C++ reserves)."""
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*", model_id):
        return model_id
    plain = re.sub(r"[^A-Za-z0-9]+", "_", model_id).strip("_")
    digest = hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:8]
    return f"model_{plain}_{digest}" if plain else f"model_{digest}"


def c_array(model_id: str, header_name: str, data: bytes, deliverable) -> tuple[str, str]:
    """(the .cc file, the .h file) of one deliverable (a results.Deliverable with its signature)."""
    name = identifier(model_id)
    shown = " ".join(model_id.splitlines())  # a line break in a // comment would end it
    signature = deliverable.signature
    arena = deliverable.arena_bytes
    about = [f"// {shown}: its {deliverable.label} file as a C array, for TensorFlow Lite Micro.",
             f"// {MARKER} {__version__} from the file it verified against PyTorch",
             f"// ({len(data)} bytes, SHA-256 {hashlib.sha256(data).hexdigest()});",
             "// written again with that file: do not edit."]
    constants, described = [], []
    for word, tensors in (("input", signature.inputs if signature else ()),
                          ("output", signature.outputs if signature else ())):
        for i, tensor in enumerate(tensors):
            described.append(f"// {word} {i}: {tensor.describe()}")
            if tensor.scale is None:
                continue
            stem = f"{name}_{word}{i if len(tensors) > 1 else ''}"
            constants += [f"constexpr float {stem}_scale = {tensor.scale:.9g}f;  // real = scale * (q - zero_point)",
                          f"constexpr int {stem}_zero_point = {tensor.zero_point};"]
    if arena is not None:
        constants += ["// the tensor arena TFLite Micro's interpreter allocated for it, measured on the machine that",
                      "// converted it: a 32-bit device's may differ by a few hundred bytes, so reserve a margin",
                      f"constexpr unsigned int {name}_arena_bytes = {arena};"]
    guard = f"TFLITE_HARNESS_{name.upper()}_H_"
    header = "\n".join([*about, "//", *described, "", f"#ifndef {guard}", f"#define {guard}", "",
                        f"extern const unsigned char {name}_tflite[];", f"extern const unsigned int {name}_tflite_len;",
                        "", *constants, "", f"#endif  // {guard}", ""])
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + BYTES_PER_LINE]) for i in range(0, len(data), BYTES_PER_LINE)]
    source = "\n".join([*about, f'#include "{header_name}"', "",
                        f"alignas(16) const unsigned char {name}_tflite[] = {{",
                        ",\n".join(f"  {row}" for row in rows), "};",
                        f"const unsigned int {name}_tflite_len = {len(data)};", ""])
    return source, header


def write_c_array(tflite: Path, model_id: str, data: bytes, deliverable) -> tuple[Path, Path]:
    """The .cc and .h beside `tflite` (a pair or nothing: a half-written pair is removed)."""
    tflite = Path(tflite)
    source_path, header_path = tflite.with_suffix(".cc"), tflite.with_suffix(".h")
    source, header = c_array(model_id, header_path.name, data, deliverable)
    remove_c_array(tflite)
    try:
        write_text_atomic(header_path, header)
        write_text_atomic(source_path, source)
    except BaseException:
        remove_c_array(tflite)
        raise
    return source_path, header_path


def remove_c_array(tflite: Path) -> None:
    """The pair beside `tflite`, if this harness wrote it (a file without MARKER is the user's)."""
    for suffix in SUFFIXES:
        path = Path(tflite).with_suffix(suffix)
        try:
            if path.is_file() and not path.is_symlink():
                with open(path, encoding="utf-8", errors="replace") as fh:
                    head = fh.read(4096)
                if MARKER in head:
                    path.unlink()
        except OSError:
            continue


def deliver(tflite: Path, model_id: str, data: bytes, deliverable) -> tuple[Path, Path] | None:
    """The C array of an integer-io deliverable (what Micro runs), or no stale one of an earlier run."""
    if deliverable.recipe in RECIPES and RECIPES[deliverable.recipe].integer_io:
        return write_c_array(tflite, model_id, data, deliverable)
    remove_c_array(tflite)
    return None
