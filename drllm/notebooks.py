"""Executing the project's notebooks with nbclient on this very interpreter (the venv).

Jupyter's default kernelspec may point at another Python; :func:`execute_notebook` writes a
throwaway kernelspec whose kernel is ``sys.executable -m ipykernel_launcher``, so a notebook
runs with exactly the environment that imports drllm. Needs ``nbclient``, ``nbformat`` and
``ipykernel`` (the ``test`` extra installs them).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

KERNEL_NAME = "drllm-venv"


def venv_kernel(kernels_dir: str | Path) -> Any:
    """A ``KernelManager`` whose only kernelspec runs ipykernel on ``sys.executable``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = Path(kernels_dir) / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "drllm venv", "language": "python",
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(kernels_dir)], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)


def execute_notebook(path: str | Path, output: Optional[str | Path] = None,
                     timeout: int = 600) -> Any:
    """Run every cell of ``path`` (in its own directory); the executed notebook.

    Writes it to ``output`` when given. Raises nbclient's ``CellExecutionError`` on the first
    failing cell.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path).resolve()
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as kernels:
        client = NotebookClient(nb, km=venv_kernel(kernels), timeout=timeout,
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    if output is not None:
        nbformat.write(nb, output)
    return nb
