"""strategy=auto through the recipe: the decision is printed and recorded in metrics.json."""
from __future__ import annotations

from conftest import recipe_kwargs
from nlp_transfer import Recipe, train


def test_auto_strategy_resolves_and_is_recorded(tiny_model, toy_csv, tmp_path, capsys):
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", "auto", train={"epochs": 2})))
    auto = r.metrics["auto"]
    # 120 training rows in 3 classes of 40: past the few-shot sizes, below few_labels_total: LoRA
    assert auto["strategy"] == r.metrics["strategy"] == "lora"
    assert any("few labels: n_train=120" in reason for reason in auto["reasons"])
    assert "strategy: auto -> lora" in capsys.readouterr().out
