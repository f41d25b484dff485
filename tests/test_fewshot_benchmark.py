"""Fast checks of benchmarks/fewshot.py's pure parts: the k-per-class draw, the report splits,
the loaders (skipped when the data is absent), the summary table and ``--dry-run``.

Nothing here trains a model or starts SetFit: the peer runs are replaced by a fake ``spawn``.
"""
from __future__ import annotations

import json
import random
import statistics
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import fewshot  # noqa: E402
from benchmarks.fewshot import DataMissing  # noqa: E402


def toy_rows(counts: dict[str, int]) -> list[dict[str, str]]:
    return [{"text": f"{label} {i}", "label": label} for label, n in counts.items() for i in range(n)]


# --------------------------------------------------------------------------- k per class


def test_draw_is_exact_balanced_and_seeded():
    rows = toy_rows({"b": 30, "a": 50, "c": 12})
    first = fewshot.draw_k_per_class(rows, 8, seed=3)
    assert Counter(r["label"] for r in first) == {"a": 8, "b": 8, "c": 8}
    assert len({r["text"] for r in first}) == 24  # no row twice
    assert fewshot.draw_k_per_class(rows, 8, seed=3) == first
    assert fewshot.draw_k_per_class(rows, 8, seed=4) != first
    # The protocol exactly: labels in sorted order, one Random(seed), rng.sample of each class.
    rng = random.Random(3)
    expected = [r for lab in ("a", "b", "c") for r in rng.sample([x for x in rows if x["label"] == lab], 8)]
    assert first == expected


def test_draw_does_not_depend_on_row_order_of_classes():
    a = toy_rows({"x": 10, "y": 10})
    b = [r for r in a if r["label"] == "y"] + [r for r in a if r["label"] == "x"]
    assert fewshot.draw_k_per_class(a, 4, 0) == fewshot.draw_k_per_class(b, 4, 0)


def test_draw_refuses_a_class_with_fewer_than_k_rows():
    rows = toy_rows({"common": 40, "rare": 5})
    with pytest.raises(ValueError, match=r"class 'rare' has 5 training rows, fewer than k=8"):
        fewshot.draw_k_per_class(rows, 8, 0)
    assert len(fewshot.draw_k_per_class(rows, 5, 0)) == 10


# --------------------------------------------------------------------------- report sets


def test_stratified_subsample_keeps_proportions_and_size():
    rows = toy_rows({"a": 600, "b": 300, "c": 101})
    sub = fewshot.stratified_subsample(rows, 500)
    assert len(sub) == 500
    c = Counter(r["label"] for r in sub)
    assert abs(c["a"] - 300) <= 1 and abs(c["b"] - 150) <= 1 and abs(c["c"] - 50) <= 1
    assert sub == fewshot.stratified_subsample(rows, 500)  # fixed seed
    assert fewshot.stratified_subsample(rows, 5000) == rows


def test_bbc_carve_is_per_class_disjoint_and_fixed():
    rows = fewshot.dedupe_texts(toy_rows({"sport": 50, "tech": 40}) + toy_rows({"tech": 3}))
    assert len(rows) == 90
    rest, test = fewshot.carve_per_class(rows, 0.2, 1234)
    assert Counter(r["label"] for r in test) == {"sport": 10, "tech": 8}
    assert not {r["text"] for r in rest} & {r["text"] for r in test}
    assert len(rest) + len(test) == 90
    assert fewshot.carve_per_class(rows, 0.2, 1234) == (rest, test)


# --------------------------------------------------------------------------- loaders


def test_loaders_raise_data_missing_on_an_empty_folder(tmp_path):
    for name in ("emotion", "sst2"):
        with pytest.raises(DataMissing):
            fewshot.load_dataset(name, tmp_path)
    with pytest.raises(DataMissing):
        fewshot.read_bbc(tmp_path)


def test_read_emotion_and_bbc_formats(tmp_path):
    (tmp_path / "emotion").mkdir()
    (tmp_path / "emotion" / "train.txt").write_text("text;label_name\ni feel fine;joy\n\ni am sad;sadness\n")
    assert fewshot.read_emotion(tmp_path / "emotion" / "train.txt") == [
        {"text": "i feel fine", "label": "joy"}, {"text": "i am sad", "label": "sadness"}]
    (tmp_path / "bbc" / "tech").mkdir(parents=True)
    (tmp_path / "bbc" / "tech" / "001.txt").write_bytes("caf\xe9 news\nbody".encode("latin-1"))
    assert fewshot.read_bbc(tmp_path / "bbc") == [{"text": "caf\xe9 news\nbody", "label": "tech"}]


