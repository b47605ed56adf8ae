import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cnnprof.cli import app
from cnnprof.models.zoo import CONFIG_DIR

GOLDEN = {k: v for k, v in json.loads((Path(__file__).parent / "golden.json").read_text()).items()
          if not k.startswith("_")}
ZOO = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


class Cli:
    """Invoke the Typer app in-process; returns the result with .exit_code, .stdout, .stderr."""

    def __init__(self):
        self.runner = CliRunner()

    def __call__(self, *args: str):
        return self.runner.invoke(app, list(args))

    def json(self, *args: str):
        result = self(*args, "--format", "json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def cli():
    return Cli()


@pytest.fixture(autouse=True)
def _private_device_cache(tmp_path, monkeypatch):
    """Device profiles (cnnprof device) go to an empty temporary cache per test, never the user's."""
    monkeypatch.setenv("CNNPROF_CACHE_DIR", str(tmp_path / "cnnprof-cache"))


@pytest.fixture(autouse=True)
def _no_terminal_size(monkeypatch):
    """Tables take their width from COLUMNS when stdout is not a terminal: every test starts without it (as
    CI does), whoever runs the suite (pytest-xdist's workers set it); a test that needs one sets its own."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
