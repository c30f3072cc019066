"""Settings: one table, one resolution point (option > environment > ini > default), bounds shared with sidecars (settings.py)."""
from __future__ import annotations

import pytest

from converter.settings import SettingsError, resolve


def test_settings_precedence_cli_env_ini_default(tmp_path):
    ini = {"tflite_conversion_timeout": "30", "tflite_input_shape": ["1,3,8,8"]}
    assert resolve({}, {}, ini, base=tmp_path).timeout == 30
    assert resolve({}, {"TFLITE_HARNESS_CONVERSION_TIMEOUT": "20"}, ini, base=tmp_path).timeout == 20
    s = resolve({"conversion_timeout": "10"}, {"TFLITE_HARNESS_CONVERSION_TIMEOUT": "20"}, ini, base=tmp_path)
    assert s.timeout == 10
    with pytest.raises(SettingsError, match="conversion_timeout from command line must be a number"):
        resolve({"conversion_timeout": "soon"}, {"TFLITE_HARNESS_CONVERSION_TIMEOUT": "20"}, ini, base=tmp_path)
    assert s.input_shapes == ((1, 3, 8, 8),) and s.deprecations == ()
    assert resolve({}, {}, {}, base=tmp_path).timeout == 600
    two = resolve({}, {}, {}, base=tmp_path, workers=2)
    one = resolve({}, {}, {}, base=tmp_path, workers=1)
    assert two.memory_limit_mb < one.memory_limit_mb and two.threads <= one.threads
    with pytest.raises(SettingsError, match="conversion_timeout from command line must be a number"):
        resolve({"conversion_timeout": "soon"}, {}, {}, base=tmp_path)


def test_old_spellings_still_work_for_one_release_and_say_so(tmp_path):
    s = resolve({}, {"TFLITE_HARNESS_TIMEOUT": "20", "TFLITE_HARNESS_THREADS": "3"}, {}, base=tmp_path,
                deprecated=["--input-shape is deprecated: use --tflite-input-shape"])
    assert (s.timeout, s.threads) == (20, 3)
    assert set(s.deprecations) == {"$TFLITE_HARNESS_TIMEOUT is deprecated: use $TFLITE_HARNESS_CONVERSION_TIMEOUT",
                                   "$TFLITE_HARNESS_THREADS is deprecated: use $TFLITE_HARNESS_CONVERSION_THREADS",
                                   "--input-shape is deprecated: use --tflite-input-shape"}
    # an ini key is shared by every plugin and conftest: the harness reads its own, namespaced, keys only
    assert resolve({}, {}, {"input_shape": ["1,4"], "conversion_timeout": "30"}, base=tmp_path).timeout == 600


def test_old_pytest_spellings_are_read_only_where_no_one_else_declares_them():
    """The plugin never declares `--baseline`: it reads it as `--tflite-baseline` off the command line,
    in either spelling, unless a plugin or conftest declares it (then it is theirs, untouched)."""
    from converter.settings import rename_old_flags, renamed_flags

    renamed = renamed_flags()
    assert renamed["--baseline"] == "--tflite-baseline" and renamed["--baseline-update"] == "--tflite-baseline-update"
    assert "--tflite-dir" not in renamed and "--tflite-cache-dir" not in renamed  # already in the namespace
    args = ["-n", "2", "--baseline", "golden", "--models-dir=models", "--no-cache", "--", "--input-shape"]
    theirs = {"--baseline"}
    new, notes = rename_old_flags(args, unclaimed=lambda flag: flag not in theirs)
    assert new == ["-n", "2", "--baseline", "golden", "--tflite-models-dir=models", "--tflite-no-cache", "--",
                   "--input-shape"]
    assert notes == ["--models-dir is deprecated: use --tflite-models-dir", "--no-cache is deprecated: use --tflite-no-cache"]


