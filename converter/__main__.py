"""One-model command line: `python -m converter MODEL_FILE [options]` (argument parsing only)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .discovery import Case
from .lifeline import terminate_on_sigterm
from .output_folders import OutputsError, prepare
from .report import format_result
from .runner import convert_case
from .settings import SETTINGS, SettingsError, argparse_help, resolve
from .spec import EXPORTERS, LAYOUTS, SpecError, defaults_layer, load_spec, parse_shape


def _shape(text: str):
    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m converter",
        description="Convert one PyTorch model to a verified, dynamic-range-quantized TFLite file.")
    parser.add_argument("model", type=Path, help="a .pt/.pth (TorchScript, state_dict, pickle) or .pt2 file")
    parser.add_argument("--input-shape", action="append", type=_shape, default=[],
                        help="static input shape like 1,3,224,224; repeat for several inputs "
                             "(overrides the model's .toml)")
    parser.add_argument("--out", default=None, help=argparse_help(f"deliverables folder ({SETTINGS['tflite_dir'].help}; "
                                                                  "default tflite_models)"))
    parser.add_argument("--reports", default=None, help="reports folder, artifacts go to REPORTS/artifacts/<name>/ "
                                                        "(default: reports)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow loading a full pickled nn.Module (runs code from the file)")
    parser.add_argument("--exporter", choices=EXPORTERS, help="ONNX exporter strategy (default: auto)")
    parser.add_argument("--layout", choices=LAYOUTS, help="TFLite input layout (default: nhwc)")
    parser.add_argument("--timeout", help=argparse_help(SETTINGS["timeout"].help))
    parser.add_argument("--memory-limit-mb", help=argparse_help(SETTINGS["memory_limit_mb"].help))
    parser.add_argument("--threads", help=argparse_help(SETTINGS["threads"].help))
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = resolve({"tflite_dir": args.out, "reports_dir": args.reports, "timeout": args.timeout,
                            "memory_limit_mb": args.memory_limit_mb, "threads": args.threads})
    except SettingsError as exc:
        parser.error(str(exc))
    overrides = {}
    if args.input_shape:
        overrides["inputs"] = defaults_layer([",".join(map(str, s)) for s in args.input_shape])["inputs"]
    if args.trust_pickle:
        overrides["trust_pickle"] = True
    for key in ("exporter", "layout"):
        if getattr(args, key):
            overrides[key] = getattr(args, key)
    # given for this one model, they beat its .toml (the batch harness treats them as defaults)
    if args.timeout is not None:
        overrides["timeout"] = settings.timeout
    if args.memory_limit_mb is not None:
        overrides["memory_limit_mb"] = float(settings.memory_limit_mb)
    model = args.model.resolve()  # the child runs elsewhere: a path relative to here means nothing there
    model_id = model.stem
    try:
        spec = load_spec(model, model_id, defaults=defaults_layer(settings.input_shapes,
                                                                  timeout=settings.timeout),
                         overrides=overrides)
        case = Case(model_id, model, model.parent, spec)
    except SpecError as exc:
        case = Case(model_id, model, model.parent, None, str(exc))
    try:
        lock = prepare(settings.tflite_dir, settings.reports_dir)
    except OutputsError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    terminate_on_sigterm()
    try:
        result = convert_case(case, settings)
    finally:
        lock.release()
    print(format_result(result, settings))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
