"""The controller's batch session and terminal, with fake reports and a fake terminal: records,
expected items, crash attribution through xdist's hook, the verdict, and pytest's private parts the
plugin still reaches (each checked against the installed pytest). No conversion runs here."""
from __future__ import annotations

import errno
import inspect
import json
import os
import tempfile
from types import SimpleNamespace

import pytest

from converter.batch_session import BatchSession
from converter.batch_terminal import write_summary
from converter.failures import Failure, FailureKind, Stage
from converter.html_report import render
from converter.pytest_internals import NO_ESCAPING_INI, escaped_id, guard_junit, message_only
from converter.pytest_plugin import ControllerHooks
from converter.report import summary_markdown
from converter.results import Outcome, Result
from converter.settings import resolve

CHINESE = "killer 模型"


class FakeConfig:
    def __init__(self, no_escaping=False):
        self.no_escaping = no_escaping

    def getini(self, key):
        assert key == NO_ESCAPING_INI
        return self.no_escaping


def session(tmp_path, ids=("a_net", CHINESE), config=None) -> BatchSession:
    settings = resolve({"reports_dir": str(tmp_path / "reports"), "tflite_dir": str(tmp_path / "out"),
                        "baseline": str(tmp_path / "baseline.json")}, {}, {}, base=tmp_path)
    return BatchSession(settings, discover=lambda: ids, escape=lambda m: escaped_id(m, config or FakeConfig()),
                        rootpath=tmp_path)


def report(nodeid, outcome="passed", model_id=None, result=None, longrepr=None, when="call"):
    fake = SimpleNamespace(nodeid=nodeid, when=when, passed=outcome == "passed", failed=outcome == "failed",
                           skipped=outcome == "skipped", longrepr=longrepr)
    if model_id is not None:
        fake.tflite_model_id = model_id
    if result is not None:
        fake.tflite_result = result.to_dict()
    return fake


def xdist_crash_report(nodeid):
    """What xdist 3.8 builds for the item of a dead worker (DSession.handle_crashitem): no attribute of ours."""
    return report(nodeid, "failed", longrepr=f"worker 'gw1' crashed while running {nodeid!r}", when="???")


def test_the_crash_hook_names_the_model_of_a_plugin_item_a_dead_worker_ran(tmp_path):
    batch = session(tmp_path)
    nodeid = f"models::{CHINESE}"  # the plugin's items are named by the id itself
    batch.record(report(nodeid, model_id=CHINESE, when="setup"))  # the setup report arrives before the crash
    crash = xdist_crash_report(nodeid)
    batch.attribute_crash(nodeid, crash)
    assert crash.tflite_model_id == CHINESE
    batch.record(crash)
    failure = batch.records[CHINESE].failure
    assert (failure.kind, failure.stage) == (FailureKind.CRASH, Stage.TEST)
    assert failure.message.startswith("the pytest worker converting it was killed or crashed (worker 'gw1' crashed")
    assert batch.records[CHINESE].outcome is Outcome.FAILED


def test_a_worker_dead_in_its_conversion_fixture_is_found_through_pytests_escaping(tmp_path):
    """A test of your own taking `model_case` converts during setup: no report named it yet."""
    batch = session(tmp_path)
    nodeid = "test_mine.py::test_small[killer \\u6a21\\u578b]"
    crash = xdist_crash_report(nodeid)
    batch.attribute_crash(nodeid, crash)
    batch.record(crash)
    assert set(batch.records) == {CHINESE} and batch.records[CHINESE].failure.kind is FailureKind.CRASH
    unescaped = session(tmp_path, config=FakeConfig(no_escaping=True))
    assert unescaped.model_of(f"test_mine.py::test_small[{CHINESE}]") == CHINESE
    assert unescaped.model_of(nodeid) is None


def test_a_crash_of_a_test_that_is_no_model_test_records_nothing(tmp_path):
    batch = session(tmp_path)
    for nodeid in ("test_plain.py::test_ok", "test_plain.py::test_p[other]", "models::not_a_model"):
        crash = xdist_crash_report(nodeid)
        batch.attribute_crash(nodeid, crash)
        batch.record(crash)
        assert not hasattr(crash, "tflite_model_id")
    assert batch.records == {}


