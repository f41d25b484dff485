"""``strategy: auto`` decision rules on constructed signals."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from nlp_transfer.selection import decide as auto
from nlp_transfer.selection.decide import (
    DEFAULT_THRESHOLDS,
    THRESHOLD_DOCS,
    Signals,
    decide_strategy,
    explain,
)
from nlp_transfer.errors import ConfigError

MINILM = 22_713_216      # all-MiniLM-L6-v2
BERT_BASE = 109_482_240
BERT_LARGE = 335_141_888


def sig(**kw) -> Signals:
    """A moderate, unconstrained baseline: 5,000 examples, 2 balanced classes,
    probe 0.80 (chance 0.5), MiniLM on a GPU with 80 GB; override per test."""
    base = dict(n_train=5_000, n_classes=2, min_per_class=2_500, probe_score=0.80,
                probe_chance=0.5, model_params=MINILM, device="cuda", gpu_memory_gb=80.0,
                time_budget_s=None, est_full_epoch_s=None)
    base.update(kw)
    return Signals(**base)


def joined(decision) -> str:
    return " | ".join(decision.reasons)


# --------------------------------------------------------------------------- data rules

def test_moderate_data_with_headroom_is_lora() -> None:
    d = decide_strategy(sig())
    assert d.strategy == "lora" and d.preferred == "lora"
    assert "n_train=5,000" in joined(d) and "probe=0.800" in joined(d)
    assert "skill=0.600" in joined(d)  # (0.8 - 0.5) / (1 - 0.5)
    assert not d.warnings


def test_few_labels_total_is_lora_under_the_step_budget() -> None:
    """Under train.min_steps, LoRA beat frozen features at 50-800 examples (README 'Step budgets')."""
    d = decide_strategy(sig(n_train=800, min_per_class=400))
    assert d.strategy == "lora" and d.preferred == "lora"
    assert "few labels: n_train=800 < few_labels_total=1,000" in joined(d)
    assert "train.min_steps" in joined(d)


def test_few_labels_regression_stays_frozen() -> None:
    """The budget's measurements are classification only: a small regression set keeps frozen."""
    d = decide_strategy(sig(n_train=800, n_classes=None, min_per_class=None, probe_chance=0.0))
    assert d.strategy == "frozen"
    assert "n_train=800 < few_labels_total=1,000 for regression" in joined(d)


def test_few_labels_beat_a_high_probe_but_not_a_large_set() -> None:
    """BBC at 200 examples (probe 0.96): lora 0.962 vs frozen 0.941; with 1,000+ the probe rule holds."""
    assert decide_strategy(sig(n_train=999, min_per_class=400, probe_score=0.96)).strategy == "lora"
    assert decide_strategy(sig(n_train=1_000, min_per_class=400, probe_score=0.96)).strategy == "frozen"


def test_few_labels_on_a_model_too_big_for_lora_on_cpu_fall_back_to_frozen() -> None:
    d = decide_strategy(sig(n_train=800, min_per_class=400, model_params=BERT_LARGE, device="cpu",
                            gpu_memory_gb=None))
    assert d.preferred == "lora" and d.strategy == "frozen"
    assert any("lora excluded: on CPU" in r for r in d.reasons)


def test_boundary_of_few_labels_total() -> None:
    below = decide_strategy(sig(n_train=999, min_per_class=400))
    at = decide_strategy(sig(n_train=1_000, min_per_class=400))
    assert below.strategy == at.strategy == "lora"
    assert "few labels" in joined(below) and "moderate dataset" in joined(at)


def test_rare_class_is_frozen() -> None:
    d = decide_strategy(sig(n_train=5_000, n_classes=20, min_per_class=30, probe_chance=0.1))
    assert d.strategy == "frozen"
    assert "rarest class has 30 examples < few_labels_per_class=50" in joined(d)


def test_high_probe_is_frozen_even_with_large_data() -> None:
    d = decide_strategy(sig(n_train=50_000, min_per_class=25_000, probe_score=0.96))
    assert d.strategy == "frozen"
    assert "probe=0.960 >= probe_high=0.90" in joined(d)
    assert "skill=0.920 >= probe_high_skill=0.75" in joined(d)
    assert "at most 0.040 left" in joined(d)


