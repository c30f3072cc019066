"""The preloaded process and the machine's conversion slots, on real conversions and real
processes: a forked child converts exactly as a spawned one, memory goes with each child,
a dead preloaded process costs nothing but its imports, and no more conversions run at once
than the machine has slots."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import psutil

from converter import forkserver
from converter.discovery import discover
from converter.isolation import run_isolated
from converter.slots import conversion_slot

from .. import builders
from ..support import ROOT, gone_within, run


def _spec(folder):
    (case,) = discover([folder])
    return case.spec


def _parent_of(pid: int, seen: list) -> None:
    proc = psutil.Process(pid)
    seen.append((pid, proc.ppid(), " ".join(psutil.Process(proc.ppid()).cmdline())))


def test_a_forked_child_converts_exactly_as_a_spawned_one(tmp_path):
    spec = _spec(builders.torchscript_cnn(tmp_path / "m").parent)
    seen: list = []
    forked = run_isolated(spec, tmp_path / "fork", threads=1, memory_limit_mb=4000,
                          on_start=lambda pid: _parent_of(pid, seen))
    spawned = run_isolated(spec, tmp_path / "spawn", threads=1, memory_limit_mb=4000, preload=False,
                           on_start=lambda pid: _parent_of(pid, seen))
    assert forked.passed and spawned.passed, (forked.failure, spawned.failure)
    (_, fork_parent, fork_cmd), (_, spawn_parent, _) = seen
    assert "converter.stages.forkserver" in fork_cmd and spawn_parent == os.getpid()
    for a, b in zip(forked.deliverables, spawned.deliverables, strict=True):
        assert a.recipe == b.recipe and open(a.path, "rb").read() == open(b.path, "rb").read()
        assert [c.max_abs_err for c in a.outputs] == [c.max_abs_err for c in b.outputs]


def test_each_forked_child_takes_its_memory_with_it(tmp_path):
    spec = _spec(builders.torchscript_cnn(tmp_path / "m").parent)
    run_isolated(spec, tmp_path / "warm", threads=1, memory_limit_mb=4000)  # the preloaded process exists now
    server = psutil.Process(forkserver._servers[None, 1].process.pid)
    before = server.memory_info().rss
    children: list = []
    for i in range(2):
        result = run_isolated(spec, tmp_path / f"a{i}", threads=1, memory_limit_mb=4000,
                              on_start=lambda pid: _parent_of(pid, children))
        assert result.passed, result.failure
    assert [parent for _, parent, _ in children] == [server.pid] * 2, "one preloaded process forks every model"
    children = [pid for pid, _, _ in children]
    assert not any(psutil.pid_exists(pid) for pid in children)
    # each conversion peaked hundreds of MB above the preloaded process; none of it stayed there
    assert server.memory_info().rss - before < 20 * 2**20


# a model whose forward pass (in the load stage, in the conversion child) writes how many objects the
# child's garbage collector has frozen
FREEZE_COUNTING_SOURCE = """
import gc, os, torch

