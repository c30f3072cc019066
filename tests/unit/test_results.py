"""The per-model record and its serialisation (results.py, protocol.py)."""
from __future__ import annotations

import os

from converter.failures import Failure, FailureKind
from converter.protocol import write_text_atomic
from converter.results import Result


def test_result_round_trips():
    r = Result("m", "m.pt", "failed", Failure(FailureKind.TIMEOUT, "export", "slow"),
               stage_seconds={"load": 1.0}, network_attempts=("connect x",))
    assert Result.from_dict(r.to_dict()) == r
    assert r.failure.signature == "timeout@export: slow"


def test_files_are_written_with_the_mode_the_umask_gives(tmp_path):
    write_text_atomic(tmp_path / "summary.md", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "summary.md").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_deliverables_signature_survives_result_json():
    from converter.results import Deliverable
    from converter.signature import Signature, TensorSignature

    signature = Signature((TensorSignature("image", "serving_default_image:0", (1, 32, 32, 1), "int8", "NHWC",
                                           0.00817, -61),),
                          (TensorSignature("logits", "PartitionedCall:0", (1, 10), "int8", "", 0.0319, 19),))
    r = Result("m", "m.pt", "passed", deliverables=(Deliverable("int8_io", "m.tflite", 100, signature=signature),))
    assert Result.from_dict(r.to_dict()) == r
