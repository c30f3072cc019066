"""The main job: one test per discovered model (ids are model names, so `-k name` works).

The plugin (converter/pytest_plugin.py) parametrizes `model_case` from the models folder
and the `conversion` fixture converts it in an isolated child process.
"""
from converter.assertions import assert_conversion


def test_model(model_case, conversion):
    assert_conversion(conversion, model_case.spec.expect if model_case.spec else None)
