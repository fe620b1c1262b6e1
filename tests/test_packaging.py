"""The package's metadata: one version, the licence file the metadata names."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import yaml

import mvseg

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_stated_once_and_followed():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]  # from mvseg.__version__
    assert importlib.metadata.version("mvseg") == mvseg.__version__
    assert str(yaml.safe_load((ROOT / "CITATION.cff").read_text())["version"]) == mvseg.__version__


def test_the_licence_is_the_one_the_metadata_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
