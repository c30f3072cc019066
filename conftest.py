pytest_plugins = ["converter.pytest_plugin"]