def test_high_probe_on_imbalanced_task_is_not_high() -> None:
    """0.93 accuracy when 92% of examples are one class closes only 12% of the gap."""
    d = decide_strategy(sig(probe_score=0.93, probe_chance=0.92, min_per_class=400))
    assert d.strategy == "lora"
    assert d.warnings and "skill=0.125 < near_chance_skill=0.20" in d.warnings[0]


def test_large_data_with_cheap_compute_is_full() -> None:
    d = decide_strategy(sig(n_train=20_000, min_per_class=10_000))
    assert d.strategy == "full"
    assert "n_train=20,000 >= large_data=10,000" in joined(d)


def test_large_data_small_model_on_cpu_is_full() -> None:
    d = decide_strategy(sig(n_train=20_000, min_per_class=10_000, device="cpu",
                            gpu_memory_gb=None))
    assert d.strategy == "full" and not d.excluded


def test_near_chance_probe_warns_and_large_data_goes_full() -> None:
    d = decide_strategy(sig(n_train=30_000, min_per_class=15_000, probe_score=0.55))
    assert d.strategy == "full"
    assert len(d.warnings) == 1
    w = d.warnings[0]
    assert "probe=0.550 vs chance=0.500" in w and "skill=0.100 < near_chance_skill=0.20" in w
    assert "another model" in w and "rank-models" in w
    assert w in d.reasons


def test_near_chance_probe_with_moderate_data_stays_lora_with_warning() -> None:
    d = decide_strategy(sig(probe_score=0.52))
    assert d.strategy == "lora" and d.warnings


def test_chance_defaults_to_uniform_over_classes() -> None:
    d = decide_strategy(sig(n_classes=4, min_per_class=1_000, probe_score=0.60,
                            probe_chance=None))
    assert "skill=0.467" in joined(d)  # (0.6 - 0.25) / 0.75
    assert "chance assumed 0.250 = 1/4 classes" in joined(d)


def test_no_probe_falls_back_to_size_rules() -> None:
    d = decide_strategy(sig(probe_score=None, probe_chance=None))
    assert d.strategy == "lora" and "no probe score measured" in joined(d)
    small = decide_strategy(sig(probe_score=None, n_train=500, min_per_class=250))
    assert small.strategy == "lora" and "few labels: n_train=500" in joined(small)
    assert decide_strategy(sig(probe_score=None, n_train=5_000, n_classes=20, min_per_class=30)).strategy == "frozen"


def test_regression_signals_without_classes() -> None:
    d = decide_strategy(sig(n_classes=None, min_per_class=None, probe_score=0.92,
                            probe_chance=None))
    assert d.strategy == "frozen" and "chance assumed 0" in joined(d)


# --------------------------------------------------------------------------- compute rules

def test_cpu_with_bert_base_steps_full_down_to_lora() -> None:
    d = decide_strategy(sig(n_train=20_000, min_per_class=10_000, device="cpu",
                            gpu_memory_gb=None, model_params=BERT_BASE))
    assert d.preferred == "full" and d.strategy == "lora"
    assert "full excluded: on CPU, model_params=109.5M > cpu_full_max_params=30.0M" in joined(d)


def test_cpu_with_bert_large_is_frozen() -> None:
    d = decide_strategy(sig(n_train=20_000, min_per_class=10_000, device="cpu",
                            gpu_memory_gb=None, model_params=BERT_LARGE))
    assert d.strategy == "frozen"
    assert set(d.excluded) == {"full", "lora"}
    assert "model_params=335.1M > cpu_lora_max_params=150.0M" in joined(d)


