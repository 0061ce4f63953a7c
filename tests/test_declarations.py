"""One declaration per statistic: the Custom Scalars layout, the HParams metrics and the report's
columns all come from what the statistics declare, so a new statistic is one file."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import actsweep
from actsweep import board
from actsweep.declarations import Chart, Column, Declaration, combined
from actsweep.stats.sink import sink_share

PACKAGE = Path(actsweep.__file__).parent

NEW_STATISTIC = '''
from actsweep.declarations import Chart, Column, Declaration
from actsweep.stats.base import Statistic


class ZzProbe(Statistic):
    declaration = Declaration(charts=(Chart("zz category", "zz chart", (r"zz/value",)),),
                              columns=(Column("zz_pct", "zz/value", "zz %", 1, place=55, scale=100),),
                              hparams=((5, "zz/value"),))
'''

SHOW = """
import json
from actsweep import board
from actsweep.study.columns import every_declaration, final_columns, table_columns
from actsweep.study.report import table_columns_of
d = every_declaration()
print(json.dumps({"layout": board.layout(d), "hparams": board.hparams_metrics(d),
                  "csv": [c.name for c in final_columns()], "table": [h for h, _, _ in table_columns_of()]}))
"""


def show(package_parent: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", SHOW], cwd=package_parent, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(package_parent)}).stdout
    return json.loads(out)


def test_a_new_statistic_is_one_file_and_reaches_layout_hparams_and_report(tmp_path: Path) -> None:
    copy = tmp_path / "actsweep"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = show(tmp_path)
    (copy / "stats" / "zz_probe.py").write_text(NEW_STATISTIC)
    after = show(tmp_path)
    assert after["layout"] == {**before["layout"], "zz category": {"zz chart": ["Multiline", ["zz/value"]]}}
    assert after["hparams"] == ["zz/value", *before["hparams"]]  # place 5: first
    assert set(after["csv"]) - set(before["csv"]) == {"zz_pct"}
    table = after["table"]
    assert table.index("dead units %") < table.index("zz %") < table.index("act mean")  # place 55: between 50 and 60
    assert [h for h in table if h != "zz %"] == before["table"]


def test_the_shipped_declarations_keep_the_reports_columns_and_the_hparams_order() -> None:
    shown = show(PACKAGE.parent)
    assert shown["hparams"][:5] == ["val/loss", "val/ppl", "ffn/dead_units", "attn/entropy", board.band_tag("uniform", 3)]
    table = shown["table"]
    assert table[:8] == ["label", "n", "val loss [95 % CI]", "ppl [95 % CI]", "inactive %", "dead units %", "act mean", "grad norm"]
    assert table.index("slope [95 % CI]") < table.index("saturated norm inputs %") < table.index("val loss SE") < table.index("status")
    assert shown["csv"][:3] == ["val_loss", "val_ppl", "train_loss"]


def test_the_registry_lists_the_statistics_that_declare_and_no_base_class() -> None:
    from actsweep.stats.base import statistics

    assert [k.__name__ for k in statistics()] == [
        "DivergenceGuard", "AttentionEntropy", "FFNStats", "GradNorms", "NonFiniteCounts", "NormStats",
        "LossScaleMonitor", "AttentionSink", "SlopeMonitor", "ThroughputMonitor"]


def test_a_column_or_chart_declared_twice_is_refused() -> None:
    column = Column("x", "a/b", "x", 1, place=1)
    with pytest.raises(ValueError, match="column declared twice: \\['x'\\]"):
        combined([Declaration(columns=(column,)), Declaration(columns=(column,))])
    chart = Chart("c", "t", ("a",))
    with pytest.raises(ValueError, match="chart declared twice"):
        combined([Declaration(charts=(chart,)), Declaration(charts=(chart,))])
    with pytest.raises(ValueError, match="neither 1"):
        Column("x", "a/b", "x", 1, place=1, scale=10)


def test_layout_groups_charts_by_category_in_first_declared_order() -> None:
    d = Declaration(charts=(Chart("b", "one", ("x",)), Chart("a", "two", ("y", "z")), Chart("b", "three", ("w",))))
    assert board.layout(d) == {"b": {"one": ["Multiline", ["x"]], "three": ["Multiline", ["w"]]},
                               "a": {"two": ["Multiline", ["y", "z"]]}}
    assert list(board.layout(d)) == ["b", "a"]
    assert board.hparams_metrics(Declaration(hparams=((20, "b"), (10, "a"), (30, "c")))) == ["a", "b", "c"]


def test_sink_share_is_the_mean_first_token_probability_of_queries_after_the_first() -> None:
    torch.manual_seed(0)
    B, H, T = 2, 3, 5
    s = torch.randn(B, H, T, T, dtype=torch.float64)
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    by_hand = []
    for b in range(B):
        for h in range(H):
            for t in range(1, T):  # query 0 attends to token 0 only: left out
                row = [math.exp(s[b, h, t, j].item()) for j in range(t + 1)]
                by_hand.append(row[0] / sum(row))
    assert sink_share(s).item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-12)
    uniform = torch.zeros(1, 1, T, T).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    assert sink_share(uniform).item() == pytest.approx(sum(1 / (t + 1) for t in range(1, T)) / (T - 1))
