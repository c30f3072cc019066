"""What may be unpickled: the .pt2 inspection and pickle sniffing, against crafted files that really
run code in torch (pickle_safety.py, pickle_sniff.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from converter.failures import ConversionError, FailureKind

from .. import builders
from ..support import ROOT


def pt2_with(members: int, prefix: str = "plain/") -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(members):
            zf.writestr(f"{prefix}data/{i}", b"")
    return buffer.getvalue()


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


def test_a_legacy_torch_save_file_is_still_recognised(tmp_path):
    import torch

    from converter.stages.load import sniff_format

    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert sniff_format(path.read_bytes()) == "pickle_archive"


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
