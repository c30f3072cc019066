"""The repository's own pytest configuration, with every plugin on."""
from __future__ import annotations


def test_the_shipped_configuration_runs_with_every_plugin_on():
    """An ini key or option that pytest or a plugin already owns (the cache provider's cache_dir)
    breaks every run at configure time: collect with the repo's own configuration, cache on."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "model_cases"],
                          capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0 and "INTERNALERROR" not in proc.stdout + proc.stderr, proc.stdout[-2000:]
    assert "model_cases/examples/resnet_tiny.pt2::resnet_tiny" in proc.stdout