def test_the_plugin_takes_xdists_crash_hook_as_xdist_declares_it():
    """pytest calls a hook implementation by its parameters' names: a renamed one would never be called."""
    from xdist import newhooks

    declared = list(inspect.signature(newhooks.pytest_handlecrashitem).parameters)
    ours = list(inspect.signature(ControllerHooks.pytest_handlecrashitem).parameters)[1:]
    assert ours == declared == ["crashitem", "report", "sched"]
    declared = list(inspect.signature(newhooks.pytest_xdist_node_collection_finished).parameters)
    assert list(inspect.signature(ControllerHooks.pytest_xdist_node_collection_finished).parameters)[1:] == declared


def test_expected_items_from_workers_are_the_model_tests_among_their_ids(tmp_path):
    batch = session(tmp_path)
    batch.expect_collected_by_worker(["models::a_net", "test_plain.py::test_ok", "test_mine.py::test_x[a_net]",
                                      "test_mine.py::test_x[killer \\u6a21\\u578b]", "test_mine.py::test_x[zz]"])
    assert batch.expected == {"models::a_net", "test_mine.py::test_x[a_net]",
                              "test_mine.py::test_x[killer \\u6a21\\u578b]"}


def test_records_take_the_tests_outcome_and_a_failure_without_result_is_the_test_process(tmp_path):
    batch = session(tmp_path)
    passed = Result("a_net", "a_net.pt", "passed")
    batch.record(report("models::a_net", model_id="a_net", result=passed))
    xfailed = report(f"models::{CHINESE}", "skipped", model_id=CHINESE,
                     result=Result.failed(CHINESE, "", FailureKind.TIMEOUT, "export", "slow"))
    xfailed.wasxfail = "known"
    batch.record(xfailed)
    assert batch.records["a_net"].outcome is Outcome.PASSED and batch.records[CHINESE].outcome is Outcome.XFAILED
    batch = session(tmp_path)
    batch.record(report("models::a_net", "failed", model_id="a_net", longrepr="Timeout >720.0s\nmore"))
    assert batch.records["a_net"].failure.message == "no result from the test process (Timeout >720.0s)"


def test_the_end_of_the_run_writes_the_summaries_and_a_cut_run_says_what_did_not_run(tmp_path):
    batch = session(tmp_path)
    assert not batch.finish(ended_by=None, versions={})  # nothing ran: nothing to conclude
    batch.expect(["models::a_net", f"models::{CHINESE}", "models::b_net"])
    batch.record(report("models::a_net", model_id="a_net", result=Result("a_net", "a_net.pt", "passed")))
    stopped = tmp_path / "reports" / "artifacts" / "b_net"  # its child was converting when the signal came
    stopped.mkdir(parents=True)
    (stopped / "job.json").write_text(json.dumps({"spec": {"model_id": "b_net"}}))
    (stopped / "progress.json").write_text(json.dumps({"stage": "savedmodel"}))
    assert batch.finish(ended_by="SIGINT", versions={"torch": "x"}, signalled=True)
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["ended"] == {"by": "SIGINT", "stopped": ["b_net"], "not_run": 1}  # it ran: not among those that did not
    assert "baseline" not in summary  # a cut run is not judged
    assert not batch.fails_the_run(run_passed=True)
    assert session(tmp_path).finish(ended_by="SIGTERM", versions={}, signalled=True)  # told even when nothing finished
    whole = session(tmp_path)
    whole.record(report("models::a_net", model_id="a_net", result=Result("a_net", "a_net.pt", "passed")))
    assert whole.finish(ended_by=None, versions={}) and whole.gate is not None and not whole.gate.failed
    whole.unwritten.append("the summaries cannot be written")
    assert whole.fails_the_run(run_passed=False)


class FakeReporter:
    def __init__(self):
        self.lines = []

    def line(self, text, **markup):
        self.lines.append(text)

    def section(self, title):
        self.lines.append(f"== {title} ==")


def test_one_failure_line_in_the_terminal_markdown_html_and_the_verdict(tmp_path):
    failure = Failure(FailureKind.LOAD_ERROR, Stage.LOAD, "model file fifo.pt is a FIFO, not a file")
    record = Result.failed("fifo", "fifo.pt", failure.kind, failure.stage, failure.message, outcome=Outcome.FAILED)
    batch = session(tmp_path, ids=("fifo",))
    batch.record(report("models::fifo", "failed", model_id="fifo", result=record))
    batch.finish(ended_by=None, versions={})
    terminal = FakeReporter()
    write_summary(terminal, batch, notes=["a note"])
    assert "  fifo: load [load_error] model file fifo.pt is a FIFO, not a file" in terminal.lines
    assert terminal.lines[0] == "note: a note" and "== tflite baseline ==" in terminal.lines
    assert failure.line("fifo", style="terminal") == "fifo: load [load_error] model file fifo.pt is a FIFO, not a file"
    assert f"- `fifo` (failed): {failure.line()}" in summary_markdown({"fifo": record}, {})
    assert "(failed): load [load_error]: model file fifo.pt is a FIFO, not a file</li>" in render({"fifo": record}, {})
    assert failure.one_line("fifo") == "fifo: load failed [load_error]: model file fifo.pt is a FIFO, not a file"


