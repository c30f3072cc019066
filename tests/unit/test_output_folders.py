"""Output folders checked and locked before the first conversion (output_folders.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from converter.output_folders import OutputsError, RunLock, prepare

from ..support import ROOT, write


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
