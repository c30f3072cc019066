"""The one place where harness settings are resolved: command line > environment > ini > default.

Values stay plain strings until here (pytest-xdist ships option values to workers), and
come out as one frozen Settings object.
"""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple

import psutil

from .baseline import Thresholds, parse_thresholds
from .spec import DEFAULT_TIMEOUT, bounded, parse_shape

ENV_PREFIX = "TFLITE_HARNESS_"
MEMORY_SHARE = 0.8  # of physical RAM, split among parallel workers

class Setting(NamedTuple):
    env: str
    ini: str
    default: str | None
    help: str


SETTINGS = {  # name -> where it can come from
    "models_dir": Setting(ENV_PREFIX + "MODELS_DIR", "models_dir", None,
        "folder of models to convert, searched recursively (repeatable; "
        "default: the bundled examples)"),
    "tflite_dir": Setting(ENV_PREFIX + "TFLITE_DIR", "tflite_dir", "tflite_models",
        "where the quantized .tflite deliverables go"),
    "reports_dir": Setting(ENV_PREFIX + "REPORTS_DIR", "reports_dir", "reports",
        "where summary.json/.md/.html and per-model artifacts go"),
    "input_shape": Setting(ENV_PREFIX + "INPUT_SHAPE", "default_input_shape", None,
        "input shape for models without one in a .toml, e.g. 1,3,224,224 "
        "(repeat for several inputs; environment/ini: separate inputs with ';')"),
    "timeout": Setting(ENV_PREFIX + "TIMEOUT", "conversion_timeout", str(DEFAULT_TIMEOUT),
        "seconds one model's conversion may take unless its .toml says otherwise"),
    "memory_limit_mb": Setting(ENV_PREFIX + "MEMORY_LIMIT_MB", "memory_limit_mb", None,
        "resident-memory ceiling of one conversion (default: 80% of RAM shared "
        "among workers)"),
    "threads": Setting(ENV_PREFIX + "THREADS", "conversion_threads", None,
        "CPU threads of one conversion (default: the cores shared among workers)"),
    "baseline": Setting(ENV_PREFIX + "BASELINE", "baseline", "model_cases/baseline.json",
        "baseline file that regressions are judged against"),
    "regression_threshold": Setting(ENV_PREFIX + "REGRESSION_THRESHOLD", "regression_threshold", "",
        "what counts as a regression, e.g. drq_err:x2,fp32_err:x2,err_floor:1e-5,size:+10%"),
}


@dataclass(frozen=True)
class Settings:
    models_dirs: tuple[Path, ...]
    tflite_dir: Path
    reports_dir: Path
    input_shapes: tuple[tuple[int, ...], ...]
    timeout: float
    memory_limit_mb: float
    threads: int
    baseline: Path
    thresholds: Thresholds
    sources: dict  # setting -> where its value came from, for the report header

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
    return "%2E" + name[1:] if name.startswith(".") else name


class SettingsError(ValueError):
    pass


def argparse_help(text: str) -> str:
    """argparse %-formats help strings: a bare % (as in '80% of RAM') would crash --help."""
    return text.replace("%", "%%")


def _pick(name: str, cli, env: Mapping[str, str], ini: Mapping[str, str]):
    env_var, ini_key, default, _ = SETTINGS[name]
    if cli not in (None, [], ()):
        return cli, "command line"
    if env.get(env_var):
        return env[env_var], f"${env_var}"
    if ini.get(ini_key):
        return ini[ini_key], f"ini {ini_key}"
    return default, "default"


def _split(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [p.strip() for p in str(value).replace("\n", ";").split(";") if p.strip()]


def resolve(cli: Mapping[str, object], env: Mapping[str, str] | None = None,
            ini: Mapping[str, str] | None = None, *, workers: int = 1, base: Path | None = None) -> Settings:
    env = os.environ if env is None else env
    ini = ini or {}
    base = Path(base or Path.cwd())
    workers = max(1, int(workers))
    picked = {name: _pick(name, cli.get(name), env, ini) for name in SETTINGS}
    sources = {name: where for name, (_, where) in picked.items()}

    def number(name):
        value, where = picked[name]
        if value is None:
            return None
        try:
            return bounded(name, value)
        except ValueError as exc:
            raise SettingsError(f"{name} from {where} {exc}") from None

    dirs = [base / d for d in _split(picked["models_dir"][0])]
    try:
        shapes = tuple(parse_shape(s) for s in _split(picked["input_shape"][0]))
    except ValueError as exc:
        raise SettingsError(f"input_shape from {sources['input_shape']}: {exc}") from None
    try:
        thresholds = parse_thresholds(picked["regression_threshold"][0])
    except ValueError as exc:
        raise SettingsError(f"regression_threshold from {sources['regression_threshold']}: {exc}") from None
    cpus = os.cpu_count() or 1
    memory = number("memory_limit_mb")
    if memory is None:
        memory = MEMORY_SHARE * psutil.virtual_memory().total / 2**20 / workers
    threads = number("threads") or max(1, cpus // workers)
    return Settings(
        models_dirs=tuple(dirs),
        tflite_dir=base / str(picked["tflite_dir"][0]),
        reports_dir=base / str(picked["reports_dir"][0]),
        input_shapes=shapes,
        timeout=number("timeout"),
        memory_limit_mb=round(memory),
        threads=threads,
        baseline=base / str(picked["baseline"][0]),
        thresholds=thresholds,
        sources=sources,
    )