def test_escaped_id_is_what_pytest_writes_into_a_parametrized_node_id(pytester):
    """pytest 9.2's `_pytest.compat.ascii_escaped`: the ids must read as pytest writes them."""
    pytester.makepyfile(test_ids=f"""
        import pytest
        @pytest.mark.parametrize("m", [pytest.param(1, id={CHINESE!r}), pytest.param(2, id="plain")])
        def test_x(m):
            pass
    """)
    ids = [ln for ln in pytester.runpytest_inprocess("--collect-only", "-q").outlines if "::" in ln]
    assert ids == [f"test_ids.py::test_x[{escaped_id(CHINESE, FakeConfig())}]", "test_ids.py::test_x[plain]"]
    assert escaped_id(CHINESE, FakeConfig()) == "killer \\u6a21\\u578b"


def test_guard_junit_reaches_pytests_junit_writer_and_removes_a_stale_report_on_a_full_disk(tmp_path, monkeypatch):
    """pytest 9.2's `_pytest.junitxml.xml_key` stashes the `LogXML` whose `logfile` is written."""
    from _pytest.junitxml import LogXML, xml_key

    stale = tmp_path / "junit.xml"
    stale.write_text("<old/>")
    config = SimpleNamespace(stash=pytest.Stash())
    assert guard_junit(config) is None  # no JUnit report asked for
    config.stash[xml_key] = LogXML(str(stale), None)
    assert guard_junit(config) is None and stale.is_file()  # room: pytest writes it

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    line = guard_junit(config)
    assert line == (f"the JUnit report cannot be written to {stale}: no space left on its disk "
                    "(the previous one was removed)")
    assert not stale.exists() and config.stash[xml_key].logfile == os.devnull


class StatusConfig:
    """What StatusLine reads of pytest's config: the verbosity, --collect-only, -n, the plugins."""

    def __init__(self, verbose=0, collectonly=False, numprocesses=2, terminal=True):
        self.option = SimpleNamespace(verbose=verbose, collectonly=collectonly, numprocesses=numprocesses)
        self.pluginmanager = SimpleNamespace(get_plugin=lambda name: object() if terminal and name == "terminalreporter"
                                             else None)


def test_the_status_line_is_quiet_under_q_collect_only_or_without_a_terminal(tmp_path):
    from converter.batch_terminal import StatusLine

    batch = session(tmp_path)
    shown = StatusLine(StatusConfig(), batch)
    assert shown.wanted() and shown.ticker() is not None
    for quiet in (StatusConfig(verbose=-1), StatusConfig(collectonly=True), StatusConfig(terminal=False)):
        line = StatusLine(quiet, batch)
        assert not line.wanted() and line.ticker() is None  # a plain run's watch loop gets no ticker
        line.start()  # an xdist controller starts no thread
        assert line._thread is None


def test_a_failed_report_without_our_id_is_attributed_by_its_node_id(tmp_path):
    """An xdist without pytest_handlecrashitem (or one whose report lost our attributes): the node id
    of a plugin item names its model, and the model gets a crash record, not silence."""
    batch = session(tmp_path)
    batch.record(report("models::a_net", "failed", longrepr="worker 'gw0' crashed while running 'models::a_net'"))
    assert batch.records["a_net"].failure.kind is FailureKind.CRASH
    assert "killed or crashed" in batch.records["a_net"].failure.message
    batch.record(report("tests/test_other.py::test_x", "failed"))  # no model test: nothing recorded
    assert set(batch.records) == {"a_net"}


def test_a_failed_models_terminal_line_is_an_index_unless_no_failures_section_tells_the_cause(tmp_path):
    record = Result.failed("fifo", "fifo.pt", FailureKind.LOAD_ERROR, Stage.LOAD, "model file fifo.pt is a FIFO, not a file",
                           outcome=Outcome.FAILED)
    batch = session(tmp_path, ids=("fifo",))
    batch.record(report("models::fifo", "failed", model_id="fifo", result=record))
    batch.finish(ended_by=None, versions={})
    indexed, told = FakeReporter(), FakeReporter()
    write_summary(indexed, batch, notes=[], causes=False)  # the cause is in the model's FAILURES entry
    write_summary(told, batch, notes=[], causes=True)  # --tb=no: nowhere else
    assert "  fifo: load [load_error]" in indexed.lines and not any("FIFO" in line for line in indexed.lines)
    assert "  fifo: load [load_error] model file fifo.pt is a FIFO, not a file" in told.lines


