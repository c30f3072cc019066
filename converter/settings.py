"""Every harness setting, declared once (SETTINGS), and the one place it is resolved:
command line > environment > ini > default.

The pytest options, the ini keys, the environment variables and the one-model CLI's flags are
all generated from the table. A pytest plugin installed everywhere must never take a generic name,
so every pytest option and ini key of the harness is in one namespace (NAMESPACE: `--tflite-...`,
`tflite_...`); the environment's are prefixed already (TFLITE_HARNESS_), and the one-model CLI,
a process of its own, also takes the short spellings (`--reports-dir`). Values stay plain strings
until here (pytest-xdist ships option values to workers), and come out as one frozen Settings object.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import psutil

from .recipes import DEFAULT_DELIVERABLES, RECIPES, check_deliverables
from .slots import machine_slots
from .spec import DEFAULT_TIMEOUT, DEFAULT_VERIFY_SAMPLES, ENGINE_CHOICES, bounded, parse_shape, str_choice
from .thresholds import Thresholds, parse_thresholds

ENV_PREFIX = "TFLITE_HARNESS_"
NAMESPACE = "tflite_"  # of every pytest option and ini key: pytest shares one set of names among all plugins and conftests
MAX_NAME = 200  # characters of one file name made from an id (room left for ".tflite" and temp prefixes)
MEMORY_SHARE = 0.8  # of physical RAM, split among the conversions that run at once
# a source checkout (the README's set-up command ran in it), not a package installed in another repository
CHECKOUT = Path(__file__).resolve().parent.parent
IN_CHECKOUT = (CHECKOUT / "requirements_litert.txt").is_file()
# where the litert engine's environment is: beside the checkout's .venv; for an installed harness, in the
# repository it runs in (a relative default is resolved against the rootdir, like every path setting)
LITERT_PYTHON = (CHECKOUT if IN_CHECKOUT else Path()) / ".venv-litert" / (
    "Scripts/python.exe" if os.name == "nt" else "bin/python")


@dataclass(frozen=True)
class Resolving:
    """What a setting's value may depend on beyond its own: how many conversions the machine
    takes and really runs side by side, and the other settings as read."""

    slots: int                   # the machine's conversion slots (max_conversions)
    at_once: int                 # conversions that really run side by side share the machine
    values: Mapping[str, object]


@dataclass(frozen=True)
class Setting:
    """One harness setting, declared once: its Settings field, pytest option, ini key, environment
    variable and (where `cli`) the one-model CLI's flag all come from this row. `name` is the
    Settings field it fills; `option` the one stem of its user-facing spellings, where it differs:
    `--tflite-<stem>` and `tflite_<stem>` in pytest (a stem that starts with `tflite_` already keeps
    it once), `$TFLITE_HARNESS_<STEM>`, and `--<stem>` or `--tflite-<stem>` on the CLI
    (tests/test_tables.py fails when the table and the Settings fields drift apart)."""

    name: str                    # the Settings field
    help: str
    default: str | None = None
    option: str = ""             # --tflite-conversion-timeout, ini tflite_conversion_timeout, $TFLITE_HARNESS_CONVERSION_TIMEOUT
    limit: str | None = None     # the LIMITS row that bounds it (the same bounds as in sidecars)
    repeatable: bool = False     # the flag may be repeated; environment and ini separate values with ';'
    path: bool = False           # relative to where pytest runs (flag) or to the rootdir (others)
    cli: bool = False            # also a flag of `python -m converter`
    ini_type: str = "string"     # pytest's typed ini keys: "paths", "linelist", "string"
    switch: bool = False         # on/off: a flag without a value; "1", "true", "yes" elsewhere
    aliases: tuple[str, ...] = ()  # old spellings, one release: "cli:--timeout", "env:TFLITE_HARNESS_TIMEOUT"
    parse: Callable[[str], object] | None = None  # a value that is neither a path, a number nor a switch
    check_given: Callable[[str], object] | None = None  # checks a flag's value where it is given (one of them)
    # what the value becomes once every setting is read (a default that depends on the machine)
    then: Callable[[object, Resolving], object] | None = None

    def __post_init__(self):
        if not self.option:
            object.__setattr__(self, "option", self.name)

    @property
    def flag(self) -> str:
        """The pytest option (also taken by the CLI and the merge)."""
        return flag_of(self.option)

    @property
    def short_flag(self) -> str:
        """The CLI's and the merge's own spelling; in pytest, a deprecated one (see renamed_flags)."""
        return "--" + self.option.replace("_", "-")

    @property
    def ini(self) -> str:
        return namespaced(self.option)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.option.upper()

    def old(self, where: str) -> list[str]:
        """Deprecated spellings of one kind: "cli" flags (of `python -m converter`), "env" variables. No old ini
        key is kept: an ini key is one name shared by pytest, every plugin and every conftest (a later
        `addini` of the same name replaces the earlier without a word), so an alias could read another
        tool's value as the harness's."""
        return [a.split(":", 1)[1] for a in self.aliases if a.startswith(where + ":")]


def namespaced(stem: str) -> str:
    return stem if stem.startswith(NAMESPACE) else NAMESPACE + stem


def flag_of(stem: str) -> str:
    return "--" + namespaced(stem).replace("_", "-")


def _shapes(value) -> tuple[tuple[int, ...], ...]:
    return tuple(parse_shape(s) for s in _split(value))


_engine = str_choice(ENGINE_CHOICES)


def _memory(mb, r: Resolving) -> int:
    return round(mb if mb is not None else MEMORY_SHARE * psutil.virtual_memory().total / 2**20 / r.at_once)


SETTINGS: tuple[Setting, ...] = (
    Setting("models_dirs", "folder of models to convert, searched recursively (default: the bundled examples)",
            option="models_dir", repeatable=True, path=True, ini_type="paths"),
    Setting("tflite_dir", "where the quantized .tflite deliverables go", "tflite_models", path=True, cli=True,
            aliases=("cli:--out",)),
    Setting("reports_dir", "where summary.json/.md/.html, junit.xml (unless --junitxml is given) and "
            "per-model artifacts go", "reports", path=True, cli=True, aliases=("cli:--reports",)),
    Setting("input_shapes", "input shape for models whose .toml gives none, e.g. 1,3,224,224 (repeat for "
            "several inputs)", option="input_shape", repeatable=True, cli=True, ini_type="linelist",
            parse=_shapes, check_given=parse_shape),
    Setting("deliverables", "the TFLite recipes to build and verify, in order of preference, for models whose "
            f".toml names none: {', '.join(RECIPES)} (the first that verifies is delivered)",
            ",".join(DEFAULT_DELIVERABLES), cli=True, parse=check_deliverables),
    Setting("engine", "the conversion route for models whose .toml names none: onnx2tf (torch -> ONNX -> onnx2tf "
            "-> TFLiteConverter), litert (litert-torch: torch.export -> TFLite, in its own environment), or auto "
            "(onnx2tf, and litert where onnx2tf fails or gets float32 wrong)", "auto", cli=True, parse=_engine,
            check_given=_engine),
    Setting("litert_python", "the interpreter of the litert engine's environment (made by the README's set-up "
            "command)", str(LITERT_PYTHON), path=True, cli=True),
    Setting("verify_samples", "seeded inputs every TFLite file is verified on, for models whose .toml sets none "
            "and that have no calibration folder (with one, its held-out samples are)", str(DEFAULT_VERIFY_SAMPLES),
            limit="verify_samples", cli=True),
    Setting("timeout", "seconds one model's conversion may take unless its .toml says otherwise",
            str(DEFAULT_TIMEOUT), option="conversion_timeout", limit="timeout", cli=True,
            aliases=("cli:--timeout", "env:TFLITE_HARNESS_TIMEOUT")),
    Setting("memory_limit_mb", "resident-memory ceiling of one conversion (default: 80% of RAM shared "
            "among workers)", limit="memory_limit_mb", cli=True, then=_memory),
    Setting("threads", "CPU threads of one conversion (default: the cores shared among workers)",
            option="conversion_threads", limit="threads", cli=True, aliases=("cli:--threads", "env:TFLITE_HARNESS_THREADS"),
            then=lambda n, r: n or max(1, (os.cpu_count() or 1) // r.at_once)),
    Setting("max_conversions", "conversions at once on this machine, shared by every worker and run (default: "
            "the cores, fewer if memory is short); more workers than this wait for a free slot",
            limit="threads", cli=True, then=lambda n, r: r.slots),
    Setting("slow_stage_fraction", "while it runs, name a model as slow once one of its stages has taken this "
            "fraction of its timeout", "0.5", limit="fraction", cli=True),
    Setting("diagnosis_share", "share of a model's timeout and of its memory ceiling that the diagnosis of a "
            "float32 mismatch may take (it stops at the first divergence it can prove, or when that runs out)",
            "0.25", limit="fraction", cli=True),
    Setting("fail_on_vacuous", "fail a model whose outputs hardly depend on its input (the numeric check then "
            "proves nothing; by default it passes with a warning)", switch=True, cli=True),
    Setting("status_interval", "seconds between the batch's status lines (which models are converting, in "
            "which stage, for how long); -q turns them off", "10", limit="interval"),
    # its option is not "cache_dir": pytest's own cache provider owns that ini key
    Setting("cache_dir", "where verified conversions are kept, so that an unchanged model is not "
            "converted again (delete the folder to clear it)", ".tflite_cache", option="tflite_cache_dir",
            path=True, cli=True, then=lambda path, r: None if r.values["no_cache"] else path),
    Setting("no_cache", "convert every model, even an unchanged one (the cache is neither read nor written)",
            switch=True, cli=True),
    Setting("preload", "start every conversion child from scratch instead of forking it from a process that "
            "has imported torch, TensorFlow and onnx2tf once (each model then pays 2-3 s of imports)",
            option="no_preload", switch=True, then=lambda no_preload, r: not no_preload),
    Setting("keep_intermediates", "keep every model's ONNX file and SavedModel (by default only a failed "
            "model keeps them, for diagnosis)", switch=True, cli=True),
    Setting("baseline", "baseline file that regressions are judged against", "tflite_baseline.json",
            path=True),
    Setting("thresholds", "what counts as a regression, e.g. "
            "err:x2,err_floor:1e-5,size:+10%, or per recipe drq_err:x3,fp32_size:+5%", "",
            option="regression_threshold", parse=parse_thresholds, check_given=parse_thresholds),
)
BY_NAME = {s.name: s for s in SETTINGS}
BY_OPTION = {s.option: s for s in SETTINGS}
BASELINE_UPDATE = "baseline_update"  # a switch of the pytest plugin and the merge, never a setting of the environment or ini


def renamed_flags() -> dict[str, str]:
    """The pytest options' spellings from before the namespace -> today's (`--reports-dir` ->
    `--tflite-reports-dir`). The plugin never declares the old ones (a repository whose conftest
    declares `--baseline` would fail to start): it reads them off the command line only where no
    other plugin or conftest declares the name (rename_old_flags)."""
    stems = [s.option for s in SETTINGS] + [BASELINE_UPDATE]
    return {"--" + stem.replace("_", "-"): flag_of(stem) for stem in stems if not stem.startswith(NAMESPACE)}


def value_flags() -> set[str]:
    """Every pytest spelling of a setting that takes a value, old or new: pytest may have taken the
    value that follows it for a path to test (see pytest_internals.rootdir_without_option_values)."""
    renamed = renamed_flags()
    return {f for s in SETTINGS if not s.switch for f in (s.flag, *[o for o, n in renamed.items() if n == s.flag])}


def rename_old_flags(args: list[str], unclaimed: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """The command line with each old spelling that `unclaimed(old)` says no one else declares
    replaced by today's (`--baseline x` or `--baseline=x`), and a deprecation note for each.
    Nothing after a bare `--` is touched."""
    renamed = renamed_flags()
    out: list[str] = []
    notes: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            out.extend(args[i:])
            break
        name, eq, value = arg.partition("=")
        if name in renamed and unclaimed(name):
            out.append(renamed[name] + eq + value)
            notes.append(f"{name} is deprecated: use {renamed[name]}")
        else:
            out.append(arg)
    return out, list(dict.fromkeys(notes))


def values_of(args: list[str], flags: set[str]) -> list[str]:
    """The values given to `flags` as a token of their own (`--tflite-dir /x`, not `--tflite-dir=/x`)."""
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in flags and "--" not in args[:i]]


@dataclass(frozen=True)
class Settings:
    """One field per SETTINGS row, of the same name, and the old spellings that were used."""

    models_dirs: tuple[Path, ...]
    tflite_dir: Path
    reports_dir: Path
    input_shapes: tuple[tuple[int, ...], ...]
    deliverables: tuple[str, ...]
    verify_samples: int
    timeout: float
    memory_limit_mb: float
    threads: int
    baseline: Path
    thresholds: Thresholds
    cache_dir: Path | None = None  # None: --tflite-no-cache, or a cache folder that cannot be used
    no_cache: bool = False
    keep_intermediates: bool = False
    preload: bool = True
    max_conversions: int = 1
    slow_stage_fraction: float = 0.5
    diagnosis_share: float = 0.25
    fail_on_vacuous: bool = False
    status_interval: float = 10.0
    engine: str = "auto"
    litert_python: Path = LITERT_PYTHON
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
    return {"action": "append" if setting.repeatable else "store", "metavar": setting.option.upper(),
            "type": functools.partial(check_value, setting)}


def check_value(setting: Setting, value: str) -> str:
    """Checked where it is given (a usage error naming the option), kept a plain string for xdist."""
    if setting.path and not value.strip():
        raise argparse.ArgumentTypeError("must name a folder or file, not ''")
    try:
        if setting.limit:
            bounded(setting.limit, value)
        elif setting.check_given is not None:
            setting.check_given(value)
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
    if ini.get(setting.ini) not in (None, "", [], ()):
        return ini[setting.ini], f"ini {setting.ini}"
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
    """cli: option stem (`conversion_timeout`) -> value given on the command line; ini: ini key
    (`tflite_conversion_timeout`) -> value (pytest's getini); deprecated: old spellings already
    read elsewhere (the command line's), said with the others. Each row is read the same way; its
    `then` finishes it."""
    env = os.environ if env is None else env
    ini = ini or {}
    base = Path(base or Path.cwd())
    notes = list(deprecated)
    picked = {s.name: _pick(s, cli.get(s.option), env, ini, notes) for s in SETTINGS}
    values = {s.name: _read(s, *picked[s.name], base) for s in SETTINGS}
    slots = values["max_conversions"] or machine_slots()
    resolving = Resolving(slots, min(max(1, int(workers)), slots), values)
    finished = {s.name: s.then(values[s.name], resolving) if s.then else values[s.name] for s in SETTINGS}
    return Settings(**finished, deprecations=tuple(dict.fromkeys(notes)))


def _read(setting: Setting, given, source: str, base: Path):
    """A setting's value as given (a plain string or list), read as its row says; an error names
    the option and where its value came from."""
    if not setting.repeatable and isinstance(given, (list, tuple)):  # tflite_dir = ["x", "y"] in TOML
        raise SettingsError(f"{setting.option} from {source} must be one value, not a list")
    if setting.path and given is not None and not str(given).strip():
        raise SettingsError(f"{setting.option} from {source} must name a folder or file, not ''")
    try:
        if setting.parse:
            return setting.parse(given)
        if setting.switch:
            return _switch(given)
        if setting.limit:
            return None if given is None else bounded(setting.limit, given)
        if setting.path and setting.repeatable:
            return tuple(base / d for d in _split(given))
        if setting.path:
            return base / str(given)
        return given
    except ValueError as exc:
        joint = " " if str(exc).startswith("must") else ": "
        raise SettingsError(f"{setting.option} from {source}{joint}{exc}") from None