@pytest.mark.parametrize("name", ["emotion", "sst2", "bbc"])
def test_real_loaders_or_skip(name):
    try:
        pool, report = fewshot.load_dataset(name)
    except DataMissing as e:
        pytest.skip(str(e))
    assert pool and report and all(set(r) == {"text", "label"} for r in pool[:5] + report[:5])
    assert set(fewshot.group_by_label(report)) <= set(fewshot.group_by_label(pool))
    if name == "sst2":
        assert len(report) == 872 and {r["label"] for r in report} == {"negative", "positive"}
    if name == "bbc":
        assert not {r["text"] for r in pool} & {r["text"] for r in report}


# --------------------------------------------------------------------------- summary


def records() -> list[dict]:
    recs = []
    for seed, (sf, ours) in enumerate([(0.5, 0.7), (0.6, 0.8), (0.7, 0.9)]):
        recs.append({"dataset": "emotion", "k": 8, "seed": seed, "peer": "setfit", "accuracy": sf,
                     "train_wall_s": 10.0 + seed, "eval_wall_s": 1.0, "strategy": "setfit"})
        recs.append({"dataset": "emotion", "k": 8, "seed": seed, "peer": "ours", "accuracy": ours,
                     "train_wall_s": 2.0, "eval_wall_s": 1.0, "strategy": "frozen"})
    recs.append({"dataset": "emotion", "k": 8, "seed": 3, "peer": "ours", "error": "exit 1: boom"})
    return recs


def test_summary_mean_and_sample_std():
    (row,) = fewshot.summarize(records())
    assert row["setfit"]["n"] == 3 and row["ours"]["n"] == 3  # the error record is left out
    assert row["setfit"]["acc"] == pytest.approx((0.6, 0.1))
    assert row["ours"]["acc"] == pytest.approx((0.8, 0.1))
    assert row["setfit"]["train_s"] == pytest.approx((11.0, 1.0))
    assert row["ours"]["train_s"] == pytest.approx((2.0, 0.0))
    assert row["diff"] == pytest.approx(0.2)
    assert fewshot.mean_std([0.42]) == (0.42, 0.0)
    assert row["time_ratio"] == pytest.approx(2.0 / 11.0)


def test_paired_differences_match_seeds():
    """Ours minus SetFit is taken seed by seed (the same k rows), not between the two means."""
    recs = [{"seed": s, "peer": p, "accuracy": a, "dataset": "sst2", "k": 32, "train_wall_s": 1.0}
            for s, p, a in [(0, "setfit", 0.70), (1, "setfit", 0.80), (2, "setfit", 0.75),
                            (2, "ours", 0.76), (0, "ours", 0.69), (1, "ours", 0.80)]]
    (row,) = fewshot.summarize(recs)
    pair = row["paired"]
    assert pair["diffs"] == pytest.approx([-0.01, 0.0, 0.01])
    assert pair["wins"] == 2 and pair["n"] == 3  # a tie counts as ours >= SetFit
    assert pair["mean"] == pytest.approx(0.0) and pair["se"] == pytest.approx(0.01 / 3 ** 0.5)
    assert fewshot.paired([{"seed": 5, "accuracy": 0.5}], [{"seed": 0, "accuracy": 0.5}]) is None


def test_markdown_table():
    md = fewshot.markdown_table(records(), {"cpu_count": 2, "torch_threads": 2, "processor": "cpu"}, "python x")
    assert "2 CPUs, torch threads 2" in md and "`python x`" in md
    assert "| SetFit acc (mean ± std) | ours acc | SetFit s | ours s | ours - SetFit | paired (± s.e.) |" in md
    assert ("| emotion | 8 | 3/3 | 60.0 ± 10.0 | 80.0 ± 10.0 | 11.0 ± 1.0 | 2.0 ± 0.0 | +20.0 | +20.0 ± 0.0 | 3/3 "
            "| 0.18x | frozen |") in md


# --------------------------------------------------------------------------- main


@pytest.fixture
def fake_data(monkeypatch):
    pool, report = toy_rows({"neg": 40, "pos": 40}), toy_rows({"neg": 10, "pos": 10})
    monkeypatch.setattr(fewshot, "load_dataset", lambda name, data_dir=None: (pool, report))