def test_gpu_memory_rules() -> None:
    # 1.3B params: full needs 1.3e9 * 16 * 1.5 = 31.2 GB, LoRA 7.8 GB
    big = 1_300_000_000
    d = decide_strategy(sig(n_train=20_000, min_per_class=10_000, model_params=big,
                            gpu_memory_gb=24.0))
    assert d.strategy == "lora"
    assert "full needs ~31.2 GB" in joined(d) and "gpu_memory_gb=24.0" in joined(d)
    d = decide_strategy(sig(n_train=20_000, min_per_class=10_000, model_params=big,
                            gpu_memory_gb=6.0))
    assert d.strategy == "frozen" and "lora needs ~7.8 GB" in joined(d)
    assert decide_strategy(sig(n_train=20_000, min_per_class=10_000, model_params=big,
                               gpu_memory_gb=40.0)).strategy == "full"


def test_unknown_accelerator_memory_is_said() -> None:
    d = decide_strategy(sig(device="mps", gpu_memory_gb=None))
    assert "device=mps with unknown memory" in joined(d)


def test_time_budget_excludes_full_then_lora() -> None:
    large = dict(n_train=20_000, min_per_class=10_000)
    # 3 epochs x 600 s = 1800 s > 1500 s budget; LoRA 3 x 0.7 x 600 = 1260 s fits
    d = decide_strategy(sig(**large, time_budget_s=1_500, est_full_epoch_s=600))
    assert d.strategy == "lora"
    assert "3 full epochs x 600 s = 1800 s > time_budget_s=1500" in joined(d)
    d = decide_strategy(sig(**large, time_budget_s=1_000, est_full_epoch_s=600))
    assert d.strategy == "frozen"
    assert "3 LoRA epochs x 0.7 x 600 s = 1260 s > time_budget_s=1000" in joined(d)
    assert decide_strategy(sig(**large, time_budget_s=2_000, est_full_epoch_s=600)).strategy \
        == "full"


def test_time_budget_counts_the_step_budget_epochs() -> None:
    # 50 examples, 2 batches an epoch: train.min_steps=200 makes a run 100 epochs, not min_epochs=3
    small = dict(n_train=50, min_per_class=25, est_full_epoch_s=2.0, run_epochs=100)
    d = decide_strategy(sig(**small, time_budget_s=150))
    assert d.strategy == "lora" == d.preferred and d.excluded == {"full": "100 full epochs (the step budget train.min_steps) "
                                                            "x 2 s = 200 s > time_budget_s=150"}
    d = decide_strategy(sig(**small, time_budget_s=100))
    assert d.preferred == "lora" and d.strategy == "frozen"
    assert "lora excluded: 100 LoRA epochs (the step budget train.min_steps) x 0.7 x 2 s = 140 s > " \
           "time_budget_s=100; falling back to frozen" in joined(d)
    # without the run's epochs the rule falls back to min_epochs: 3 x 0.7 x 2 s fits
    assert decide_strategy(sig(**{**small, "run_epochs": None}, time_budget_s=100)).strategy == "lora"
    # fewer run epochs than min_epochs never shorten the estimate
    d = decide_strategy(sig(n_train=20_000, min_per_class=10_000, time_budget_s=1_500, est_full_epoch_s=600,
                            run_epochs=1))
    assert "3 full epochs x 600 s = 1800 s > time_budget_s=1500" in joined(d)


def test_time_budget_covers_the_contrastive_pair_phase() -> None:
    few = dict(n_train=48, n_classes=6, min_per_class=8, probe_chance=1 / 6, pairable=True, est_full_epoch_s=1.0)
    d = decide_strategy(sig(**few, contrastive_epochs=80, time_budget_s=60))
    assert d.preferred == "contrastive" and d.strategy == "frozen"
    assert "contrastive excluded: the pair phase, 80 full-epoch equivalents x 1 s = 80 s > time_budget_s=60" \
           in joined(d)
    assert decide_strategy(sig(**few, contrastive_epochs=80, time_budget_s=100)).strategy == "contrastive"


def test_budget_too_small_even_for_frozen_warns() -> None:
    d = decide_strategy(sig(time_budget_s=100, est_full_epoch_s=600))
    assert d.strategy == "frozen"
    assert any("exceeds time_budget_s=100" in w for w in d.warnings)