def test_a_message_only_failure_crosses_from_an_xdist_worker_without_a_crash_line(pytestconfig):
    """pytest 9.2's `ReprExceptionInfo` without `reprcrash`: its text is whole after xdist's
    serialisation (the public report hooks it uses), and it has no crash message for the short summary."""
    text = "m: load failed [crash]: killed by SIGSEGV\n  log: reports/artifacts/m/convert.log\n  next: rerun"
    sent = pytest.TestReport("models/m.pt::m", ("models/m.pt", None, "m"), {}, "failed", message_only(text), "call")
    hook = pytestconfig.hook
    data = hook.pytest_report_to_serializable(config=pytestconfig, report=sent)
    received = hook.pytest_report_from_serializable(config=pytestconfig, data=json.loads(json.dumps(data)))
    for rep in (sent, received):
        assert rep.longrepr.reprcrash is None and str(rep.longrepr) == text


def test_a_test_of_your_own_records_the_models_verdict_and_never_overrides_its_item(tmp_path):
    """A test taking `conversion` carries the model's own verdict (`tflite_outcome`): its own assertion
    failing, or its being skipped for a model that failed as expected, says nothing of the model."""
    expected = Result.failed("a_net", "", FailureKind.UNTRUSTED_PICKLE, "load", "no opt-in")
    batch = session(tmp_path)
    item = report("models::a_net", "skipped", model_id="a_net", result=expected)
    item.wasxfail = "no opt-in"
    mine = report("tests/test_mine.py::test_x[a_net]", "skipped", model_id="a_net", result=expected, when="setup")
    mine.tflite_outcome = "xfailed"
    batch.record(mine)
    assert batch.records["a_net"].outcome is Outcome.XFAILED  # alone, the model's verdict stands for it
    batch.record(item)
    failing = report("tests/test_mine.py::test_y[a_net]", "failed", model_id="a_net",
                     result=Result("a_net", "a_net.pt", "passed"))
    failing.tflite_outcome = "passed"
    batch.record(failing)
    assert batch.records["a_net"].outcome is Outcome.XFAILED and batch.records["a_net"].failure is not None


def test_the_rootdir_is_picked_again_without_the_values_of_the_harness_options(pytester):
    """pytest 9.2 picks the rootdir and ini file (`_pytest.config.findpaths.determine_setup`) before it
    loads installed plugins: `--tflite-reports-dir /elsewhere` (a space) rooted the run in /elsewhere
    and lost the repository's ini file. The plugin loaded as an installed one is (-p), in-process."""
    pytester.makeini("[pytest]\ntflite_models_dir = models\naddopts = -p no:cacheprovider\n")
    outside = pytester.path.parent / f"{pytester.path.name}_outside"
    outside.mkdir()
    for spelling, dest in ((["--tflite-reports-dir", str(outside)], "tflite_reports_dir"),
                           (["--reports-dir", str(outside)], "tflite_reports_dir"),
                           ([f"--tflite-dir={outside}"], "tflite_tflite_dir")):
        config = pytester.parseconfig("-p", "converter.pytest_plugin", *spelling)
        assert (config.rootpath, config.inipath) == (pytester.path, pytester.path / "tox.ini"), spelling
        assert config.getini("tflite_models_dir") == [pytester.path / "models"]
        assert config.args == [str(pytester.path)] and not config.pluginmanager.has_plugin("cacheprovider")
        assert config.getoption(dest) == str(outside), spelling
def baselined(tmp_path, **rows) -> None:
    """A baseline of these records for the models folder `session` uses."""
    from converter.baseline import write

    write(tmp_path / "baseline.json", rows, {}, None, set(rows), [])


