"""notebooks/explore_run.ipynb runs top to bottom against a tiny finished run."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_run.ipynb"


def test_notebook_executes(finished_sweep, monkeypatch, tmp_path):
    monkeypatch.setenv("ACTSWEEP_CKPT", str(finished_sweep / "activation=gelu,seed=0" / "checkpoints" / "last.ckpt"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the heatmap and bar chart
    hparams = next(o for o in outputs if "'activation': 'gelu'" in o.get("data", {}).get("text/plain", ""))
    assert "'n_layer': 2" in hparams["data"]["text/plain"]