def test_budget_without_estimate_is_reported_not_used() -> None:
    d = decide_strategy(sig(n_train=20_000, min_per_class=10_000, time_budget_s=10))
    assert d.strategy == "full"
    assert "time_budget_s=10 given but no epoch-time estimate" in joined(d)


def test_compute_rules_never_upgrade() -> None:
    d = decide_strategy(sig(n_train=5_000, n_classes=20, min_per_class=30, probe_chance=0.1, time_budget_s=1e6,
                            est_full_epoch_s=1))
    assert d.strategy == "frozen" == d.preferred
    small = decide_strategy(sig(n_train=500, min_per_class=250, time_budget_s=1e6, est_full_epoch_s=1))
    assert small.strategy == "lora" == small.preferred


# --------------------------------------------------------------------------- thresholds

def test_every_threshold_is_documented_and_reported() -> None:
    assert set(THRESHOLD_DOCS) == set(DEFAULT_THRESHOLDS)
    assert all(len(doc) > 20 for doc in THRESHOLD_DOCS.values())
    d = decide_strategy(sig())
    assert d.thresholds == DEFAULT_THRESHOLDS
    # module constants and the table agree
    assert DEFAULT_THRESHOLDS["few_labels_total"] == auto.FEW_LABELS_TOTAL
    assert DEFAULT_THRESHOLDS["large_data"] == auto.LARGE_DATA
    assert DEFAULT_THRESHOLDS["probe_high"] == auto.PROBE_HIGH


def test_threshold_overrides_change_the_decision() -> None:
    d = decide_strategy(sig(), thresholds={"large_data": 5_000})
    assert d.strategy == "full" and d.thresholds["large_data"] == 5_000
    assert "large_data=5,000" in joined(d)
    assert "thresholds overridden: large_data=5000" in explain(d)


def test_unknown_threshold_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"auto threshold 'large': expected .*large_data"):
        decide_strategy(sig(), thresholds={"large": 1})


# --------------------------------------------------------------------------- records

def test_decision_is_json_serialisable_and_normalises_signals() -> None:
    d = decide_strategy(sig(n_train=np.int64(20_000), min_per_class=np.int64(10_000),
                            probe_score=np.float32(0.7), device="cuda:1"))
    blob = json.loads(json.dumps(d.to_dict()))
    assert blob["strategy"] == "full" and blob["signals"]["device"] == "cuda"
    assert blob["signals"]["n_train"] == 20_000
    assert blob["reasons"] == d.reasons


def test_explain_lists_strategy_reasons_and_fallback() -> None:
    d = decide_strategy(sig(n_train=20_000, min_per_class=10_000, device="cpu",
                            gpu_memory_gb=None, model_params=BERT_BASE, probe_score=0.52))
    text = explain(d)
    lines = text.splitlines()
    assert lines[0] == "strategy: auto -> lora (data alone suggested full)"
    assert all(f"    - {r}" in lines for r in d.reasons)
    assert "warnings:" not in text  # the near-chance warning is already a reason


def test_decision_is_deterministic() -> None:
    assert decide_strategy(sig()) == decide_strategy(sig())


@pytest.mark.parametrize("field,value,expected", [
    ("n_train", 0, "auto strategy signal n_train: expected a positive integer, found 0"),
    ("probe_score", 1.5, "auto strategy signal probe_score: expected a value in [0, 1] or None"),
    ("n_classes", 1, "expected an integer >= 2 or None, found 1"),
    ("min_per_class", 9_999, "expected 0..n_train (5000) or None, found 9999"),
    ("gpu_memory_gb", 0, "expected a positive number or None, found 0"),
])
def test_invalid_signals_raise_config_errors(field: str, value, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        decide_strategy(replace(sig(), **{field: value}))
    assert expected in str(err.value)
    assert "Fix: pass a measured" in str(err.value)


def test_unknown_device_message() -> None:
    with pytest.raises(ConfigError) as err:
        decide_strategy(sig(device="tpu"))
    assert str(err.value) == ("auto strategy signal device: expected cpu | cuda | mps, "
                              "found 'tpu'. Fix: pass the device training will run on")
