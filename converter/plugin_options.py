"""The harness's options in pytest: declared from the one table, in one namespace (`--tflite-...`,
ini `tflite_...`), so that a repository that declares an option `baseline` or an ini key `reports_dir` of
its own runs as before with the plugin installed.

Two things pytest does before a plugin's options are known are put right here: the rootdir and
ini file it picked from the command line (where an option's value, given with a space, named an
existing folder), and the old spellings from before the namespace, which the plugin never declares
and reads off the command line only where no other plugin or conftest declares the same name.
"""
from __future__ import annotations

import pytest

from .pytest_internals import rootdir_without_option_values
from .settings import (
    BASELINE_UPDATE,
    BY_NAME,
    SETTINGS,
    argparse_help,
    flag_of,
    option_kwargs,
    rename_old_flags,
    value_flags,
)

OLD_SPELLINGS_KEY = pytest.StashKey[list]()  # deprecation notes for the old spellings that were read


def dest(stem: str) -> str:
    return f"tflite_{stem}"  # the names config.getoption reads (each setting's option stem)


def declare(parser) -> None:
    group = parser.getgroup("tflite", "PyTorch -> TFLite conversion harness")
    for setting in SETTINGS:  # every option, ini key and variable comes from the one table
        group.addoption(setting.flag, dest=dest(setting.option), default=None,
                        help=argparse_help(f"{setting.help} [env {setting.env}, ini {setting.ini}]"),
                        **option_kwargs(setting))
        parser.addini(setting.ini, help=setting.help, type=setting.ini_type, default=None)
    group.addoption(flag_of(BASELINE_UPDATE), dest=dest(BASELINE_UPDATE), action="store_true",
                    help="rewrite the baseline from this run instead of gating on it")


def before_conftests(config, parser, args: list[str]) -> None:
    """The rootdir and ini file as pytest would have picked them had it known the options."""
    rootdir_without_option_values(config, parser, args, value_flags())


def after_conftests(config, parser, args: list[str]) -> None:
    """The old spellings that no plugin or initial conftest declares, read as today's (a conftest
    loaded later cannot declare an option of the command line: pytest has parsed it by then)."""
    args[:], notes = rename_old_flags(args, unclaimed=lambda flag: not declared(parser, flag))
    config.stash[OLD_SPELLINGS_KEY] = notes


def declared(parser, flag: str) -> bool:
    """Some plugin or conftest declares `flag` (pytest's parser knows it: given alone, it is
    parsed, or refused for want of its value, instead of being left over as unknown)."""
    try:
        _, unknown = parser.parse_known_and_unknown_args([flag])
    except pytest.UsageError:
        return True
    return flag not in unknown


def given(config) -> list[str]:
    """The harness's options given in this run (on the command line or in addopts), today's spellings."""
    stems = [s.option for s in SETTINGS] + [BASELINE_UPDATE]
    return [flag_of(stem) for stem in stems if config.getoption(dest(stem)) not in (None, False, [])]


def no_models_folder(config, flags: list[str]) -> str:
    """One line: the harness's options were given, but no models folder is set anywhere."""
    models = BY_NAME["models_dirs"]
    read = f"pytest read {config.inipath}" if config.inipath else f"pytest found no ini file; rootdir {config.rootpath}"
    return (f"{', '.join(flags)} given, but no models folder is set: pass {models.flag} DIR, set ${models.env}, "
            f"or set {models.ini} in the ini file ({read})")
