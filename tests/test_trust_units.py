"""Trust, without a conversion: bounds on every number, injective ids, locked and checked
output folders, broken baselines, safe sniffing of model files, the .pt2 inspection."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter.baseline import gate
from converter.failures import ConversionError, FailureKind
from converter.output_folders import OutputsError, RunLock, prepare
from converter.protocol import write_text_atomic
from converter.settings import SettingsError, file_name, resolve
from converter.thresholds import Thresholds

from . import builders

ROOT = Path(__file__).resolve().parent.parent


def write(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- one set of bounds for every number ---------------------------------------------------

@pytest.mark.parametrize("setting, value, words", [
    ("conversion_timeout", "1e308", "between 1 and 604800"),
    ("memory_limit_mb", "1", "between 64 and"),
    ("conversion_threads", "0", "between 1 and 1024"),
    ("conversion_threads", "2.5", "an integer"),
])
def test_options_environment_and_ini_share_the_sidecar_bounds(tmp_path, setting, value, words):
    env_var = "TFLITE_HARNESS_" + setting.upper()
    for cli, env, where in (({setting: value}, {}, "command line"), ({}, {env_var: value}, f"${env_var}")):
        with pytest.raises(SettingsError) as info:
            resolve(cli, env, {}, base=tmp_path)
        assert f"{setting} from {where}" in str(info.value) and words in str(info.value)


# --- ids map to files injectively, never to an output folder itself ------------------------

def test_ids_that_looked_alike_get_their_own_folders_and_files(tmp_path):
    s = resolve({}, {}, {}, base=tmp_path)
    ids = [".", "..", "a/b", "a__b", "a%2Fb", "a", "%2E", ".hidden"]
    folders = [s.artifacts_for(i) for i in ids]
    files = [s.deliverable_for(i) for i in ids]
    assert len(set(folders)) == len(ids) and len(set(files)) == len(ids)
    for folder in folders:
        assert folder.parent == s.artifacts_dir and not folder.name.startswith(".")
    for path in files:
        assert s.tflite_dir in path.parents and not path.name.startswith(".")
    assert s.deliverable_for("a/b") == s.tflite_dir / "a" / "b.tflite"


@given(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12))
def test_file_names_are_injective_and_inert(a, b):
    assert (file_name(a) == file_name(b)) == (a == b)
    assert "/" not in file_name(a) and not file_name(a).startswith(".")


def test_ids_too_long_for_a_file_name_keep_their_start_and_stay_apart():
    long = "模型" * 20  # 120 bytes on disk, 360 once percent-encoded
    names = {file_name(long), file_name(long + "x"), file_name(long[:-1])}
    assert len(names) == 3 and all(len(n) <= 200 for n in names)
    assert file_name(long).startswith(file_name("模型" * 5))


def test_ids_differing_only_in_case_do_not_share_a_file(tmp_path):
    from converter.discovery import discover

    write(tmp_path / "x" / "Net.pt")
    write(tmp_path / "y" / "net.pt")
    ids = sorted(c.model_id for c in discover([tmp_path], input_shapes=["1,4"]))
    assert ids == ["x/Net", "y/net"]


# --- output folders: checked first, held by one run -----------------------------------------

def test_an_output_folder_that_is_a_file_is_refused_in_one_line(tmp_path):
    write(tmp_path / "reports")
    with pytest.raises(OutputsError, match=r"^reports folder .*reports is a file, not a folder$"):
        prepare(tmp_path / "out", tmp_path / "reports", lock=False)


def test_a_second_run_on_the_same_folders_is_refused_naming_the_first(tmp_path):
    first = prepare(tmp_path / "out", tmp_path / "reports")
    try:
        code = ("import sys; from converter.output_folders import prepare, OutputsError\n"
                "try:\n    prepare(sys.argv[1], sys.argv[2])\nexcept OutputsError as e:\n    print(e)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out"), str(tmp_path / "reports")],
                             capture_output=True, text=True, cwd=ROOT, check=True).stdout
        assert "is in use by another run" in out and f"pid {os.getpid()}" in out
    finally:
        first.release()
    prepare(tmp_path / "out", tmp_path / "reports").release()  # free again once the first run ends


def test_one_folder_for_both_outputs_is_locked_once(tmp_path):
    lock = RunLock({"deliverables folder": tmp_path, "reports folder": tmp_path}).acquire()
    assert len(lock.folders) == 1
    lock.release()


# --- the baseline: any broken structure is one line naming the file ------------------------

@pytest.mark.parametrize("content, words", [
    ("[]", "holds a JSON list"),
    ('{"schema_version": 1, "models": []}', "'models' must be an object"),
    ('{"schema_version": 1, "models": {"m": "passed"}}', "record of model 'm'"),
    ('{"schema_version": 1, "models": {"m": {"sta', "not a readable baseline"),
    ('{"schema_version": 1, "models": {"m": {"status": "passed", "drq_range_rel_err": "0.01"}}}', "not a float"),
    # NaN compares false with everything: it would have let any error growth through as "no regression"
    ('{"schema_version": 2, "models": {"m": {"status": "passed", "recipes": {"drq": {"err": NaN}}}}}', "holds NaN"),
    ('{"schema_version": 1, "models": {"m": {"status": "passed", "drq_range_rel_err": Infinity}}}', "holds Infinity"),
    ('{"schema_version": 2, "models": {"m": {"status": "passed", "recipes": {"drq": {"err": 1e999}}}}}', "not a number"),
    ("[" * 200_000 + "]" * 200_000, "nested more than 64 levels deep"),
    ('{"schema_version": 3, "models": {}}', "baseline schema 3 is not 2"),
])
def test_a_baseline_with_the_wrong_structure_is_one_error_line_and_update_repairs_it(tmp_path, content, words):
    path = write(tmp_path / "baseline.json", content)
    row = builders.record(model_id="m")
    common = dict(discovered={"m"}, thresholds=Thresholds(), versions={}, models_dirs=["x"])
    outcome = gate(path, {"m": row}, update=False, **common)
    assert outcome.failed and len(outcome.lines) == 1
    assert outcome.lines[0].text.startswith(f"ERROR: cannot use the baseline {path}") and words in outcome.lines[0].text
    assert not gate(path, {"m": row}, update=True, **common).failed
    assert json.loads(path.read_text())["models"]["m"]["status"] == "passed"


# --- model files: sniffed without executing them ------------------------------------------

def test_random_bytes_are_not_a_pytorch_file_and_get_no_pickle_advice(tmp_path):
    from converter.stages.load import sniff_format

    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ConversionError) as info:
        sniff_format(path.read_bytes())
    assert info.value.kind is FailureKind.LOAD_ERROR and "not a PyTorch file" in info.value.message
    assert "trust_pickle" not in info.value.message


def test_a_plain_pt2_passes_the_inspection(tmp_path):
    from converter.stages.pickle_safety import inspect_pt2

    inspect_pt2(builders.plain_pt2(tmp_path).read_bytes())  # raises if it would refuse
    inspect_pt2((ROOT / "model_cases" / "examples" / "resnet_tiny.pt2").read_bytes())


@pytest.mark.parametrize("attack", builders.PT2_ATTACKS)
def test_each_crafted_pt2_is_refused_by_inspection_and_really_runs_code_in_torch(tmp_path, attack):
    from converter.stages.pickle_safety import inspect_pt2

    marker = tmp_path / "marker"
    path = builders.crafted_pt2(tmp_path, attack, marker)
    with pytest.raises(ConversionError) as info:
        inspect_pt2(path.read_bytes())
    assert info.value.kind is FailureKind.UNTRUSTED_PICKLE and "trust_pickle" in info.value.message
    assert not marker.exists()
    # the crafted file is a real attack: torch.export.load itself runs the payload
    subprocess.run([sys.executable, "-c", "import sys, torch; torch.export.load(sys.argv[1])", str(path)],
                   capture_output=True, cwd=tmp_path)
    assert marker.read_text() == "code ran"


def test_files_are_written_with_the_mode_the_umask_gives(tmp_path):
    write_text_atomic(tmp_path / "summary.md", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "summary.md").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_legacy_torch_save_file_is_still_recognised(tmp_path):
    import torch

    from converter.stages.load import sniff_format

    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert sniff_format(path.read_bytes()) == "pickle_archive"


def pt2_with(members: int, prefix: str = "plain/") -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(members):
            zf.writestr(f"{prefix}data/{i}", b"")
    return buffer.getvalue()


def test_a_pt2_of_40000_members_is_refused_by_count_and_a_repeated_name_found_in_one_pass():
    from converter.stages.pickle_safety import MAX_MEMBERS, inspect_pt2

    with pytest.raises(ConversionError, match="archive has 40,000 members, more than the 10,000"):
        inspect_pt2(pt2_with(40_000))
    below = pt2_with(MAX_MEMBERS - 1)
    import io
    import zipfile

    buffer = io.BytesIO(below)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(buffer, "a") as zf:
        zf.writestr("plain/data/7", b"")  # one name twice among 9,999 others
    with pytest.raises(ConversionError, match="member plain/data/7 appears more than once"):
        inspect_pt2(buffer.getvalue())


def test_a_pt2_declaring_more_than_64_gb_is_refused_before_anything_is_read():
    import struct

    from converter.stages.pickle_safety import inspect_pt2

    data = bytearray(pt2_with(17))
    at = 0
    while (at := data.find(b"PK\x01\x02", at)) != -1:  # each member's central-directory entry
        struct.pack_into("<I", data, at + 24, 0xFFFFFFF0)  # declares 4 GB once unpacked
        at += 4
    with pytest.raises(ConversionError, match=r"declares 68\.0 GB once unpacked, more than 64 GB"):
        inspect_pt2(bytes(data))


@pytest.mark.parametrize("value", ["nan", "maybe", "2"])
def test_a_switch_that_is_neither_on_nor_off_is_refused(value):
    with pytest.raises(SettingsError, match="TFLITE_HARNESS_NO_CACHE"):
        resolve({}, env={"TFLITE_HARNESS_NO_CACHE": value}, ini={})


def test_a_model_name_with_a_newline_or_a_pipe_keeps_its_summary_row_whole():
    from converter.report import summary_markdown

    records = {name: builders.record(model_id=name) for name in ("two\nlines", "a|b", "plain")}
    table = [ln for ln in summary_markdown(records, {}).splitlines() if ln.startswith("|")]
    columns = table[0].count("|")
    assert len(table) == 2 + 3 and all(ln.count("|") - ln.count("\\|") == columns for ln in table), table


def test_every_failure_kind_says_whether_it_is_the_models():
    machine = {FailureKind.TIMEOUT, FailureKind.OUT_OF_MEMORY, FailureKind.CRASH, FailureKind.DISK_FULL,
               FailureKind.NO_SLOT}
    for kind in FailureKind:
        assert isinstance(kind.model, bool), kind
        assert kind.model == (kind not in machine), kind  # a new kind must be placed on purpose
        assert kind.cached == kind.model  # what may be the machine's is converted again next time
        assert kind.removes_deliverable == (kind not in (FailureKind.DISK_FULL, FailureKind.NO_SLOT)), kind
