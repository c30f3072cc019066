"""The conversion cache: an unchanged model is restored, a changed one converted, a tampered
entry rebuilt; every conversion here is real."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .. import builders
from ..support import convert, run


def test_an_unchanged_model_is_restored_and_a_changed_one_converted(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m", name="net")
    first = convert(tmp_path, model)
    assert first.passed and not first.cache_hit
    (tmp_path / "out" / "net.tflite").unlink()
    again = convert(tmp_path, model)
    assert again.passed and again.cache_hit
    assert [d.outputs for d in again.deliverables] == [d.outputs for d in first.deliverables]
    assert [d.bytes for d in again.deliverables] == [d.bytes for d in first.deliverables]
    assert (tmp_path / "out" / "net.tflite").read_bytes() == Path(first.deliverable_of("drq").path).read_bytes()
    sidecar = model.with_suffix(".toml")
    sidecar.write_text("[tolerance]\ndrq = 0.2\n" + sidecar.read_text())
    loose = convert(tmp_path, model)  # a tolerance changes no conversion: the entry is judged again with it
    assert loose.cache_hit and loose.deliverable_of("drq").outputs[0].tolerance == 0.2
    sidecar.write_text(sidecar.read_text().replace("drq = 0.2", "drq = 1e-9"))
    strict = convert(tmp_path, model)  # today's tolerance decides, not the one the entry was judged with
    assert strict.cache_hit and strict.failure.kind.value == "numeric_mismatch"
    assert not (tmp_path / "out" / "net.tflite").exists()
    sidecar.write_text(sidecar.read_text().replace("drq = 1e-9", "drq = 0.2") + "range = [0.0, 1.0]\n")
    assert not convert(tmp_path, model).cache_hit  # what the spec says to convert is part of the key
    assert not convert(tmp_path, model, no_cache="1").cache_hit


def test_a_tampered_entry_is_detected_and_rebuilt(tmp_path):
    model = builders.torchscript_cnn(tmp_path / "m", name="net")
    convert(tmp_path, model)
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    drq = entry / "model_drq.tflite"
    drq.write_bytes(drq.read_bytes()[:-16] + b"\0" * 16)  # a deliverable nobody verified
    rebuilt = convert(tmp_path, model)
    assert rebuilt.passed and not rebuilt.cache_hit
    manifest = json.loads((entry / "manifest.json").read_text())
    assert set(manifest["files"]) == {"result.json", "model_drq.tflite", "samples.npz"}
    assert convert(tmp_path, model).cache_hit  # the rebuilt entry serves again


def test_a_hit_shows_in_junit_and_the_summaries(harness):
    builders.torchscript_cnn(harness.path / "models", name="net")
    run(harness, "--tflite-models-dir", "models").assert_outcomes(passed=1)
    warm = run(harness, "--tflite-models-dir", "models")
    warm.assert_outcomes(passed=1)
    assert 'name="cache_hit" value="hit"' in (harness.path / "junit.xml").read_text()
    rows = json.loads((harness.path / "reports" / "summary.json").read_text())["table"]
    assert rows["net"]["cache_hit"] == "hit" and (harness.path / "tflite_models" / "net.tflite").is_file()
    assert "| cache |" in (harness.path / "reports" / "summary.md").read_text()
    cold = run(harness, "--tflite-models-dir", "models", "--tflite-no-cache")
    cold.assert_outcomes(passed=1)
    assert 'name="cache_hit" value=""' in (harness.path / "junit.xml").read_text()


def test_a_restored_failure_keeps_the_message_its_conversion_gave(tmp_path, diverging_pool):
    """A wrong float32 conversion, restored from the cache, is judged again and fails the same way,
    with the words its retries and its diagnosis added: a baseline written from a warm run then
    matches a cold one (it did not: the restored message lost them, and the gate called it a new
    failure)."""
    cold = diverging_pool.result
    shutil.copytree(diverging_pool.work / "cache", tmp_path / "cache")  # a failed re-judging would rebuild the entry
    warm = convert(tmp_path, diverging_pool.model)
    assert not cold.cache_hit and warm.cache_hit
    assert cold.failure.kind.value == "numeric_mismatch" and "first divergence at node" in cold.failure.message
    assert warm.failure == cold.failure


def test_a_refused_pickle_is_cached_under_the_bytes_read(tmp_path):
    """Refused before it loads, an untrusted pickle is still the model's own failure: a rerun
    restores it instead of starting a conversion (the only model a warm batch converted)."""
    model = builders.pickled_module(tmp_path / "m")
    cold = convert(tmp_path, model)
    log = tmp_path / "reports" / "artifacts" / "pickled" / "convert.log"
    logged = log.read_bytes()
    warm = convert(tmp_path, model)
    assert cold.failure.kind.value == "untrusted_pickle" and len(cold.model_sha256) == 64
    assert warm.cache_hit and warm.failure == cold.failure
    assert log.read_bytes() == logged  # the failure's message names its log: a restored failure brings it back


def test_durations_stored_from_a_cached_run_are_the_conversions(harness):
    """pytest-split balances shards by the durations `--store-durations` stores: from a warm run those
    were restore times (0.01-0.08 s), so a shard with a cold cache got far more than its share."""
    pytest.importorskip("pytest_split", reason="pytest-split (requirements_dev.txt) is not installed")
    builders.torchscript_cnn(harness.path / "models", name="net")
    run(harness, "--tflite-models-dir", "models").assert_outcomes(passed=1)
    converted = json.loads((harness.path / "reports" / "summary.json").read_text())["models"]["net"]
    warm = run(harness, "--tflite-models-dir", "models", "--store-durations", "--durations-path", "durations.json")
    warm.assert_outcomes(passed=1)
    record = json.loads((harness.path / "reports" / "summary.json").read_text())["models"]["net"]
    assert not converted["cache_hit"] and record["cache_hit"]
    assert record["seconds"] == converted["seconds"] > 0.1  # the conversion's seconds, as recorded when it ran
    stored = json.loads((harness.path / "durations.json").read_text())
    assert stored["models/net.pt::net"] >= record["seconds"]