class Counts(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        with open(os.environ["HARNESS_TEST_FROZEN_FILE"], "w") as fh:
            fh.write(str(gc.get_freeze_count()))
        return self.fc(x)

def build():
    return Counts()
"""


def test_a_forked_childs_collections_leave_out_what_its_preloaded_process_imported(tmp_path, monkeypatch):
    """The preloaded process freezes its imports' objects: the collections a child makes between its
    steps then walk only the child's own (they walked all of torch's, TensorFlow's and onnx2tf's,
    0.3 s each, half of a small model's conversion)."""
    frozen = tmp_path / "frozen"
    monkeypatch.setenv("HARNESS_TEST_FROZEN_FILE", str(frozen))
    model = builders.factory_model(tmp_path / "m", "counts", FREEZE_COUNTING_SOURCE, "counting:build", (1, 4))
    result = run_isolated(_spec(model.parent), tmp_path / "fork", threads=1, memory_limit_mb=4000)
    assert result.passed, result.failure
    assert int(frozen.read_text()) > 100_000  # 440,000 measured after torch, TensorFlow and onnx2tf


def test_a_killed_preloaded_process_fails_one_model_and_the_next_converts(tmp_path):
    folder = tmp_path / "m"
    builders.factory_model(folder, "slow", builders.waiting_model_source(kill_parent=False), "slowness:waits", (1, 4))
    slow, fine = _spec(folder), _spec(builders.torchscript_cnn(tmp_path / "n").parent)
    pid_file = tmp_path / "child.pid"
    os.environ["HARNESS_TEST_PID_FILE"] = str(pid_file)  # the forked child gets the environment of now
    try:
        def kill_server_once_busy(pid):
            deadline = time.monotonic() + 120
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            os.kill(psutil.Process(pid).ppid(), signal.SIGKILL)

        first = run_isolated(slow, tmp_path / "a", threads=1, memory_limit_mb=4000, on_start=kill_server_once_busy)
    finally:
        del os.environ["HARNESS_TEST_PID_FILE"]
    assert first.failure.kind.value == "crash" and "SIGKILL" in first.failure.message, first.failure
    assert gone_within(int(pid_file.read_text()), 10), "the child outlived its preloaded process"
    second = run_isolated(fine, tmp_path / "b", threads=1, memory_limit_mb=4000)
    assert second.passed, second.failure


def _hold_a_slot(folder, count, log, seconds):
    with conversion_slot(count, folder):
        log.put(("in", time.monotonic()))
        time.sleep(seconds)
        log.put(("out", time.monotonic()))


def test_no_more_conversions_run_at_once_than_the_machine_has_slots(tmp_path):
    log = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(target=_hold_a_slot, args=(tmp_path, 2, log, 1.0))
             for _ in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    events = sorted(log.get(timeout=5) for _ in range(10))
    events.sort(key=lambda e: e[1])
    running = peak = 0
    for kind, _ in events:
        running += 1 if kind == "in" else -1
        peak = max(peak, running)
    assert peak == 2  # five holders, two at a time: neither fewer (a lost slot) nor more


def test_a_slot_held_by_a_killed_process_is_free_again(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    log = ctx.Queue()
    holder = ctx.Process(target=_hold_a_slot, args=(tmp_path, 1, log, 600))
    holder.start()
    assert log.get(timeout=60)[0] == "in"
    holder.kill()  # as the out-of-memory killer would kill a worker
    holder.join()
    start = time.monotonic()
    with conversion_slot(1, tmp_path):
        assert time.monotonic() - start < 5


def test_the_batch_flags_for_preloading_and_slots_are_taken_and_shown(harness):
    for name in ("a_net", "b_net"):
        builders.torchscript_cnn(harness.path / "models", name=name)
    result = run(harness, "--tflite-models-dir", "models", "--tflite-no-preload", "--tflite-max-conversions", "1", "-n", "2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*timeout 600 s; at most 1 at once on this machine; no preloaded process",
                                 "workers: -n 2 capped at 1: more would only wait for a conversion slot*",
                                 "created: 1/1 worker"])
    settings = json.loads((harness.path / "reports" / "summary.json").read_text())["settings"]
    assert settings["max_conversions"] == 1 and settings["preload"] is False
    bad = run(harness, "--tflite-models-dir", "models", "--tflite-max-conversions", "0")
    assert bad.ret == 4 and "argument --tflite-max-conversions: must be between 1 and 1024, not 0" in bad.stderr.str()


def test_the_benchmark_measures_one_model_against_the_original_workflow(tmp_path):
    """The benchmark is an entry point: one real run on the smallest case it has (a bundled
    example, with --models; the real architectures need their own environment), figures only:
    its numbers are not judged here."""
    out = tmp_path / "benchmark.json"
    proc = subprocess.run([sys.executable, "benchmarks/benchmark.py", "--models", "model_cases/examples",
                           "--only", "cnn_batchnorm", "--skip-batch", "--work", str(tmp_path / "work"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    row = report["models"]["cnn_batchnorm"]
    assert row["harness"]["ok"] and row["original"]["ok"], row
    assert row["harness"]["onnx2tf_runs"] == 1 and row["harness"]["stages_s"]["savedmodel"] > 0
    assert row["original"]["peak_rss_mb"] > 0 and row["harness"]["peak_rss_mb"] > 0
    assert report["machine"]["cores"] and "onnx2tf converted 1 of 1 models in one run" in proc.stdout
    help_text = subprocess.run([sys.executable, "benchmarks/benchmark.py", "--help"], cwd=ROOT,
                               capture_output=True, text=True).stdout
    assert "--build-real" in help_text and "reports/benchmark.json" in help_text
    missing = subprocess.run([sys.executable, "benchmarks/benchmark.py", "--build-real", "--real-python",
                              str(tmp_path / "none" / "python"), "--work", str(tmp_path / "w2")],
                             cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 1 and "requirements_real.txt" in missing.stderr


def test_the_benchmark_measures_each_engine_on_a_model(tmp_path):
    """`--engines`: one model through onnx2tf alone, litert alone and auto, each row with its figures."""
    out = tmp_path / "benchmark.json"
    proc = subprocess.run([sys.executable, "benchmarks/benchmark.py", "--models", "model_cases/examples",
                           "--only", "cnn_batchnorm", "--engines", "--skip-models", "--skip-batch",
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = json.loads(out.read_text())["engines"]["cnn_batchnorm"]
    assert [(e, r["ok"], r["engine"]) for e, r in runs.items()] == [
        ("onnx2tf", True, "onnx2tf"), ("litert", True, "litert"), ("auto", True, "onnx2tf")]  # auto keeps onnx2tf's
    assert all(r["wall_s"] > 0 and r["peak_rss_mb"] > 0 and r["recipes"]["fp32"]["err"] < 1e-4 for r in runs.values())
    lines = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("cnn_batchnorm")]
    assert [ln[1] for ln in lines] == ["onnx2tf", "litert", "auto"] and [ln[4] for ln in lines] == \
        ["onnx2tf", "litert", "onnx2tf"]


def test_a_wait_for_a_slot_ends_with_a_one_line_reason(tmp_path):
    from converter.slots import NoSlot

    ctx = multiprocessing.get_context("spawn")
    log = ctx.Queue()
    holder = ctx.Process(target=_hold_a_slot, args=(tmp_path, 1, log, 30))
    holder.start()
    try:
        assert log.get(timeout=60)[0] == "in"
        try:
            with conversion_slot(1, tmp_path, limit=0.5):
                raise AssertionError("got a slot another process holds")
        except NoSlot as exc:
            assert str(exc) == ("no conversion slot came free within 0.5 s: other conversions on this machine "
                                "held all 1 of them (--tflite-max-conversions)")
    finally:
        holder.kill()
        holder.join()
