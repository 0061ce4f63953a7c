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


COMPARE = NOTEBOOK.with_name("compare_runs.ipynb")


def test_compare_notebook_executes_on_a_finished_sweep(finished_sweep, monkeypatch, tmp_path):
    monkeypatch.setenv("ACTSWEEP_SWEEP", str(finished_sweep))
    nb = nbformat.read(COMPARE, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    texts = "\n".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in outputs)
    assert "activation=relu,lr=1e6,seed=0" in texts and "Diverged" in texts  # the runs table
    assert "gelu − relu" in texts  # the paired and adjusted tables
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the curves drawn in the notebook and the report's figures
    assert (tmp_path / "figures" / "forest.png").is_file()
