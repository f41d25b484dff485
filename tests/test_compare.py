"""``nlp-transfer compare``: an end-to-end tiny grid whose table, PNG, HTML and JSON agree,
the scratch baseline, resume, and the pure summary/recommendation logic."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from nlp_transfer.cli import main
from nlp_transfer.selection.compare import _eta, build_scratch_model, compare, recommend, summarize, work_units
from nlp_transfer.errors import ConfigError
from nlp_transfer.selection.report import fmt_mean_std, fmt_params

#: Settings that make the toy task learnable in seconds (see conftest.recipe_kwargs).
TOY = ["model.pooling=mean", "train.lr=2e-3", "train.head_lr=1e-2", "train.batch_size=16",
       "eval.train_sample_size=60", "eval.patience=50"]


@pytest.fixture(scope="module")
def grid(tiny_model: Path, toy_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """2 strategies x 2 sizes x 2 seeds on the toy data, run once for the module."""
    root = tmp_path_factory.mktemp("compare")
    lines: list[str] = []
    res = compare(str(toy_csv), model=str(tiny_model), strategies=["frozen", "scratch"], sizes=[45, "all"], seeds=2,
                  out_dir=root / "out", budget_epochs=4, max_length=32, overrides=TOY, cache_dir=root / "cache",
                  log=lines.append)
    return res, lines, root


def test_grid_runs_every_cell_on_the_same_splits(grid) -> None:
    res, _, _ = grid
    assert len(res.runs) == 8 and not [r for r in res.runs if "error" in r]
    cells = {(r["strategy"], r["size"], r["seed"]) for r in res.runs}
    assert cells == {(s, z, seed) for s in ("frozen", "scratch") for z in (45, "all") for seed in (0, 1)}
    for r in res.runs:
        assert r["n_train"] == (45 if r["size"] == 45 else 120)
        metrics = json.loads((Path(r["output_dir"]) / "metrics.json").read_text())
        assert metrics["data"]["held_out_size"] == 30  # one held-out split for every run
        assert metrics["hyperparameters"]["epochs"] == (4 if r["strategy"] == "scratch" else 30)
        assert not list(Path(r["output_dir"]).glob("*.safetensors"))  # weights dropped by default
        assert not (Path(r["output_dir"]) / "checkpoints").exists()
    # frozen trains only the head (32 x 3 + 3); scratch trains the whole (random) encoder
    frozen = next(r for r in res.runs if r["strategy"] == "frozen")
    scratch = next(r for r in res.runs if r["strategy"] == "scratch")
    assert frozen["trainable_params"] == 99
    assert scratch["trainable_params"] > 20_000


def test_frozen_runs_reuse_cached_features(grid) -> None:
    res, _, _ = grid
    logs = {(r["size"], r["seed"]): Path(r["log"]).read_text() for r in res.runs if r["strategy"] == "frozen"}
    assert "train features computed" in logs[(45, 0)] and "held_out features computed" in logs[(45, 0)]
    assert "train features from cache" in logs[(45, 1)]
    assert "held_out features from cache" in logs[("all", 0)]  # held-out shared across sizes
    assert "train features from cache" in logs[("all", 1)]


def test_summary_matches_the_runs(grid) -> None:
    res, _, _ = grid
    assert len(res.summary) == 4
    for row in res.summary:
        group = [r for r in res.runs if r["strategy"] == row["strategy"] and r["size"] == row["size"]]
        vals = [r["held_out"]["accuracy"] for r in group]
        assert row["held_out_mean"] == pytest.approx(np.mean(vals))
        assert row["held_out_std"] == pytest.approx(np.std(vals, ddof=1))
        assert row["train_sample_mean"] == pytest.approx(np.mean([r["train_sample"]["accuracy"] for r in group]))
        assert row["gap_mean"] == pytest.approx(np.mean([r["train_sample"]["accuracy"] - r["held_out"]["accuracy"]
                                                         for r in group]))
        assert row["wall_s_mean"] == pytest.approx(np.mean([r["wall_s"] for r in group]))
        assert row["peak_rss_mb"] == max(r["peak_rss_mb"] for r in group) > 50


def test_table_png_html_and_json_agree(grid) -> None:
    res, _, root = grid
    out = root / "out"
    saved = json.loads((out / "compare.json").read_text())
    assert saved["complete"] and saved["metric"] == "accuracy"
    assert len(saved["runs"]) == 8 and len(saved["summary"]) == 4
    png = (out / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(png) < 500_000
    html = (out / "report.html").read_text()
    md = (out / "compare.md").read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    for row in saved["summary"]:  # every summary number, formatted, in the table, Markdown and HTML
        cell = fmt_mean_std(row["held_out_mean"], row["held_out_std"])
        assert cell in res.table() and cell in md and cell in html
        assert fmt_params(row["trainable_params"]) in md
    for r in saved["runs"]:  # every run, with its own held-out number, in the HTML
        assert re.search(rf"<td>{r['strategy']}</td><td>{r['size']}</td><td>{r['seed']}</td>"
                         rf"<td class=\"num\">{r['n_train']}</td><td class=\"num\">{r['held_out']['accuracy']:.3f}</td>",
                         html)
    assert saved["recommendation"]["headline"] in html and saved["recommendation"]["headline"] in md


def test_progress_lines_show_eta(grid) -> None:
    _, lines, _ = grid
    starts = [line for line in lines if re.match(r"\[compare\] \d+/8 ", line)]
    assert len(starts) == 8
    assert "ETA" not in starts[0] and all("ETA" in line for line in starts[1:])


def test_resume_reuses_runs_and_changed_settings_retrain(grid, tiny_model: Path, toy_csv: Path) -> None:
    _, _, root = grid
    lines: list[str] = []
    again = compare(str(toy_csv), model=str(tiny_model), strategies=["frozen", "scratch"], sizes=[45, "all"],
                    seeds=[0], out_dir=root / "out", budget_epochs=4, max_length=32, overrides=TOY,
                    cache_dir=root / "cache", log=lines.append)
    assert all(r.get("resumed") for r in again.runs) and len(again.runs) == 4
    changed = compare(str(toy_csv), model=str(tiny_model), strategies=["scratch"], sizes=[45], seeds=[0],
                      out_dir=root / "out", budget_epochs=2, max_length=32, overrides=TOY, cache_dir=root / "cache",
                      log=lines.append)
    assert not changed.runs[0].get("resumed") and changed.runs[0]["epochs"] == 2


def test_scratch_model_is_random_same_architecture_and_built_once(tiny_model: Path, tmp_path: Path) -> None:
    a = build_scratch_model(str(tiny_model), tmp_path)
    assert build_scratch_model(str(tiny_model), tmp_path) == a
    src = load_file(str(tiny_model / "model.safetensors"))
    new = load_file(str(a / "model.safetensors"))
    assert set(src) == set(new)
    emb = next(k for k in src if k.endswith("word_embeddings.weight"))
    assert src[emb].shape == new[emb].shape and not np.allclose(src[emb].numpy(), new[emb].numpy())
    assert json.loads((a / "config.json").read_text())["hidden_size"] == 32
    from transformers import AutoTokenizer
    text = "the team won the match and the bank stock fell"
    assert AutoTokenizer.from_pretrained(a)(text)["input_ids"] == AutoTokenizer.from_pretrained(tiny_model)(text)["input_ids"]


def test_min_steps_and_max_size(tiny_model: Path, toy_csv: Path, tmp_path: Path) -> None:
    res = compare(str(toy_csv), model=str(tiny_model), strategies=["frozen", "full"], sizes=[30, 90], seeds=1,
                  out_dir=tmp_path / "o", budget_epochs=1, min_steps=4, max_length=32, overrides=TOY,
                  max_size={"full": 30}, log=lambda s: None)
    cells = {(r["strategy"], r["size"]): r for r in res.runs}
    assert set(cells) == {("frozen", 30), ("frozen", 90), ("full", 30)}
    assert cells[("full", 30)]["epochs"] == 2  # 30 examples / batch 16 = 2 steps per epoch -> 2 epochs for 4 steps
    assert cells[("frozen", 30)]["epochs"] == 30  # frozen keeps its default head epochs (>= min_steps already)


def test_min_steps_without_budget_epochs_is_the_engines_step_budget(tiny_model: Path, toy_csv: Path,
                                                                     tmp_path: Path) -> None:
    # No budget_epochs: compare passes train.min_steps to the run, and the engine stretches the
    # epochs while keeping the evaluations of the default epochs (what a user's own run does).
    res = compare(str(toy_csv), model=str(tiny_model), strategies=["frozen", "full"], sizes=[30], seeds=1,
                  out_dir=tmp_path / "o", min_steps=8, max_length=32, overrides=TOY, log=lambda s: None)
    cells = {r["strategy"]: r for r in res.runs}
    # 30 examples / batch 16 = 2 steps an epoch: 4 epochs for 8 steps instead of full's 3
    assert cells["full"]["epochs"] == 4 and cells["full"]["epochs_run"] == 4
    history = json.loads((Path(cells["full"]["output_dir"]) / "metrics.json").read_text())["history"]
    assert [(h["epoch"], h["step"]) for h in history] == [(2.0, 4), (4.0, 8)]  # every ceil(4 / 3) = 2 epochs
    assert cells["frozen"]["epochs"] == 30  # frozen has no step budget
    off = compare(str(toy_csv), model=str(tiny_model), strategies=["full"], sizes=[30], seeds=1,
                  out_dir=tmp_path / "off", min_steps=0, max_length=32, overrides=TOY + ["train.min_steps=8"],
                  log=lambda s: None)
    assert off.runs[0]["epochs"] == 3  # --min-steps 0 overrides the config's budget


@pytest.mark.parametrize("kwargs, message", [
    ({"strategies": ["frozen", "fancy"]}, "compare strategies: expected some of"),
    ({"sizes": [10, "lots"]}, "compare sizes: expected integers >= 2 or 'all', found 'lots'"),
    ({"seeds": 0}, "compare seeds: expected at least 1 seed"),
    ({"budget_epochs": 0}, "compare budget_epochs: expected an integer >= 1"),
    ({"overrides": ["train.nope=1"]}, "unknown config key 'train.nope'"),
])
def test_bad_arguments_raise_config_errors(kwargs, message, toy_csv: Path, tmp_path: Path) -> None:
    args = {"data": str(toy_csv), "model": "minilm", "out_dir": tmp_path, "log": lambda s: None, **kwargs}
    with pytest.raises(ConfigError, match=re.escape(message)):
        compare(**args)


def test_cli_compare_and_its_errors(tiny_model: Path, toy_csv: Path, tmp_path: Path, capsys) -> None:
    rc = main(["compare", "--data", str(toy_csv), "--model", str(tiny_model), "--strategies", "frozen",
               "--sizes", "all", "--seeds", "1", "--out", str(tmp_path / "cli"), "--max-length", "32",
               "--set", "model.pooling=mean", "--set", "eval.train_sample_size=20"])
    assert rc == 0
    assert (tmp_path / "cli" / "report.html").is_file()
    assert "report:" in capsys.readouterr().out
    rc = main(["compare", "--data", str(toy_csv), "--sizes", "ten", "--out", str(tmp_path / "bad")])
    assert rc == 2
    assert "compare sizes: expected integers >= 2 or 'all', found 'ten'" in capsys.readouterr().err


# --------------------------------------------------------------------------- pure logic

def _run(strategy: str, n: int, seed: int, ho: float, tr: float, wall: float, size=None) -> dict:
    return {"strategy": strategy, "size": size or n, "seed": seed, "n_train": n, "held_out": {"accuracy": ho},
            "train_sample": {"accuracy": tr}, "gap": tr - ho, "wall_s": wall, "trainable_params": 100,
            "total_params": 1000, "peak_rss_mb": 500.0, "cuda_peak_mb": None}


def test_recommend_reads_the_rules_of_thumb_from_a_known_grid() -> None:
    runs = []
    for seed, d in ((0, -0.005), (1, 0.005)):
        runs += [_run("frozen", 100, seed, 0.80 + d, 0.84, 10), _run("full", 100, seed, 0.795 + d, 0.99, 60),
                 _run("scratch", 100, seed, 0.52 + d, 0.70, 60),
                 _run("frozen", 2000, seed, 0.83 + d, 0.86, 20), _run("full", 2000, seed, 0.88 + d, 0.93, 300),
                 _run("scratch", 2000, seed, 0.60 + d, 0.75, 300)]
    summary = summarize(runs, "accuracy", ["frozen", "full", "scratch"])
    rec = recommend(summary, "accuracy")
    by = {b["n_train"]: b for b in rec["by_size"]}
    assert by[100]["best"] == "frozen" and by[100]["recommended"] == "frozen"
    assert set(by[100]["competitive"]) == {"frozen", "full"}
    assert by[2000]["best"] == "full" and by[2000]["recommended"] == "full"
    text = "\n".join(rec["findings"])
    assert "frozen is within tolerance of the best at n = 100." in text
    assert "full minus frozen: -0.005 at n=100, +0.050 at n=2,000." in text
    assert "scratch lags the best pretrained strategy by 0.280 at n=100 (frozen), 0.280 at n=2,000 (full)." in text
    assert "full at n=100 (+0.195)" in text and "scratch at n=100 (+0.180)" in text
    assert "frozen at n=100" not in text.split("overfitting")[1]
    assert rec["headline"].startswith("With 2,000 labelled examples use full")


def test_cheapest_competitive_strategy_is_recommended() -> None:
    runs = [_run("frozen", 500, s, 0.900, 0.92, 10) for s in (0, 1)] + \
           [_run("full", 500, s, 0.905, 0.95, 100) for s in (0, 1)]
    rec = recommend(summarize(runs, "accuracy"), "accuracy")
    assert rec["by_size"][0]["best"] == "full" and rec["by_size"][0]["recommended"] == "frozen"
    assert "frozen is within 0.010 (0.900) in 10.0 s instead of 1m40s" in rec["findings"][0]


def test_eta_uses_same_cell_then_the_strategy_rate() -> None:
    done = [{**_run("full", 100, 0, 0.8, 0.9, 10.0), "work_units": 5.0},
            {**_run("full", 300, 0, 0.8, 0.9, 30.0), "work_units": 15.0}]
    assert _eta(done, [("full", 100, 5.0)]) == pytest.approx(10.0)
    assert _eta(done, [("full", 1000, 40.0)]) == pytest.approx(80.0)  # 2 s per work unit
    assert _eta(done, [("lora", 100, 5.0)]) == pytest.approx(20.0)  # unseen strategy: the mean run
    assert _eta([], [("full", 100, 5.0)]) is None


def test_work_units_grow_with_steps_and_evaluation() -> None:
    assert work_units("full", 100, 4, 32, 900) == pytest.approx(4 * (4 + 900 / 96))
    assert work_units("full", 1000, 2, 32, 1000) > work_units("full", 100, 4, 32, 900)
    assert work_units("frozen", 100, 30, 32, 900) == pytest.approx(1000 / 32)  # one feature pass
