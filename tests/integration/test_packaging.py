"""The built wheel ships the Hydra configs (conf/ via the drllm/_conf link), so an installed
package — not only a checkout — can run ``python -m drllm.jobs.search``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_contains_every_config(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         str(REPO), "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next(tmp_path.glob("drllm-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"drllm/_conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    assert expected and expected <= names, sorted(expected - names)
    assert "drllm/jobs/search.py" in names and "drllm/paths.py" in names
