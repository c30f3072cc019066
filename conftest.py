# This checkout's plugin (an installed copy loads the same module through its pytest11 entry
# point, registered under the same name, so it is never loaded twice).
pytest_plugins = ["converter.pytest_plugin"]
