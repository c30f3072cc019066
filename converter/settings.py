"""Every harness setting, declared once (SETTINGS), and the one place it is resolved:
command line > environment > ini > default.

The pytest options, the ini keys, the environment variables and the one-model CLI's flags are
all generated from the table. Values stay plain strings until here (pytest-xdist ships option
values to workers), and come out as one frozen Settings object.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import psutil

from .recipes import check_deliverables
from .slots import machine_slots
from .spec import DEFAULT_TIMEOUT, bounded, parse_shape
from .thresholds import Thresholds, parse_thresholds

ENV_PREFIX = "TFLITE_HARNESS_"
MAX_NAME = 200  # characters of one file name made from an id (room left for ".tflite" and temp prefixes)
MEMORY_SHARE = 0.8  # of physical RAM, split among the conversions that run at once


@dataclass(frozen=True)
class Setting:
    """One harness setting, declared once: its pytest option, ini key, environment variable and
    (where `cli`) the one-model CLI's flag all come from this row, under one name stem."""

    name: str                    # --conversion-timeout / ini conversion_timeout / $TFLITE_HARNESS_CONVERSION_TIMEOUT
    help: str
    default: str | None = None
    limit: str | None = None     # the LIMITS row that bounds it (the same bounds as in sidecars)
    repeatable: bool = False     # the flag may be repeated; environment and ini separate values with ';'
    path: bool = False           # relative to where pytest runs (flag) or to the rootdir (others)
    cli: bool = False            # also a flag of `python -m converter`
    ini_type: str = "string"     # pytest's typed ini keys: "paths", "linelist", "string"
    switch: bool = False         # on/off: a flag without a value; "1", "true", "yes" elsewhere
    aliases: tuple[str, ...] = ()  # old spellings, one release: "cli:--timeout", "ini:default_input_shape", "env:..."

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return self.name

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def old(self, where: str) -> list[str]:
        """Deprecated spellings of one kind: "cli" flags (of `python -m converter`), "ini" keys, "env" variables."""
        return [a.split(":", 1)[1] for a in self.aliases if a.startswith(where + ":")]