def test_the_values_pytest_may_take_for_paths_are_those_of_options_given_with_a_space():
    from converter.settings import value_flags, values_of

    flags = value_flags()
    assert {"--tflite-reports-dir", "--reports-dir", "--tflite-dir", "--tflite-baseline", "--baseline"} <= flags
    assert not {"--tflite-no-cache", "--no-cache", "--tflite-baseline-update"} & flags  # switches take no value
    args = ["--tflite-reports-dir", "/tmp/r", "--tflite-dir=/tmp/t", "--reports-dir", "../x", "tests", "--", "--tflite-dir", "y"]
    assert values_of(args, flags) == ["/tmp/r", "../x"]


def test_a_list_or_an_empty_name_where_one_value_belongs_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="tflite_dir from ini tflite_dir must be one value, not a list"):
        resolve({}, {}, {"tflite_dir": ["x", "y"]}, base=tmp_path)
    with pytest.raises(SettingsError, match="reports_dir from command line must name a folder"):
        resolve({"reports_dir": " "}, {}, {}, base=tmp_path)


def test_every_setting_has_one_stem_for_flag_ini_and_environment():
    from converter.settings import SETTINGS

    for setting in SETTINGS:
        stem = setting.option
        namespaced = stem if stem.startswith("tflite_") else "tflite_" + stem
        assert setting.flag == "--" + namespaced.replace("_", "-") and setting.ini == namespaced
        assert setting.short_flag == "--" + stem.replace("_", "-")
        assert setting.env == "TFLITE_HARNESS_" + stem.upper()


@pytest.mark.parametrize("value", ["inf", "nan", "1e400", "-5"])
def test_non_finite_or_negative_settings_are_refused(tmp_path, value):
    with pytest.raises(SettingsError, match="must be"):
        resolve({"memory_limit_mb": value}, {}, {}, base=tmp_path)
    with pytest.raises(SettingsError, match="must be"):
        resolve({"conversion_timeout": value}, {}, {}, base=tmp_path)


@pytest.mark.parametrize("setting, value, words", [
    ("conversion_timeout", "1e308", "between 1 and 604800"),
    ("memory_limit_mb", "1", "between 64 and"),
    ("conversion_threads", "0", "between 1 and 1024"),
    ("conversion_threads", "2.5", "an integer"),
    ("verify_samples", "0", "between 1 and 1000"),
])
def test_options_environment_and_ini_share_the_sidecar_bounds(tmp_path, setting, value, words):
    env_var = "TFLITE_HARNESS_" + setting.upper()
    for cli, env, where in (({setting: value}, {}, "command line"), ({}, {env_var: value}, f"${env_var}")):
        with pytest.raises(SettingsError) as info:
            resolve(cli, env, {}, base=tmp_path)
        assert f"{setting} from {where}" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("value", ["nan", "maybe", "2"])
def test_a_switch_that_is_neither_on_nor_off_is_refused(value):
    with pytest.raises(SettingsError, match="TFLITE_HARNESS_NO_CACHE"):
        resolve({}, env={"TFLITE_HARNESS_NO_CACHE": value}, ini={})


def test_the_cli_and_the_merge_take_their_short_spellings_and_the_batchs():
    """Processes of their own, they keep `--reports-dir` and take `--tflite-reports-dir` as well, so a
    flag copied from a pytest command line works there, and their messages may name the namespaced one."""
    from converter.__main__ import build_parser as cli
    from converter.merge import build_parser as merge

    for spelling in ("--reports-dir", "--tflite-reports-dir"):
        assert cli().parse_args(["m.pt", spelling, "r"]).reports_dir == "r"
        assert merge().parse_args(["shard", spelling, "r"]).reports_dir == "r"
    args = cli().parse_args(["m.pt", "--tflite-input-shape", "1,4", "--input-shape", "1,2", "--tflite-no-cache"])
    assert (args.input_shape, args.no_cache) == (["1,4", "1,2"], True)
    assert merge().parse_args(["shard", "--tflite-baseline-update"]).baseline_update is True
