"""Failure kinds and their policy, stable one-line messages (failures.py)."""
from __future__ import annotations

from converter.failures import FailureKind, normalise_message


def test_messages_are_stable_across_machines():
    a = normalise_message("\x1b[31mError\x1b[0m at 0x7f3a2b1c4d5e in /tmp/pytest-7/run1/m/model.onnx\nmore")
    b = normalise_message("\x1b[31mError\x1b[0m at 0x7f00000a1b2c in /home/ci/work/model.onnx")
    assert a == b == "Error at 0x… in …/model.onnx"


def test_every_failure_kind_says_whether_it_is_the_models():
    machine = {FailureKind.TIMEOUT, FailureKind.OUT_OF_MEMORY, FailureKind.CRASH, FailureKind.DISK_FULL,
               FailureKind.NO_SLOT, FailureKind.ENGINE_MISSING}
    kept = (FailureKind.DISK_FULL, FailureKind.NO_SLOT, FailureKind.ENGINE_MISSING)  # none says a thing about the model
    for kind in FailureKind:
        assert isinstance(kind.model, bool), kind
        assert kind.model == (kind not in machine), kind  # a new kind must be placed on purpose
        assert kind.cached == kind.model  # what may be the machine's is converted again next time
        assert kind.removes_deliverable == (kind not in kept), kind


def test_every_failure_kind_carries_its_retry_and_rejudge_policy():
    wrong_numbers = {FailureKind.NUMERIC_MISMATCH, FailureKind.SHAPE_MISMATCH}
    retried = wrong_numbers | {FailureKind.SAVEDMODEL_ERROR, FailureKind.TFLITE_ERROR, FailureKind.FLEX_OPS}
    for kind in FailureKind:
        assert kind.wrong_numbers == (kind in wrong_numbers), kind
        assert kind.retried == (kind in retried), kind  # a cheaper onnx2tf mode can cause it
        assert kind.rejudged == (kind is FailureKind.NUMERIC_MISMATCH), kind  # tolerances change only this verdict
        assert not (kind.machine and (kind.retried or kind.rejudged)), kind
    from converter.failures import Stage

    assert Stage.SAVEDMODEL.default_kind is FailureKind.SAVEDMODEL_ERROR and Stage.TEST.default_kind is FailureKind.CRASH


def test_the_readmes_failure_table_says_what_each_kind_tells_a_failing_test_to_do():
    """What to do is said in two places, a failing model's message and the README's table: one
    source, the kind's own row (`next_step`), which the table must repeat word for word."""
    from ..support import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Failure kinds and what to do", 1)[1].split("\n## ", 1)[0]
    table = section[section.index("| kind | means | what to do |"):].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        kind, _means, todo = (cell.strip() for cell in line.strip().strip("|").split(" | "))
        rows[kind.strip("`")] = todo
    assert set(rows) == {k.value for k in FailureKind}  # every kind has its row, and no row a kind that is gone
    for kind in FailureKind:
        assert kind.next_step and "\n" not in kind.next_step, kind
        assert rows[kind.value] == kind.next_step, kind
