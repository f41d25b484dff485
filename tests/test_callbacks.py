"""Callbacks (ours and transformers.TrainerCallback), compute_metrics, step logs to the trackers,
verbosity, library progress bars restored, predict_proba / top_k."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import recipe_kwargs
from nlp_transfer import ConfigError, NLPTransferError, Recipe, load, train
from nlp_transfer.training import checkpoint as ckpt
from nlp_transfer.training.callbacks import Callback


def _kw(tiny_model: Path, toy_csv: Path, out: Path, strategy: str = "frozen", **sections: dict) -> dict:
    return recipe_kwargs(tiny_model, toy_csv, out, strategy, **sections)


class Recorder(Callback):
    def __init__(self, stop_after_evals: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.logs: list[dict] = []
        self.evals: list[dict] = []
        self.stop_after_evals = stop_after_evals

    def on_train_begin(self, state):
        self.calls.append(("on_train_begin", state.step))

    def on_step_end(self, state):
        self.calls.append(("on_step_end", state.step))

    def on_log(self, state, logs):
        self.logs.append(dict(logs))

    def on_evaluate(self, state, metrics):
        self.evals.append(dict(metrics))
        if self.stop_after_evals and len(self.evals) >= self.stop_after_evals:
            state.should_stop = True

    def on_save(self, state, path):
        self.calls.append(("on_save", state.step))

    def on_train_end(self, state):
        self.calls.append(("on_train_end", state.step))


def test_callbacks_see_every_stage_and_can_stop_training(tiny_model, toy_csv, tmp_path):
    rec = Recorder(stop_after_evals=2)
    r = train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "o", output={"logging_steps": 2})), callbacks=[rec])
    names = [c[0] for c in rec.calls]
    assert names[0] == "on_train_begin" and names[-1] == "on_train_end"
    steps = [s for n, s in rec.calls if n == "on_step_end"]
    assert steps == list(range(1, len(steps) + 1))
    assert len(rec.evals) == 2 and r.metrics["epochs_run"] == 2  # stopped by the callback, not by patience
    assert rec.evals[-1]["accuracy"] == r.history[-1]["held_out"]["accuracy"]
    assert {"train/loss", "train/learning_rate", "epoch"} <= set(rec.logs[0]) and len(rec.logs) == len(steps) // 2
    assert "on_save" in names  # the per-epoch checkpoint


def test_a_transformers_trainer_callback_works_through_the_adapter(tiny_model, toy_csv, tmp_path):
    from transformers import TrainerCallback

    class StopAtStep(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_log(self, args, state, control, logs=None, **kw):
            self.seen.append(("log", state.global_step, logs))

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            self.seen.append(("evaluate", state.global_step, metrics))

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= 5:
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kw):
            self.seen.append(("end", state.global_step, args.learning_rate))

    cb = StopAtStep()
    r = train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "o", "full", output={"logging_steps": 1})), callbacks=[cb])
    assert r.metrics["history"][-1]["step"] == 5  # stopped right after step 5, then evaluated once
    kinds = [k for k, _, _ in cb.seen]
    assert kinds.count("log") == 5 and kinds[-1] == "end" and "evaluate" in kinds
    assert cb.seen[-1][2] == pytest.approx(2e-3)  # TrainingArguments mirror the recipe
    assert "train/grad_norm" in cb.seen[0][2]


def test_compute_metrics_adds_scores_and_can_pick_the_best_epoch(tiny_model, toy_csv, tmp_path):
    seen = []

    def fraction_right(p):
        seen.append((p.predictions.shape, p.label_ids.shape))
        return {"fraction_right": float((p.predictions.argmax(-1) == p.label_ids).mean())}

    kw = _kw(tiny_model, toy_csv, tmp_path / "o", eval={"metric_for_best": "fraction_right"}, train={"epochs": 3})
    r = train(Recipe(**kw), compute_metrics=fraction_right)
    assert r.metrics["held_out"]["fraction_right"] == pytest.approx(r.metrics["held_out"]["accuracy"])
    assert "fraction_right" in r.metrics["train_sample"] and r.metrics["gap_metric"] == "fraction_right"
    assert seen and seen[0][0][1] == 3  # logits of the 3 classes


def test_compute_metrics_and_metric_names_fail_in_one_line(tiny_model, toy_csv, tmp_path):
    with pytest.raises(ConfigError, match=r"eval.metrics: .*compute_metrics=fn") as e:
        Recipe(eval={"metrics": ["accuracy", lambda p: {}]})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="compute_metrics: expected a dict"):
        train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "a")), compute_metrics=lambda p: 0.5)
    with pytest.raises(ConfigError, match=r"eval.metric_for_best: expected one of the held-out scores"):
        train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "b", eval={"metric_for_best": "nope"})),
              compute_metrics=lambda p: {"other": 1.0})
    with pytest.raises(ConfigError, match="callbacks: expected objects with some of the methods"):
        train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "c")), callbacks=[object()])


def test_a_callback_that_raises_stops_the_run_naming_it_and_keeps_a_checkpoint(tiny_model, toy_csv, tmp_path):
    class Broken(Callback):
        def on_step_end(self, state):
            if state.step == 4:
                raise ValueError("dashboard is down")

    out = tmp_path / "o"
    kw = _kw(tiny_model, toy_csv, out, "full", train={"epochs": 2})
    with pytest.raises(NLPTransferError) as e:
        train(Recipe(**kw), callbacks=[Broken()])
    msg = str(e.value)
    assert "callback Broken.on_step_end at step 4" in msg and "ValueError: dashboard is down" in msg
    assert "output.resume=auto" in msg and "\n" not in msg
    kept = ckpt.latest_complete(out)
    assert kept is not None and kept.name == "step-4" and not (out / "metrics.json").exists()

    class BrokenEverywhere(Broken):  # failing again when told about the checkpoint: the first error stands
        def on_save(self, state, path):
            raise RuntimeError("also broken")
    with pytest.raises(NLPTransferError, match="callback BrokenEverywhere.on_step_end at step 4"):
        train(Recipe(**{**kw, "output": {**kw["output"], "dir": str(tmp_path / "o2"), "checkpoint_every_epoch": False}}),
              callbacks=[BrokenEverywhere()])
    r = train(Recipe(**{**kw, "output": {**kw["output"], "resume": "auto"}}))
    assert r.metrics["resumed_from"] and (out / "metrics.json").is_file()


def test_step_logs_reach_tensorboard(tiny_model, toy_csv, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "o"
    train(Recipe(**_kw(tiny_model, toy_csv, out, "full", train={"epochs": 1},
                       output={"report_to": ["tensorboard"], "logging_steps": 2, "run_name": "my-run"})))
    events = EventAccumulator(str(out / "logs" / "my-run"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "held_out/accuracy"} <= tags
    assert [e.step for e in events.Scalars("train/loss")][:3] == [2, 4, 6]


def test_step_logs_reach_an_mlflow_file_store(tiny_model, toy_csv, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # offline: a file store, no server
    train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "o", "frozen", train={"epochs": 2},
                       output={"report_to": ["mlflow"], "logging_steps": 2, "run_name": "mlf-run"})))
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert [r.info.run_name for r in runs] == ["mlf-run"]
    history = client.get_metric_history(runs[0].info.run_id, "train/loss")
    assert [m.step for m in history][:2] == [2, 4]


def test_quiet_run_prints_only_warnings_and_restores_progress_bars(tiny_model, toy_csv, tmp_path, capsys,
                                                                   monkeypatch):
    import datasets
    import transformers
    datasets.enable_progress_bars()
    transformers.utils.logging.enable_progress_bar()
    train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "a", train={"epochs": 1}, output={"verbosity": "warning"})))
    assert "[nlp_transfer] epoch" not in capsys.readouterr().out
    assert datasets.is_progress_bar_enabled() and transformers.utils.logging.is_progress_bar_enabled()
    monkeypatch.setenv("NLP_TRANSFER_VERBOSITY", "error")
    train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "b", train={"epochs": 1})))
    assert "[nlp_transfer]" not in capsys.readouterr().out
    monkeypatch.delenv("NLP_TRANSFER_VERBOSITY")
    train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "c", train={"epochs": 1})))
    assert "[nlp_transfer] epoch 1.00" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="output.verbosity"):
        Recipe(output={"verbosity": "loud"})


def test_predict_proba_and_top_k(tiny_model, toy_csv, tmp_path):
    r = train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "o", train={"epochs": 2})))
    p = load(r.output_dir)
    texts = ["goal match team", "bank stock price", "robot code chip"]
    proba = p.predict_proba(texts)
    assert proba.shape == (3, len(p.label_names)) and np.allclose(proba.sum(-1), 1, atol=1e-5)
    plain = p(texts)
    assert [p.label_names[i] for i in proba.argmax(-1)] == [x["label"] for x in plain]
    top = p(texts, top_k=2)
    assert [len(t) for t in top] == [2, 2, 2] and [t[0]["label"] for t in top] == [x["label"] for x in plain]
    assert [t[0]["score"] for t in top] == pytest.approx([x["score"] for x in plain], abs=1e-6)
    assert all(t[0]["score"] >= t[1]["score"] for t in top)
    with pytest.raises(NLPTransferError, match="top_k: expected an integer >= 1"):
        p(texts, top_k=0)


def test_predict_proba_refuses_regression(tiny_model, tmp_path):
    from toy import write_csv
    rows = [{"text": f"value {i} words here", "label": float(i % 5)} for i in range(60)]
    data = write_csv(tmp_path / "reg.csv", rows)
    r = train(Recipe(**_kw(tiny_model, data, tmp_path / "o", task="regression", train={"epochs": 1})))
    with pytest.raises(NLPTransferError, match="predict_proba: expected a classification model"):
        load(r.output_dir).predict_proba(["value 3"])
    with pytest.raises(NLPTransferError, match="top_k: expected a single-label classification model"):
        load(r.output_dir)(["value 3"], top_k=1)
    json.loads((r.output_dir / "metrics.json").read_text())


def test_cli_quiet_prints_no_progress_lines(tiny_model, toy_csv, tmp_path, capsys):
    from nlp_transfer.cli import main
    out = tmp_path / "q"
    assert main(["train", "--quiet", f"model.name={tiny_model}", "model.max_length=32", f"data.name={toy_csv}",
                 "train.epochs=1", f"output.dir={out}", "output.report_to=none"]) == 0
    printed = capsys.readouterr()
    assert "[nlp_transfer]" not in printed.out and "train (" not in printed.err
    assert (out / "metrics.json").is_file()


def test_metric_modules_load_while_the_run_sets_up_not_in_the_first_evaluation(tiny_model, toy_csv, tmp_path,
                                                                             monkeypatch):
    # evaluate's first import costs ~1 s: it belongs to setup, not to eval_s (issue 16's evaluation share)
    import nlp_transfer.metrics as metrics
    monkeypatch.setattr(metrics, "_CACHE", {})

    class AtBegin(Callback):
        loaded: set = set()

        def on_train_begin(self, state):
            AtBegin.loaded = set(metrics._CACHE)

    r = train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "o", eval={"metrics": ["accuracy", "mcc"]})),
              callbacks=[AtBegin()])
    assert AtBegin.loaded == {"accuracy", "matthews_correlation"}
    assert {"accuracy", "matthews_correlation"} <= set(r.history[0]["held_out"])


def test_how_often_a_run_evaluates_does_not_change_what_it_trains(tiny_model, toy_csv, tmp_path):
    # each DataLoader pass draws from torch's global RNG; evaluations must not move the dropout
    # masks (here the head's) of the steps after them
    import torch
    from safetensors.torch import load_file

    def weights(name: str, **ev) -> dict:
        r = train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / name, strategy="full",
                               train={"epochs": 2}, eval={"select_best": False, **ev})))
        files = sorted(Path(r.output_dir).rglob("*.safetensors"))
        assert files
        return {f"{f.relative_to(r.output_dir)}:{k}": v for f in files for k, v in load_file(f).items()}, r

    (a, ra), (b, rb) = weights("per_epoch"), weights("every_step", every_steps=1)
    assert len(rb.history) > 2 * len(ra.history)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
