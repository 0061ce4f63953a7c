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


def test_revival_delta_against_sm_ln_g_for_theirs_and_ours_and_the_section_as_read(tmp_path):
    """The whole section: ppl = exp(final val loss), Δ% against SM+LN+G with one decimal and a sign
    (their 18.9 = 100 (3.197 - 2.688) / 2.688 by hand), no seed column (the Revival names none)."""
    tok = compare.PUBLISHED_SETTING["revival"]["tokenizer"]
    logs = [fake_run(tmp_path, name, {"model.norm": norm}, 1337, {32000: math.log(ppl)}, label, tok, "revival")
            for name, label, norm, ppl in (("a", "SM+LN+G", "layernorm", 2.5), ("b", "SM+G", "none", 3.0))]
    for log in logs:  # the activation is a fixed setting of the sweep file: the published row matches on it too
        log.info["fixed"] = {"model.activation": "gelu"}
    summary = pd.DataFrame([{"config": "a", "label": "SM+LN+G", "status": "Stable", "pub_ppl": 2.688},
                            {"config": "b", "label": "SM+G", "status": "Stable", "pub_ppl": 3.197}])
    table = compare.published_rows(logs, summary)
    assert table.delta_theirs.tolist() == pytest.approx([0.0, 100 * (3.197 - 2.688) / 2.688])
    assert table.delta_ours.tolist() == pytest.approx([0.0, 20.0])
    assert compare.published_section(logs, summary) == [
        "## Against the published numbers", "",
        "| configuration | published ppl | ours, mean [95 % CI] at the end | published Δ% vs SM+LN+G | ours Δ% vs SM+LN+G |",
        "|---|---|---|---|---|",
        "| SM+LN+G | 2.688 | 2.500 [n=1] | +0.0 | +0.0 |",
        "| SM+G | 3.197 | 3.000 [n=1] | +18.9 | +20.0 |",
        "",
        f"Published ppl values at the end, with the {tok} tokenizer; `n/c`: our runs used another tokenizer, "
        "so their per-token numbers measure something else.",
        "",
    ]


def blog_sweep(tmp_path):
    """Four blog configurations at two learning rates (their published rows in `summary`): a ReLU that
    diverged once in three seeds at the high rate, a sparse ReLU and a GELU at the low rate, a GELU at
    the high rate; one seed of the GELU at the low rate diverged and is left out of its mean."""
    runs = {  # config: (activation, lr, {seed: loss at step 5000})
        "relu_hi": ("relu", 1e-3, {1337: 1.5, 0: 1.6, 1: 1.7}),
        "relu_lo": ("relu", 1e-4, {1337: 1.2, 0: 1.3, 1: 1.4}),
        "gelu_lo": ("gelu", 1e-4, {1337: 1.0, 0: 1.1, 1: 9.0}),
        "gelu_hi": ("gelu", 1e-3, {1337: 1.25, 0: 1.35}),
    }
    logs = []
    for config, (activation, lr, losses) in runs.items():
        for seed, loss in losses.items():
            log = fake_run(tmp_path, config, {"model.activation": activation, "model.lr": lr}, seed, {5000: loss, 6000: 0.1})
            if config == "gelu_lo" and seed == 1:
                log = RunLog(log.dir, log.info, {"status": "diverged", "step": 4000}, log.scalars)
            logs.append(log)
    summary = pd.DataFrame([
        {"config": "relu_hi", "label": math.nan, "status": "Unstable (1/3)", "inactive_pct": 50.0, "pub_val_loss": 1.4, "pub_status": "Unstable"},
        {"config": "relu_lo", "label": math.nan, "status": "Stable", "inactive_pct": 90.0, "pub_val_loss": 1.2, "pub_status": "High Sparsity"},
        {"config": "gelu_hi", "label": math.nan, "status": "Stable", "inactive_pct": 10.0, "pub_val_loss": math.nan, "pub_status": None},
        {"config": "gelu_lo", "label": "GELU", "status": "Stable", "inactive_pct": 10.0, "pub_val_loss": 0.9, "pub_status": "Optimal"},
    ])
    return logs, summary