def test_dry_run_prints_the_plan_without_training(fake_data, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(fewshot, "spawn", lambda spec: pytest.fail("--dry-run started a run"))
    out = tmp_path / "f.json"
    assert fewshot.main(["--dry-run", "--datasets", "emotion,sst2", "--k", "8,32", "--seeds", "0,1",
                         "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "emotion: 2 classes, 80 rows to draw from, report set 20 rows" in text
    assert "16 runs" in text and "sst2     k=32  seed=1   setfit" in text
    assert not out.exists()


def test_dry_run_fails_on_a_short_class(fake_data, tmp_path):
    with pytest.raises(SystemExit, match="error: emotion k=64: class 'neg' has 40 training rows"):
        fewshot.main(["--dry-run", "--datasets", "emotion", "--k", "64", "--out", str(tmp_path / "f.json")])


def test_records_are_saved_as_they_finish_and_resume_skips(fake_data, monkeypatch, tmp_path):
    monkeypatch.setattr(fewshot.common, "machine_info", lambda: {"cpu_count": 2, "processor": "cpu"})
    calls = []

    def fake_spawn(spec):
        calls.append(spec)
        return {**{k: spec[k] for k in fewshot.RECORD_KEY}, "accuracy": 0.5, "train_wall_s": 1.0,
                "eval_wall_s": 0.1, "strategy": "frozen" if spec["peer"] == "ours" else "setfit"}

    monkeypatch.setattr(fewshot, "spawn", fake_spawn)
    out = tmp_path / "f.json"
    argv = ["--datasets", "emotion", "--k", "8", "--seeds", "0,1", "--out", str(out)]
    fewshot.main(argv)
    assert len(calls) == 4 and len(json.loads(out.read_text())["records"]) == 4
    assert "| emotion | 8 | 2/2 |" in out.with_suffix(".md").read_text()
    fewshot.main(argv + ["--resume", "--seeds", "0,1,2"])
    assert len(calls) == 6 and len(json.loads(out.read_text())["records"]) == 6


def test_ours_set_reaches_our_recipe_and_unknown_keys_fail(fake_data, monkeypatch, tmp_path, capsys):
    """--ours-set: a variant of our run through the same driver (spec -> Recipe), keys validated."""
    monkeypatch.setattr(fewshot.common, "minilm_path", lambda: "minilm")
    assert fewshot.main(["--dry-run", "--datasets", "emotion", "--k", "8", "--seeds", "0", "--peers", "ours",
                         "--ours-set", "strategy.pair_adapter=lora", "--ours-set", "train.lr=2e-3",
                         "--out", str(tmp_path / "f.json")]) == 0
    assert "strategy=auto strategy.pair_adapter=lora train.lr=2e-3" in capsys.readouterr().out
    spec = {"ours_strategy": "contrastive", "seed": 1, "ours_set": ["strategy.pair_adapter=lora", "train.lr=2e-3"]}
    recipe = fewshot.ours_recipe(spec, toy_rows({"a": 8, "b": 8}), toy_rows({"a": 2, "b": 2}), str(tmp_path))
    assert (recipe.strategy.name, recipe.strategy.pair_adapter, recipe.train.lr, recipe.train.seed) == \
        ("contrastive", "lora", 2e-3, 1)
    assert recipe.eval.select_best is False  # the driver's own settings stay
    from nlp_transfer.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown config key 'train.nope'"):
        fewshot.ours_recipe({**spec, "ours_set": ["train.nope=1"]}, [], [], str(tmp_path))


def test_setfit_gets_the_class_name_rows_ours_adds():
    """--setfit-label-examples: SetFit's templated rows are the ones data.label_examples gives ours
    (same sentences, same classes, same count), and they equal setfit's own get_templated_dataset."""
    from nlp_transfer.config import DataConfig
    from nlp_transfer.data import add_label_examples, prepare_data
    train = toy_rows({"sadness": 3, "joy": 3, "anger": 3})
    extra = fewshot.templated_rows(train, 2)
    cfg = DataConfig(name={"train": train, "validation": train[:3]}, dedup=False)
    ours = add_label_examples(prepare_data(cfg), 2, cfg.label_template, "sequence_classification")  # our default
    names = ours.label_names
    assert [(r["text"], r["label"]) for r in extra] == \
        [(t, names[y]) for t, y in zip(ours.train["text"][9:], ours.train["label"][9:])]
    assert fewshot.templated_rows(train, 0) == []
    setfit = pytest.importorskip("setfit")
    theirs = setfit.get_templated_dataset(candidate_labels=sorted({r["label"] for r in train}), sample_size=2)
    assert [(r["text"], r["label"]) for r in extra] == [(t, names[y]) for t, y in zip(theirs["text"], theirs["label"])]


def test_head_benchmark_heads_fit_a_separable_problem():
    """benchmarks/fewshot_head.py: every head it compares separates two clusters."""
    import numpy as np

    from benchmarks import fewshot_head
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 16)) * 3
    y = np.repeat([0, 1], 8)
    x = (centres[y] + rng.normal(size=(16, 16))).astype(np.float32)
    y_report = np.repeat([0, 1], 50)
    x_report = (centres[y_report] + rng.normal(size=(100, 16))).astype(np.float32)
    f = {"x_train": x, "y_train": y, "x_report": x_report, "y_report": y_report}
    for name, fit in fewshot_head.heads().items():
        assert (fit(f) == y_report).mean() > 0.9, name


def test_table_merges_record_files_without_training(monkeypatch, tmp_path, capsys):
    """--table: seeds run at different times summarised as one row; nothing trains."""
    monkeypatch.setattr(fewshot, "spawn", lambda spec: pytest.fail("--table started a run"))
    monkeypatch.setattr(fewshot.common, "machine_info", lambda: {"cpu_count": 2, "processor": "cpu"})
    recs = records()
    fewshot.save(tmp_path / "a.json", recs[:2], "python a")  # seed 0
    fewshot.save(tmp_path / "b.json", recs[2:6], "python b")  # seeds 1 and 2
    assert fewshot.main(["--table", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "`python a` + `python b`" in out
    assert "| emotion | 8 | 3/3 | 60.0 ± 10.0 | 80.0 ± 10.0 |" in out
    with pytest.raises(SystemExit, match="--table .*missing.json: no such file"):
        fewshot.main(["--table", str(tmp_path / "missing.json")])


def test_wise_interpolation_mixes_float_weights_and_keeps_buffers():
    """benchmarks/fewshot_wise.py: alpha=0 is the pretrained encoder, alpha=1 the tuned one, and
    integer buffers (position_ids) are never averaged."""
    import torch

    from benchmarks import fewshot_wise
    base = {"w": torch.zeros(2, 2), "position_ids": torch.arange(4)}
    tuned = {"w": torch.ones(2, 2), "position_ids": torch.arange(4), "extra": torch.full((1,), 3.0)}
    assert torch.equal(fewshot_wise.interpolate(tuned, base, 0.0)["w"], base["w"])
    assert torch.equal(fewshot_wise.interpolate(tuned, base, 1.0)["w"], tuned["w"])
    mixed = fewshot_wise.interpolate(tuned, base, 0.25)
    assert torch.allclose(mixed["w"], torch.full((2, 2), 0.25))
    assert mixed["position_ids"].dtype == torch.int64 and torch.equal(mixed["position_ids"], torch.arange(4))
    assert torch.equal(mixed["extra"], tuned["extra"])


def test_probe_grid_collects_every_cell_and_seed(tmp_path, capsys):
    """fewshot_head/fewshot_wise's grid: one accuracy list per cell and variant, in seed order,
    printed as mean then each seed, and written to --json."""
    from benchmarks import fewshot_head
    args = fewshot_head.grid_arguments("probe", "sst2", "8", "0,1").parse_args(
        ["--datasets", "sst2,emotion", "--k", "8,32", "--json", str(tmp_path / "r.json")])
    seen = []

    def per_seed(spec):
        seen.append((spec["dataset"], spec["k"], spec["seed"], spec["max_eval"]))
        return {"a": 0.5 + spec["seed"] / 10, "b": 0.25}

    results = fewshot_head.seed_grid(args, per_seed)
    assert seen[:2] == [("sst2", 8, 0, 1000), ("sst2", 8, 1, 1000)] and len(seen) == 8
    assert results["emotion k=32"] == {"a": [0.5, 0.6], "b": [0.25, 0.25]}
    assert json.loads((tmp_path / "r.json").read_text()) == results
    printed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["emotion", "k=32", "(accuracy", "%,", "mean", "over", "seeds,", "then", "each", "seed)"] in printed
    assert printed.count(["a", "55.0", "50.0", "60.0"]) == 4  # each cell: mean, then seed 0 and seed 1


def test_pooled_line_spans_every_paired_seed_of_every_point():
    """The table's last line pools the seed-by-seed differences of all points: mean, s.e., normal
    95% interval and ours >= SetFit; one point alone gets no such line."""
    recs = records()  # emotion k=8: +0.2 on 3 seeds
    for seed, (sf, ours) in enumerate([(0.5, 0.3), (0.5, 0.5)]):  # sst2 k=32: -0.2, 0.0
        recs += [{"dataset": "sst2", "k": 32, "seed": seed, "peer": p, "accuracy": a, "train_wall_s": 1.0}
                 for p, a in (("setfit", sf), ("ours", ours))]
    diffs = [0.2, 0.2, 0.2, -0.2, 0.0]
    se = statistics.stdev(diffs) / 5 ** 0.5
    line = fewshot.pooled(fewshot.summarize(recs))
    assert line == (f"All 2 points, 5 paired seeds: ours - SetFit +{statistics.fmean(diffs) * 100:.2f} ± "
                    f"{se * 100:.2f} pt (95% interval {(0.08 - 1.96 * se) * 100:+.2f} to "
                    f"{(0.08 + 1.96 * se) * 100:+.2f}), ours >= SetFit on 4 of 5.")
    assert line in fewshot.markdown_table(recs, {}, "cmd")
    assert fewshot.pooled(fewshot.summarize(records())) is None