def test_the_gates_failures_become_test_cases_no_test_showed_yet(tmp_path):
    """A regressed model that passed its test fails under its own node id (`--lf` reruns it), one gone
    from the baseline under the baseline's path; one whose own test failed is red already."""
    from .. import builders

    baselined(tmp_path, a_net=builders.record(model_id="a_net"), b_net=builders.record(model_id="b_net"),
              gone=builders.record(model_id="gone"))
    batch = session(tmp_path, ids=("a_net", "b_net"))
    grown = builders.record(drq=5e-3, size=20_000, model_id="a_net")
    batch.record(report("models/a_net.pt::a_net", model_id="a_net", result=grown))
    batch.record(report("test_mine.py::test_x[a_net]", model_id="a_net", result=grown))  # a test of your own too
    broken = builders.record("failed", "crash", "died", model_id="b_net")
    batch.record(report("models/b_net.pt::b_net", "failed", model_id="b_net", result=broken))
    batch.finish(ended_by=None, versions={})
    cases = {c.nodeid: c for c in batch.gate_cases()}
    assert set(cases) == {"models/a_net.pt::a_net", "baseline.json::gone"}
    grew = cases["models/a_net.pt::a_net"]
    assert grew.collected and grew.path == "models/a_net.pt" and grew.failure.kind == "regression"
    assert grew.failure.text.splitlines() == ["REGRESSION a_net: DRQ error grew x5.0 (0.001 -> 0.005; gate x2 above 1e-05)",
                                              "REGRESSION a_net: DRQ file grew +100% (10000 -> 20000 bytes; gate +10%)"]
    gone = cases["baseline.json::gone"]
    assert not gone.collected and gone.failure.text == "REGRESSION gone: was in the baseline and has disappeared"
    assert batch.fails_the_run(run_passed=True)
    (tmp_path / "baseline.json").write_text("[]")
    unusable = session(tmp_path, ids=("a_net",))
    unusable.record(report("models/a_net.pt::a_net", model_id="a_net", result=builders.record(model_id="a_net")))
    unusable.finish(ended_by=None, versions={})
    (case,) = unusable.gate_cases()
    assert case.nodeid == "baseline.json" and case.failure.text.startswith("ERROR: cannot use the baseline")


def test_a_gate_report_is_no_models_record(tmp_path):
    batch = session(tmp_path)
    gate = report("models::a_net", "failed", longrepr="REGRESSION a_net: ...")
    gate.tflite_gate = "regression"
    batch.record(gate)
    assert batch.records == {}


def test_a_partial_run_keeps_the_rows_of_the_models_it_did_not_select(tmp_path):
    """-k, --lf or a split: the summary keeps the earlier rows of the unselected models, each saying
    which run it comes from, through any number of partial runs; the gate calls none of them gone."""
    from .. import builders

    ids = ("a_net", "b_net", "c_net")
    baselined(tmp_path, **{m: builders.record(model_id=m) for m in ids})

    def partial(*models, finish=True):
        batch = session(tmp_path, ids=ids)
        batch.expect(f"models::{m}" for m in models)
        for m in models:
            batch.record(report(f"models::{m}", model_id=m, result=builders.record(model_id=m)))
        batch.finish(ended_by=None, versions={})
        return batch, json.loads((tmp_path / "reports" / "summary.json").read_text())

    full, first = partial(*ids)
    assert not first["run"]["partial"] and "kept_from_earlier_runs" not in first
    batch, second = partial("a_net")
    assert sorted(second["models"]) == list(ids) and second["run"]["partial"]
    assert second["kept_from_earlier_runs"] == {"b_net": first["run"]["started"], "c_net": first["run"]["started"]}
    assert not batch.gate.failed and not batch.gate.gone
    markdown = (tmp_path / "reports" / "summary.md").read_text()
    assert "1 row(s) from this run; 2 rows are kept from earlier runs" in markdown
    assert f"| {first['run']['started']} |" in markdown and "| this run |" in markdown
    assert f"from {first['run']['started']}" in (tmp_path / "reports" / "summary.html").read_text()
    terminal = FakeReporter()
    write_summary(terminal, batch, notes=[])
    assert "1 converted and verified, 0 failed, 0 failed as expected, of 1 model" in terminal.lines
    assert any("1 row from this run, 2 kept from earlier runs" in line for line in terminal.lines)
    second["run"]["started"] = "the second run"  # each row keeps the run it came from, through partial runs
    (tmp_path / "reports" / "summary.json").write_text(json.dumps(second))
    _, third = partial("b_net")
    assert third["kept_from_earlier_runs"] == {"a_net": "the second run", "c_net": first["run"]["started"]}
    (tmp_path / "reports" / "summary.json").write_text('{"models": ')  # nothing usable to keep: this run's rows only
    _, fourth = partial("c_net")
    assert list(fourth["models"]) == ["c_net"] and fourth["run"]["partial"] and "kept_from_earlier_runs" not in fourth
    assert "no earlier summary of these models folders held" in (tmp_path / "reports" / "summary.md").read_text()
