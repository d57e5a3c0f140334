"""The Ray Jobs specs under jobs/ agree with pyproject.toml and keep secrets out of files."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _normalized(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower()


def test_runtime_env_pip_list_mirrors_pyproject_dependencies():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    packages = spec["pip"]["packages"]
    assert sorted(map(_normalized, packages)) == sorted(map(_normalized, deps))
    assert not any(p.strip().startswith(("-e", ".")) for p in packages)  # pip runs elsewhere
    assert spec["working_dir"] == "." and ".venv" in spec["excludes"]


def test_specs_pass_hf_token_through_and_write_no_secret():
    spec = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    assert spec["env_vars"]["HF_TOKEN"] == "${HF_TOKEN}"
    for name in ("runtime_env.yaml", "rayjob-kuberay.yaml", "cluster-gpu.yaml", "README.md"):
        text = (REPO / "jobs" / name).read_text()
        assert not re.search(r"hf_[A-Za-z0-9]{20,}", text), f"a token is written in {name}"
    kuberay = (REPO / "jobs" / "rayjob-kuberay.yaml").read_text()
    assert "secretKeyRef" in kuberay and "HF_HOME" in kuberay
    assert "HF_HOME" in (REPO / "jobs" / "cluster-gpu.yaml").read_text()