SETTINGS: tuple[Setting, ...] = (
    Setting("models_dir", "folder of models to convert, searched recursively (default: the bundled examples)",
            repeatable=True, path=True, ini_type="paths"),
    Setting("tflite_dir", "where the quantized .tflite deliverables go", "tflite_models", path=True, cli=True,
            aliases=("cli:--out",)),
    Setting("reports_dir", "where summary.json/.md/.html, junit.xml (unless --junitxml is given) and "
            "per-model artifacts go", "reports", path=True, cli=True, aliases=("cli:--reports",)),
    Setting("input_shape", "input shape for models whose .toml gives none, e.g. 1,3,224,224 (repeat for "
            "several inputs)", repeatable=True, cli=True, ini_type="linelist",
            aliases=("ini:default_input_shape",)),
    Setting("deliverables", "the TFLite recipes to build and verify, in order of preference, for models whose "
            ".toml names none: fp32, fp16, drq, int8, int8_io (the first that verifies is delivered)", "drq",
            cli=True),
    Setting("conversion_timeout", "seconds one model's conversion may take unless its .toml says otherwise",
            str(DEFAULT_TIMEOUT), limit="timeout", cli=True, aliases=("cli:--timeout", "env:TFLITE_HARNESS_TIMEOUT")),
    Setting("memory_limit_mb", "resident-memory ceiling of one conversion (default: 80% of RAM shared "
            "among workers)", limit="memory_limit_mb", cli=True),
    Setting("conversion_threads", "CPU threads of one conversion (default: the cores shared among workers)",
            limit="threads", cli=True, aliases=("cli:--threads", "env:TFLITE_HARNESS_THREADS")),
    Setting("max_conversions", "conversions at once on this machine, shared by every worker and run (default: "
            "the cores, fewer if memory is short); more workers than this wait for a free slot",
            limit="threads", cli=True),
    Setting("slow_stage_fraction", "while it runs, name a model as slow once one of its stages has taken this "
            "fraction of its timeout", "0.5", limit="fraction", cli=True),
    Setting("diagnosis_share", "share of a model's timeout and of its memory ceiling that the diagnosis of a "
            "float32 mismatch may take (it stops at the first divergence it can prove, or when that runs out)",
            "0.25", limit="fraction", cli=True),
    Setting("fail_on_vacuous", "fail a model whose outputs hardly depend on its input (the numeric check then "
            "proves nothing; by default it passes with a warning)", switch=True, cli=True),
    Setting("status_interval", "seconds between the batch's status lines (which models are converting, in "
            "which stage, for how long); -q turns them off", "10", limit="interval"),
    # not "cache_dir": pytest's own cache provider owns that ini key
    Setting("tflite_cache_dir", "where verified conversions are kept, so that an unchanged model is not "
            "converted again (delete the folder to clear it)", ".tflite_cache", path=True, cli=True),
    Setting("no_cache", "convert every model, even an unchanged one (the cache is neither read nor written)",
            switch=True, cli=True),
    Setting("no_preload", "start every conversion child from scratch instead of forking it from a process that "
            "has imported torch, TensorFlow and onnx2tf once (each model then pays 2-3 s of imports)",
            switch=True),
    Setting("keep_intermediates", "keep every model's ONNX file and SavedModel (by default only a failed "
            "model keeps them, for diagnosis)", switch=True, cli=True),
    Setting("baseline", "baseline file that regressions are judged against", "tflite_baseline.json",
            path=True),
    Setting("regression_threshold", "what counts as a regression, e.g. "
            "err:x2,err_floor:1e-5,size:+10%, or per recipe drq_err:x3,fp32_size:+5%", ""),
)
BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    models_dirs: tuple[Path, ...]
    tflite_dir: Path
    reports_dir: Path
    input_shapes: tuple[tuple[int, ...], ...]
    deliverables: tuple[str, ...]
    timeout: float
    memory_limit_mb: float
    threads: int
    baseline: Path
    thresholds: Thresholds
    sources: dict  # setting -> where its value came from, for the report header
    cache_dir: Path | None = None  # None: --no-cache
    keep_intermediates: bool = False
    preload: bool = True
    max_conversions: int = 1
    slow_stage_fraction: float = 0.5
    diagnosis_share: float = 0.25
    fail_on_vacuous: bool = False
    status_interval: float = 10.0
    deprecations: tuple[str, ...] = ()  # old spellings that were used, each with its new name

    @property
    def artifacts_dir(self) -> Path:
        return self.reports_dir / "artifacts"

    def artifacts_for(self, model_id: str) -> Path:
        # flat, so that clearing model "a"'s folder can never touch model "a/net"'s
        return self.artifacts_dir / file_name(model_id)

    def deliverable_for(self, model_id: str) -> Path:
        return self.tflite_dir / ("/".join(file_name(part) for part in model_id.split("/")) + ".tflite")


def file_name(text: str) -> str:
    """A model id (or one of its path parts) as one inert file name, injectively.

    Percent-encoding keeps letters, digits, '_.-~' and spaces, and encodes '%' and '/' (so
    'a/b' and 'a__b' or 'a%2Fb' stay apart); a leading '.' is encoded too, so no id can name
    '.', '..' or a hidden file, and nothing resolves to an output folder itself or outside it.
    """
    name = urllib.parse.quote(text, safe=" ")
    name = "%2E" + name[1:] if name.startswith(".") else name
    if len(name) > MAX_NAME:  # file systems take 255 bytes; '%XX' triples non-ASCII names
        head = name[:MAX_NAME - 20]
        head = head[:head.rfind("%")] if "%" in head[-2:] else head  # never half an escape
        name = f"{head}~{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    return name


class SettingsError(ValueError):
    pass


def argparse_help(text: str) -> str:
    """argparse %-formats help strings: a bare % (as in '80% of RAM') would crash --help."""
    return text.replace("%", "%%")


def option_kwargs(setting: Setting) -> dict:
    """How a setting is declared as a flag, for pytest's parser and argparse alike."""
    if setting.switch:
        return {"action": "store_true"}
    return {"action": "append" if setting.repeatable else "store", "metavar": setting.name.upper(),
            "type": functools.partial(check_value, setting)}


