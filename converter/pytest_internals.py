"""The three places the plugin reaches into pytest's private modules, kept together, each with the
release it was checked against and the test that fails when that release changes it.

Everything else the plugin does goes through public hooks and methods: xdist's
`pytest_handlecrashitem` names the item a dead worker was running, `TerminalReporter.write_line`
writes to the terminal, `Config.get_terminal_writer` says whether a line is open.
"""
from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path

from .failures import is_disk_full

# the ini key pytest reads (by this very name) to stop escaping non-ASCII in ids
NO_ESCAPING_INI = "disable_test_id_escaping_and_forfeit_all_rights_to_community_support"


def escaped_id(model_id: str, config) -> str:
    """A model id as pytest writes it into a parametrized test's node id: non-ASCII escaped
    ('模型' reads '\\u6a21\\u578b'), unless the ini key that turns that off is set.

    Why it is still needed: under xdist the controller is handed node ids only (the ids each
    worker collected, and the item a dead worker was running), and your own test taking
    `model_case` is named `test_x[<escaped id>]`; when a worker dies in its `conversion`
    fixture's setup, no report has named the model yet. pytest has no public function for this
    escaping. Checked against pytest 9.2 (`_pytest.compat.ascii_escaped`);
    tests/test_batch_session.py proves it matches what pytest writes, and tests/test_trust.py
    that a killed worker's model with a Chinese name is still found."""
    from _pytest.compat import ascii_escaped

    if config.getini(NO_ESCAPING_INI):
        return model_id
    return ascii_escaped(model_id)


JUNIT_PROBE_BYTES = 256 * 1024  # a generous JUnit report of a large batch


def guard_junit(config) -> str | None:
    """Before pytest's junitxml writes (its sessionfinish runs after this plugin's): a report it
    cannot write whole would be cut off midway, under a 59-line traceback. Where its folder has no
    room, the stale report is removed and the new one not written, and the reason is one line.

    pytest offers no public handle on its JUnit writer. Checked against pytest 9.2:
    `_pytest.junitxml.xml_key` stashes the `LogXML`, whose `logfile` is the path it writes;
    tests/test_batch_session.py fails when either changes, and the full-disk test in
    tests/test_faults.py covers the whole path."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return None
    path = Path(xml.logfile)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent, prefix=".junit-probe-") as probe:
            probe.write(b"\0" * JUNIT_PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        if not is_disk_full(exc):
            return None  # its own error, as pytest reports it
        path.unlink(missing_ok=True)
        xml.logfile = os.devnull
        return f"the JUnit report cannot be written to {path}: no space left on its disk (the previous one was removed)"
    return None


def message_only(text: str):
    """A failing model's message as its test's report holds it: shown whole in the FAILURES section
    and in JUnit, and not told again after the node id in the short test summary.

    pytest writes a report's `longrepr.reprcrash.message` (or a plain-text longrepr whole) after
    the node id in its short summary, on a CI runner (`CI` set) without shortening it: a message
    would be read twice there. A representation without `reprcrash` gets the node id alone
    there, JUnit takes its text for the failure's message, and xdist carries it from a worker as
    it is (its serialisation keeps `reprcrash: None`). pytest has no public type for it. Checked
    against pytest 9.2 (`_pytest._code.code.ReprExceptionInfo`, `ReprTracebackNative`);
    tests/unit/test_pytest_internals.py fails when they change, and
    tests/e2e/test_plugin.py::test_batch_under_xdist_survives_a_crash_and_a_missing_shape reads
    a whole run's output."""
    from _pytest._code.code import ReprExceptionInfo, ReprTracebackNative

    return ReprExceptionInfo(reprtraceback=ReprTracebackNative([text.rstrip("\n") + "\n"]), reprcrash=None)


def rootdir_without_option_values(config, parser, args: list[str], flags: set[str]) -> bool:
    """Picks pytest's rootdir and ini file again, without the values of the harness's options.

    pytest picks them from the command line's path arguments before it loads installed plugins,
    so it does not know this plugin's options yet: in `pytest --tflite-reports-dir /tmp/run2`
    (a space, not `=`) it takes the existing /tmp/run2 for a path to test, roots the run there,
    and never reads the repository's ini file (no models folder, nothing collected, exit 5).
    Called before the conftests load (pytest_load_initial_conftests), when the options are known:
    where the values of `flags` given as tokens of their own changed what pytest picked, the
    rootdir, the ini file and its values, the `addopts` and `pythonpath` it names, the conftest
    cut-off and the initial paths are set as pytest would have set them. (`minversion` and
    `required_plugins` of that ini file are not checked again.) True when it changed anything.

    pytest has no public way to do this. Checked against pytest 9.2: `determine_setup` in
    `_pytest.config.findpaths`, and the Config attributes `_rootpath`, `_inipath`, `_inicfg`,
    `_ignored_config_files`, `_inicache`; tests/unit/test_batch_session.py fails when one of them
    changes, and tests/e2e/test_plugin.py runs it for real."""
    from _pytest.config.findpaths import determine_setup

    from .settings import values_of

    taken = [v for v in values_of(args, flags) if os.path.exists(Path(config.invocation_params.dir, v))]
    if not taken:
        return False
    ns = config.known_args_namespace
    paths = list(ns.file_or_dir)
    for value in taken:  # an old spelling's value is still among them (the new spellings' are not)
        if value in paths:
            paths.remove(value)
    rootpath, inipath, inicfg, ignored = determine_setup(
        inifile=ns.inifilename, override_ini=ns.override_ini, args=paths, rootdir_cmd_arg=ns.rootdir or None,
        invocation_dir=config.invocation_params.dir)
    ns.file_or_dir = paths
    if (rootpath, inipath) == (config.rootpath, config.inipath):
        return False
    derived_cutoff = str(config.inipath.parent if config.inipath else config.rootpath)
    config._rootpath, config._inipath, config._inicfg, config._ignored_config_files = rootpath, inipath, inicfg, ignored
    config._inicache.clear()
    parser.extra_info.update(rootdir=str(rootpath), inifile=str(inipath))
    addopts = list(config.getini("addopts"))
    if addopts:  # the ini file pytest missed names options and plugins of its own
        args[:] = addopts + args
        config.pluginmanager.consider_preparse(addopts, exclude_only=False)
        config.known_args_namespace = ns = parser.parse_known_args(args, namespace=copy.copy(config.option))
        ns.file_or_dir = [a for a in ns.file_or_dir if a not in taken]
    if ns.confcutdir in (None, derived_cutoff):  # not given: pytest derives it from the ini file
        ns.confcutdir = str(inipath.parent if inipath else rootpath)
    for path in reversed(config.getini("pythonpath")):
        sys.path.insert(0, str(path))
        config.add_cleanup(lambda p=str(path): sys.path.remove(p) if p in sys.path else None)
    return True
