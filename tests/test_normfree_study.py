"""configs/sweeps/normfree.yaml: its size, and every named comparison finds paired partner runs
(same other settings, same seed) at both activations (or every arm) and both budgets (or both
activations of every arm)."""

from actsweep.study.sweep import load_sweep


def test_every_comparison_pairs_runs_that_differ_only_in_its_key():
    study = load_sweep("configs/sweeps/normfree.yaml")
    runs = study.runs()
    assert len(runs) == 24 * 5 and study.seeds == [0, 1, 2, 3, 4] and len(study.comparisons) == 14  # 10, then 4 per-layer entropy
    points = [(r.overrides, r.seed) for r in runs]
    for c in study.comparisons:
        pairs = 0
        for overrides, seed in points:
            if overrides[c["key"]] != c["a"]:
                continue
            pairs += ({**overrides, c["key"]: c["b"]}, seed) in points
        if c["key"] == "trainer.max_steps":
            assert pairs == 6 * 2 * 5, c  # every arm × both activations × 5 seeds
            continue
        arms = 6 if c["key"] == "model.activation" else 2  # every arm, else both activations
        assert pairs == arms * 2 * 5, c  # × both budgets × 5 seeds
