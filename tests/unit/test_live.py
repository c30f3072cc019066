"""Live progress: running conversions read from the children's progress files, the CLI's ticker (live.py)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

from converter.live import StageTicker, running_conversions, status_line


def test_running_conversions_are_read_from_the_childrens_progress_files(tmp_path):
    for model_id, stage, age in (("a", "savedmodel", 400.0), ("b/c", "export", 5.0)):
        folder = tmp_path / model_id.replace("/", "%2F")
        folder.mkdir()
        (folder / "job.json").write_text(json.dumps({"spec": {"model_id": model_id, "timeout": 600.0}}))
        progress = folder / "progress.json"
        progress.write_text(json.dumps({"stage": stage, "stage_seconds": {}}))
        os.utime(progress, (time.time() - age, time.time() - age))  # the stage began `age` seconds ago
    (tmp_path / "done").mkdir()  # a finished model: its child removed progress.json
    ghost = tmp_path / "ghost"  # left by a worker that was killed: its parent is gone
    ghost.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (ghost / "job.json").write_text(json.dumps({"spec": {"model_id": "ghost", "timeout": 30.0},
                                                "guardians": [dead.pid]}))
    (ghost / "progress.json").write_text(json.dumps({"stage": "savedmodel"}))
    assert running_conversions(tmp_path, since=time.time() + 60) == []  # all from before this run
    running = running_conversions(tmp_path)
    assert [(r.model_id, r.stage, round(r.stage_seconds)) for r in running] == [("a", "savedmodel", 400),
                                                                                  ("b/c", "export", 5)]
    line = status_line(3, 5, running, 0.5)
    assert line == ("[tflite] 3/5 done; converting: a (savedmodel, 400 s: slow, 67% of its 600 s timeout), "
                    "b/c (export, 5 s)")


def test_the_cli_ticker_updates_one_line_on_a_terminal():
    out = io.StringIO()
    ticker = StageTicker("net", timeout=10, fraction=0.5, stream=out, tty=True)
    ticker({"stage": "load"}, 0.1)
    ticker({"stage": "export"}, 1.0)
    ticker({"stage": "export"}, 7.0)  # 6 s of a 10 s timeout in one stage: named as slow, once
    ticker({"stage": "export"}, 8.0)
    ticker.close()
    text = out.getvalue()
    assert "\r\x1b[2Knet: export 0 s (total 1 s)" in text
    assert text.count("net: slow: still in export after 6 s (60% of its 10 s timeout)\n") == 1
    assert text.endswith("\r\x1b[2K")  # the live line is cleared before the result is printed
