"""One-model command line: `python -m converter MODEL_FILE [options]` (argument parsing only)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from . import __version__, cache
from .discovery import Case
from .lifeline import Terminated, terminate_on_sigterm
from .live import StageTicker
from .output_folders import OutputsError, prepare
from .report import format_result
from .runner import convert_case
from .settings import BY_NAME, SETTINGS, SettingsError, argparse_help, option_kwargs, resolve
from .spec import EXPORTERS, LAYOUTS, SpecError, defaults_layer, load_spec

OVERRIDES_TOML = ("input_shape", "conversion_timeout", "memory_limit_mb", "verify_samples")  # given here, they beat the .toml


# what this command writes there (the batch's help says what pytest writes)
OWN_HELP = {"reports_dir": "where the model's artifacts go: artifacts/<id>/ with result.json, convert.log and "
                           "its TFLite files"}


def program_name() -> str:
    """`python -m converter`, or the console script's name (`tflite-harness`)."""
    name = Path(sys.argv[0]).name
    return "python -m converter" if name in ("__main__.py", "") else name


class OneLineParser(argparse.ArgumentParser):
    """A bad option value is one line: the 16-line usage block before it buried the error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=program_name(), allow_abbrev=False,  # "--thr" would be an old spelling, unnoticed
        description="Convert one PyTorch model to a verified, dynamic-range-quantized TFLite file.")
    parser.add_argument("model", type=Path, help="a .pt/.pth (TorchScript, state_dict, pickle) or .pt2 file")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for setting in SETTINGS:  # the harness settings this CLI shares, from the one table
        if setting.cli:
            note = " (given here, it overrides the model's .toml)" if setting.option in OVERRIDES_TOML else ""
            # its own short spelling, and the pytest option's, so that either can be copied across
            spellings = dict.fromkeys((setting.short_flag, setting.flag, *setting.old("cli")))
            parser.add_argument(*spellings, dest=setting.option, default=None,
                                help=argparse_help(f"{OWN_HELP.get(setting.option, setting.help)}{note} [env {setting.env}]"),
                                **option_kwargs(setting))
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow loading a full pickled nn.Module (runs code from the file)")
    parser.add_argument("--exporter", choices=EXPORTERS, help="ONNX exporter strategy (default: auto)")
    parser.add_argument("--layout", choices=LAYOUTS, help="TFLite input layout (default: nhwc)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    given = [a.split("=", 1)[0] for a in argv]
    deprecated = [f"{old} is deprecated: use {s.short_flag}" for s in SETTINGS for old in s.old("cli") if old in given]
    try:
        batch_only = {var for s in SETTINGS if not s.cli for var in [s.env] + s.old("env")}
        env = {k: v for k, v in os.environ.items() if k not in batch_only}  # not this CLI's business
        settings = resolve({s.option: getattr(args, s.option) for s in SETTINGS if s.cli}, env, deprecated=deprecated)
    except SettingsError as exc:
        parser.error(str(exc))
    # one model: a preloaded process would import the same libraries and then fork, for nothing
    settings = dataclasses.replace(settings, preload=False)
    for note in settings.deprecations:
        print(f"{parser.prog}: warning: {note}", file=sys.stderr)
    overrides = {}
    if args.input_shape:
        overrides["inputs"] = defaults_layer(args.input_shape)["inputs"]
    if args.trust_pickle:
        overrides["trust_pickle"] = True
    for key in ("exporter", "layout"):
        if getattr(args, key):
            overrides[key] = getattr(args, key)
    # given for this one model, they beat its .toml (the batch harness treats them as defaults)
    if args.conversion_timeout is not None:
        overrides["timeout"] = settings.timeout
    if args.memory_limit_mb is not None:
        overrides["memory_limit_mb"] = float(settings.memory_limit_mb)
    if args.deliverables is not None:
        overrides["deliverables"] = settings.deliverables
    if args.engine is not None:
        overrides["engine"] = settings.engine
    if args.verify_samples is not None:
        overrides["verify_samples"] = settings.verify_samples
    # absolute (the child runs elsewhere) but not resolved: a model stored as a symbolic link (git-annex,
    # DVC) keeps its own name and the .toml beside the link; a FIFO or a device fails in the child, saying so
    model = Path(os.path.abspath(args.model))
    if model.is_dir() or not os.path.lexists(model):
        parser.exit(2, f"{parser.prog}: error: {args.model}: {'is a folder' if model.is_dir() else 'no such file'}"
                       " (give one model file; a folder of models is the batch's job: pytest model_cases "
                       f"{BY_NAME['models_dirs'].flag} DIR)\n")
    model_id = model.stem
    try:
        spec = load_spec(model, model_id, defaults=defaults_layer(settings.input_shapes, timeout=settings.timeout,
                                                                  deliverables=settings.deliverables,
                                                                  engine=settings.engine,
                                                                  verify_samples=settings.verify_samples),
                         overrides=overrides)
        case = Case(model_id, model, model.parent, spec)
    except SpecError as exc:
        case = Case(model_id, model, model.parent, None, str(exc))
    try:
        lock = prepare(settings.tflite_dir, settings.reports_dir)
    except OutputsError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    settings, note = cache.usable(settings)
    if note:
        print(f"{parser.prog}: warning: {note}", file=sys.stderr)
    terminate_on_sigterm()
    ticker = StageTicker(model_id, case.spec.timeout if case.spec else settings.timeout, settings.slow_stage_fraction)
    try:
        result = convert_case(case, settings, on_progress=ticker)
    except Terminated:  # the child's group is already killed; nothing was delivered
        ticker.close()
        print(f"{parser.prog}: terminated by SIGTERM during the conversion of {model_id}", file=sys.stderr)
        return 128 + 15
    finally:
        lock.release()
    ticker.close(None if result.cache_hit else result.stage_seconds)  # a hit's stages ran in another run
    print(format_result(result, settings))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
