"""Streamed training data (data.streaming): trains with a step budget, never reads more of the
stream than it trains on, resumes exactly where it stopped (across passes of the stream), and
frozen on a stream equals frozen on the same rows loaded."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import recipe_kwargs
from nlp_transfer import ConfigError, DataError, NLPTransferError, Recipe, train
from nlp_transfer.training.callbacks import Callback
from nlp_transfer.training.stream import StreamRows
from toy import make_rows, write_csv


@pytest.fixture(scope="module")
def stream_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("stream") / "train.csv", make_rows(140))


def _kw(model: Path, data, out: Path, strategy: str = "full", **sections) -> dict:
    kw = recipe_kwargs(model, data, out, strategy, data={"streaming": True, "held_out_rows": 30, "shuffle_buffer": 16},
                       train={"epochs": None, "max_steps": 30, "batch_size": 8},
                       output={"checkpoint_every_steps": 1, "keep_last_n": 1}, eval={"every_steps": 10})
    for k, v in sections.items():
        kw[k] = {**kw.get(k, {}), **v}
    return kw


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_stream_trains_with_a_step_budget_and_says_where_its_held_out_rows_come_from(tiny_model, stream_csv,
                                                                                      tmp_path, capsys, strategy):
    r = train(Recipe(**_kw(tiny_model, stream_csv, tmp_path / "o", strategy)))
    m = r.metrics
    assert m["best_step"] > 0 and len(m["history"]) == 3  # evaluated every 10 of the 30 steps
    # 110 training rows, read ~2.2 times (lora trains fewer weights: it learns more slowly); full
    # scores 27 of the 30 held-out rows since evaluations stopped drawing from the training RNG
    assert m["history"][-1]["held_out"]["accuracy"] >= (0.9 if strategy == "full" else 0.5)
    assert m["data"]["streamed"] and m["data"]["train_size"] == 30 * 8 and m["data"]["held_out_size"] == 30
    assert m["data"]["held_out_source"] == "the first 30 streamed rows (data.held_out_rows)"
    out = capsys.readouterr().out
    assert "streaming: 30 steps of 8 rows" in out and "streamed: held-out texts kept out of training" in out
    held = [json.loads(line)["text"] for line in (tmp_path / "o" / "held_out.jsonl").read_text().splitlines()]
    assert held == [row["text"] for row in make_rows(140)[:30]]


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("stop_at", [7, 19])  # inside the first pass (13.75 batches) and in the second
def test_stream_resume_matches_the_uninterrupted_run_bit_for_bit(tiny_model, stream_csv, tmp_path, stop_at):
    ref = train(Recipe(**_kw(tiny_model, stream_csv, tmp_path / "ref")))
    out = tmp_path / "cut"
    with pytest.raises(NLPTransferError, match="continue with output.resume=auto"):
        train(Recipe(**_kw(tiny_model, stream_csv, out)), callbacks=[StopAt(stop_at)])
    resumed = train(Recipe(**_kw(tiny_model, stream_csv, out, output={"resume": "auto"})))
    assert resumed.metrics["resumed_from"]
    for key in ("history", "held_out", "best_step"):
        assert resumed.metrics[key] == ref.metrics[key], key
    w, ref_w = load_file(str(out / "encoder" / "model.safetensors")), \
        load_file(str(tmp_path / "ref" / "encoder" / "model.safetensors"))
    assert all(torch.equal(w[k], ref_w[k]) for k in ref_w)


def test_stream_rows_resume_at_any_row_across_passes(tiny_model, stream_csv):
    """Rows start..end of the endless sequence of shuffled passes are the same whether read from the
    start or resumed there, with the pass lengths known (a checkpoint's) or not (read while skipping)."""
    from transformers import AutoTokenizer

    from nlp_transfer.data.streaming import prepare_stream
    from nlp_transfer.config import DataConfig
    stream = prepare_stream(DataConfig(name=str(stream_csv), streaming=True, held_out_rows=30)).train
    tok = AutoTokenizer.from_pretrained(tiny_model)
    whole = StreamRows(stream, tok, 32, False, 300, seed=3, buffer=16)
    rows = [r["input_ids"] for r in whole]
    assert whole.pass_rows == [110, 110]
    assert rows[:110] != rows[110:220] and sorted(map(tuple, rows[:110])) == sorted(map(tuple, rows[110:220]))
    for start, known in itertools.product((0, 57, 110, 163), (True, False)):
        part = StreamRows(stream, tok, 32, False, 100, seed=3, buffer=16)
        part.start_row, part.pass_rows = start, (whole.pass_rows[:1] if known else [])
        assert [r["input_ids"] for r in part] == rows[start:start + 100], (start, known)


def test_frozen_on_a_stream_equals_frozen_on_the_loaded_rows(tiny_model, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_csv(folder / "train.csv", make_rows(120))
    write_csv(folder / "validation.csv", make_rows(150)[120:])
    kw = recipe_kwargs(tiny_model, folder, tmp_path / "loaded", "frozen")
    loaded = train(Recipe(**kw))
    streamed = train(Recipe(**{**kw, "data": {"name": str(folder), "streaming": True},
                               "output": {**kw["output"], "dir": str(tmp_path / "streamed")}}))
    assert streamed.metrics["data"]["train_size"] == loaded.metrics["data"]["train_size"] == 120
    assert streamed.metrics["history"] == loaded.metrics["history"]
    a, b = load_file(str(tmp_path / "loaded" / "head.safetensors")), \
        load_file(str(tmp_path / "streamed" / "head.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "streamed" / ".stream").exists()  # the spool is removed


def test_an_endless_stream_trains_reading_only_what_it_needs(tiny_model, tmp_path):
    """An IterableDataset passed through the API turns streaming on; an endless generator proves that
    nothing reads the whole stream (label names, fingerprint, train sample, training)."""
    from datasets import IterableDataset
    rows = make_rows(300)
    read = itertools.count()

    def endless():
        for i in itertools.count():
            next(read)
            yield rows[i % len(rows)] | {"text": rows[i % len(rows)]["text"] + f" r{i}"}

    ds = IterableDataset.from_generator(endless)
    kw = recipe_kwargs(tiny_model, "unused", tmp_path / "o", "full", train={"epochs": None, "max_steps": 12},
                       data={"held_out_rows": 40, "shuffle_buffer": 32})
    kw["data"] = {**kw["data"], "name": ds}
    r = train(Recipe(**kw))
    assert r.metrics["data"]["streamed"] and r.metrics["data"]["train_size"] == 12 * 16
    # finishing at all proves it; each pass over the stream (fingerprint, held-out, sample, training)
    # reads ahead by the 1,000-row batches of the stream's filters and maps
    assert next(read) < 10_000


def test_a_label_outside_the_held_out_labels_stops_the_stream_naming_it(tiny_model, tmp_path):
    rows = make_rows(60)
    rows[45]["label"] = "weather"
    data = write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(DataError, match="label 'weather' in the train split"):
        train(Recipe(**_kw(tiny_model, data, tmp_path / "o")))


@pytest.mark.parametrize("change, key", [
    ({"train": {"max_steps": None}}, "train.max_steps"),
    ({"train": {"epochs": 2}}, "train.epochs"),
    ({"train": {"class_weights": "auto"}}, "train.class_weights"),
    ({"strategy": {"name": "contrastive"}}, "data.streaming"),
    ({"task": "token_classification"}, "data.streaming"),
])
def test_what_a_stream_cannot_have_is_refused_in_one_line(tiny_model, stream_csv, tmp_path, change, key):
    kw = _kw(tiny_model, stream_csv, tmp_path / "o")
    for section, value in change.items():
        kw[section] = {**kw[section], **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Recipe(**kw)
