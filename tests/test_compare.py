"""Like with like against the published numbers: tokenizer level, the published step, the blog's seed,
the Revival's Δ%, and the blog's status categories."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from actsweep.study import compare
from actsweep.study.logs import RunLog
from actsweep.study.published import STUDIES


def test_blog_status_rule_gives_the_blogs_own_labels_on_its_own_numbers():
    rows = [{"status": "Unstable (1/1)" if e.values["status"] == "Unstable" else "Stable",
             "val_loss": e.values["val_loss"], "inactive_pct": e.values["inactive_pct"],
             "activation": e.match["model.activation"], "lr": e.match["model.lr"]} for e in STUDIES["blog"]]
    assert compare.blog_status(rows) == [e.values["status"] for e in STUDIES["blog"]]


def test_the_blogs_dead_pct_is_the_share_of_outputs_at_most_zero_and_named_so():
    import torch

    from actsweep.stats.metrics import activation_sums, ffn_ratios
    from actsweep.study import report

    assert all("inactive_pct" in e.values and "dead_pct" not in e.values for e in STUDIES["blog"])
    from actsweep.study.columns import final_columns

    (ours,) = [c for c in final_columns() if c.name == "inactive_pct"]  # our column it stands beside
    assert (ours.tag, ours.scale) == ("ffn/inactive_frac", 100)
    headers = {key: header for header, key, _ in report.table_columns_of()}
    assert headers["pub_inactive_pct"] == 'published inactive % (blog\'s "Dead %")'
    act = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])  # zero is inactive: outputs <= 0, not < 0
    sums = activation_sums(act)[None]
    assert ffn_ratios(sums, torch.ones(1, 2)).get("inactive_frac").tolist() == [0.5]


def test_value_at_the_published_step_not_the_last():
    series = pd.Series([3.0, 2.0, 1.5, 1.2], index=[2500, 5000, 7500, 10000])
    assert compare.value_at(series, 5000) == 2.0 and compare.value_at(series, 6000) == 2.0
    assert compare.value_at(series, None) == 1.2 and math.isnan(compare.value_at(series, 100))


def test_published_loss_is_not_comparable_across_tokenizer_levels():
    published = {"val_loss": 0.85, "inactive_pct": 90.4, "status": "Optimal"}
    assert compare.mark_incomparable(published, "blog", "char") == published
    assert compare.mark_incomparable(published, "blog", "gpt2") == {"val_loss": "n/c", "inactive_pct": 90.4, "status": "Optimal"}
    assert compare.mark_incomparable({"ppl": 2.688}, "revival", "gpt2") == {"ppl": "n/c"}
    assert compare.mark_incomparable({"ppl": 2.688}, "revival", "hf:huggingface-course/code-search-net-tokenizer") == {"ppl": 2.688}


def fake_run(tmp_path, name, overrides, seed, losses, label=None, tokenizer="char", study="blog"):
    folder = tmp_path / f"{name},seed={seed}"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"data": {"tokenizer": tokenizer}}))
    info = {"name": f"{name},seed={seed}", "config": name, "overrides": overrides, "seed": seed, "label": label,
            "study": study}
    val = pd.Series(list(losses.values()), index=list(losses))
    return RunLog(folder, info, {"status": "finished"}, {"val/loss": val})


def test_blog_rows_read_step_5000_and_put_seed_1337_beside_the_mean(tmp_path):
    overrides = {"model.lr": 1e-4, "model.activation": "gelu", "trainer.max_steps": 10000}
    logs = [fake_run(tmp_path, "slow", overrides, seed, {5000: 1.0 + d, 10000: 0.5}) for seed, d in ((1337, 0.0), (0, 0.1), (1, 0.2))]
    summary = pd.DataFrame([{"config": "slow", "label": None, "status": "Stable", "inactive_pct": 60.0,
                             "pub_val_loss": 1.13, "pub_status": "Stable"}])
    table = compare.published_rows(logs, summary)
    row = table.iloc[0]
    assert row["ours_seed"] == 1.0 and row["ours"].mean == pytest.approx(1.1)  # step 5000, not the 10k end
    assert row["ours"].low == pytest.approx(1.1 - 4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    text = "\n".join(compare.published_section(logs, summary))
    assert "| slow | 1.130 | 1.000 | 1.100 [" in text and "at step 5000" in text


def test_revival_delta_against_sm_ln_g_for_theirs_and_ours(tmp_path):
    tok = compare.PUBLISHED_SETTING["revival"]["tokenizer"]
    logs = [fake_run(tmp_path, name, {"model.norm": norm, "model.activation": "gelu"}, 1337, {32000: math.log(ppl)},
                     label, tok, "revival")
            for name, label, norm, ppl in (("a", "SM+LN+G", "layernorm", 2.5), ("b", "SM+G", "none", 3.0))]
    summary = pd.DataFrame([{"config": "a", "label": "SM+LN+G", "status": "Stable", "pub_ppl": 2.688},
                            {"config": "b", "label": "SM+G", "status": "Stable", "pub_ppl": 3.197}])
    table = compare.published_rows(logs, summary)
    assert table.delta_theirs.tolist() == pytest.approx([0.0, 100 * (3.197 - 2.688) / 2.688])
    assert table.delta_ours.tolist() == pytest.approx([0.0, 20.0])