def test_blog_rows_use_completed_runs_their_own_seed_and_the_blogs_categories(tmp_path):
    logs, summary = blog_sweep(tmp_path)
    table = compare.published_rows(logs, summary)
    assert table.config.tolist() == ["relu_hi", "relu_lo", "GELU"]  # no published value: no row; a label names it
    assert table.ours_seed.tolist() == [1.5, 1.2, 1.0]
    assert [i.n for i in table.ours] == [3, 3, 2] and table.ours.iloc[2].mean == pytest.approx(1.05)  # the diverged seed left out
    assert table.val_loss.tolist() == pytest.approx([1.6, 1.3, 1.05])
    assert table.blog_status.tolist() == ["Unstable", "High Sparsity", "Optimal"]
    assert "delta_ours" not in table  # the blog has no reference row
    text = compare.published_section(logs, summary)
    assert text[2] == ("| configuration | published val loss | ours, seed 1337 | ours, mean [95 % CI] at step 5000 "
                       "| published status | ours, blog-style status |")
    assert text[5] == "| relu_lo | 1.200 | 1.200 | 1.300 [1.052, 1.548] | High Sparsity | High Sparsity |"
    assert text[-4].startswith("Published val loss values at step 5000, with the char tokenizer; `n/c`: ")
    assert text[-3:] == ["", compare.BLOG_STATUS_RULE, ""]


def test_blog_rows_without_an_inactive_share_are_not_sparse(tmp_path):
    """No inactive column: the sparse ReLU is Stable (its learning rate has no Unstable configuration)."""
    logs, summary = blog_sweep(tmp_path)
    table = compare.published_rows(logs, summary.drop(columns="inactive_pct"))
    assert table.blog_status.tolist() == ["Unstable", "Stable", "Optimal"]


def test_blog_rows_at_another_tokenizer_read_n_c_and_a_missing_seed_reads_nan(tmp_path):
    logs, summary = blog_sweep(tmp_path)
    logs = [log for log in logs if log.info["seed"] != 1337]
    summary = summary.assign(pub_val_loss=[compare.NOT_COMPARABLE, 1.2, math.nan, 0.9])
    table = compare.published_rows(logs, summary)
    assert table.theirs.tolist() == ["n/c", 1.2, 0.9] and all(map(math.isnan, table.ours_seed))
    assert compare.published_section(logs, summary)[4] == "| relu_hi | n/c | nan | 1.650 [1.015, 2.285] | Unstable | Unstable |"


def test_a_sweep_without_a_study_or_its_published_column_has_no_section(tmp_path):
    logs, summary = blog_sweep(tmp_path)
    assert compare.published_section(logs, summary.drop(columns="pub_val_loss")) == []
    for log in logs:
        log.info["study"] = None
    assert compare.published_rows(logs, summary).empty and compare.published_section(logs, summary) == []


def test_blog_status_edges():
    """Unstable wins over the best loss; the best is the lowest *stable* finite loss; sparsity is a ReLU
    at 90 % or more; Robust needs an Unstable configuration at the same learning rate."""
    def row(status, loss, activation, inactive, lr):
        return {"status": status, "val_loss": loss, "inactive_pct": inactive, "activation": activation, "lr": lr}

    rows = [row("Unstable (1/3)", 0.5, "gelu", 0, 1), row("Stable", math.nan, "gelu", 0, 2), row("Stable", 1.0, "gelu", 0, 2),
            row("Stable", 1.1, "relu", 90.0, 2), row("Stable", 1.2, "relu", 89.9, 1), row("Stable", 1.3, "gelu", 0, 3),
            row("Stable", 1.4, "gelu", 95.0, 3)]
    assert compare.blog_status(rows) == ["Unstable", "Stable", "Optimal", "High Sparsity", "Robust", "Stable", "Stable"]
    assert compare.blog_status([row("Diverged", 1.0, "relu", 99, 1)]) == ["Unstable"]


def test_run_tokenizer_and_comparability(tmp_path):
    assert compare.run_tokenizer(tmp_path) is None  # no config.yaml
    (tmp_path / "config.yaml").write_text("")
    assert compare.run_tokenizer(tmp_path) is None
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"tokenizer": "gpt2"}}))
    assert compare.run_tokenizer(tmp_path) == "gpt2"
    assert compare.comparable("blog", "char") and not compare.comparable("blog", "gpt2")
    assert not compare.comparable("other", "char") and not compare.comparable(None, None)
    assert compare.mark_incomparable({}, "blog", "gpt2") == {}
    assert compare.mark_incomparable({"val_loss": 1.0}, None, "char") == {"val_loss": "n/c"}
    assert math.isnan(compare.value_at(None, 5)) and math.isnan(compare.value_at(pd.Series(dtype=float), None))
    assert compare.delta_pct(3.0, 2.0) == 50.0