def check_value(setting: Setting, value: str) -> str:
    """Checked where it is given (a usage error naming the option), kept a plain string for xdist."""
    if setting.path and not value.strip():
        raise argparse.ArgumentTypeError("must name a folder or file, not ''")
    try:
        if setting.limit:
            bounded(setting.limit, value)
        elif setting.name == "input_shape":
            parse_shape(value)
        elif setting.name == "regression_threshold":
            parse_thresholds(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _pick(setting: Setting, cli, env: Mapping[str, str], ini: Mapping[str, object], deprecated: list[str]):
    if cli not in (None, [], ()):
        return cli, "command line"
    for var in [setting.env] + setting.old("env"):
        if env.get(var):
            if var != setting.env:
                deprecated.append(f"${var} is deprecated: use ${setting.env}")
            return env[var], f"${var}"
    for key in [setting.ini] + setting.old("ini"):
        if ini.get(key) not in (None, "", [], ()):
            if key != setting.ini:
                deprecated.append(f"ini key {key} is deprecated: use {setting.ini}")
            return ini[key], f"ini {key}"
    return setting.default, "default"


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _switch(value) -> bool:
    """An on/off setting: a flag, or one of TRUE / FALSE from the environment or ini
    (TFLITE_HARNESS_NO_CACHE=nan is an error, not silently "off")."""
    if value is True or value is False or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise ValueError(f"must be one of {', '.join(TRUE + FALSE[:-1])}, not {value!r}")


def _split(value) -> list[str]:
    if value is None:
        return []
    parts = value if isinstance(value, (list, tuple)) else [value]
    return [p.strip() for part in parts for p in str(part).replace("\n", ";").split(";") if p.strip()]


def resolve(cli: Mapping[str, object], env: Mapping[str, str] | None = None,
            ini: Mapping[str, object] | None = None, *, workers: int = 1, base: Path | None = None,
            deprecated: Iterable[str] = ()) -> Settings:
    """cli: setting name -> value given on the command line; ini: ini key -> value (pytest's getini)."""
    env = os.environ if env is None else env
    ini = ini or {}
    base = Path(base or Path.cwd())
    workers = max(1, int(workers))
    notes = list(deprecated)
    picked = {s.name: _pick(s, cli.get(s.name), env, ini, notes) for s in SETTINGS}
    sources = {name: where for name, (_, where) in picked.items()}
    for setting in SETTINGS:
        given = picked[setting.name][0]
        if not setting.repeatable and isinstance(given, (list, tuple)):  # tflite_dir = ["x", "y"] in TOML
            raise SettingsError(f"{setting.name} from {sources[setting.name]} must be one value, not a list")
        if setting.path and given is not None and not str(given).strip():
            raise SettingsError(f"{setting.name} from {sources[setting.name]} must name a folder or file, not ''")

    def value(name):
        return picked[name][0]

    def checked(name, parse):
        try:
            return parse(value(name))
        except ValueError as exc:
            joint = " " if str(exc).startswith("must") else ": "
            raise SettingsError(f"{name} from {sources[name]}{joint}{exc}") from None

    def number(name):
        return None if value(name) is None else checked(name, lambda v: bounded(BY_NAME[name].limit, v))

    def switch(name):
        return checked(name, _switch)

    shapes = checked("input_shape", lambda v: tuple(parse_shape(s) for s in _split(v)))
    thresholds = checked("regression_threshold", parse_thresholds)
    slots = number("max_conversions") or machine_slots()
    at_once = min(workers, slots)  # conversions that really run side by side share the machine
    memory = number("memory_limit_mb")
    if memory is None:
        memory = MEMORY_SHARE * psutil.virtual_memory().total / 2**20 / at_once
    return Settings(
        models_dirs=tuple(base / d for d in _split(value("models_dir"))),
        tflite_dir=base / str(value("tflite_dir")),
        reports_dir=base / str(value("reports_dir")),
        input_shapes=shapes,
        deliverables=checked("deliverables", check_deliverables),
        timeout=number("conversion_timeout"),
        memory_limit_mb=round(memory),
        threads=number("conversion_threads") or max(1, (os.cpu_count() or 1) // at_once),
        baseline=base / str(value("baseline")),
        thresholds=thresholds,
        sources=sources,
        cache_dir=None if switch("no_cache") else base / str(value("tflite_cache_dir")),
        keep_intermediates=switch("keep_intermediates"),
        preload=not switch("no_preload"),
        max_conversions=slots,
        slow_stage_fraction=number("slow_stage_fraction"),
        diagnosis_share=number("diagnosis_share"),
        fail_on_vacuous=switch("fail_on_vacuous"),
        status_interval=number("status_interval"),
        deprecations=tuple(dict.fromkeys(notes)),
    )
