"""Same results on 1 or N processes: DDP on 2 CPU processes (torchrun, gloo) with the same
global batch gives the same held-out metrics as 1 process, and evaluation counts every
held-out example exactly once even when its size is not divisible by the process count.

(``accelerate launch --cpu --num_processes 2`` silently runs ONE process without MPI, so
the test launches with torchrun.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toy import make_rows, write_csv


def _args(model: Path, data: Path, out: Path, strategy: str) -> list[str]:
    # the default head dropout (0.1) stays on: its masks are the same on any process count (the
    # toy encoder has no dropout of its own, which would draw per process when it trains)
    return [f"model.name={model}", "model.max_length=32", "model.pooling=mean",
            f"data.name={data}", f"strategy={strategy}", "train.epochs=2", "train.batch_size=16",
            "train.lr=2e-3", "train.head_lr=1e-2", "eval.patience=10", "eval.train_sample_size=40",
            "eval.batch_size=16", f"output.dir={out}", "output.report_to=none", "output.progress_bars=false"]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, NLP_TRANSFER_CACHE=str(tmp / "cache"), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(__file__).parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


#: data.streaming: the main process reads the stream and sends each process its slice of every
#: global batch (full); frozen spools it once per node and extracts sharded.
STREAM = ("data.streaming=true", "data.shuffle_buffer=32", "train.epochs=null", "train.max_steps=10",
          "eval.every_steps=5")

#: full trains only the word-embedding rows of the training tokens (train.skip_unseen_embeddings,
#: on by default), on every process alike; this case trains the whole table
ALL_ROWS = ("train.skip_unseen_embeddings=false",)


@pytest.mark.parametrize("strategy,rows,extra", [("full", 112, ()), ("frozen", 112, ()), ("full", 101, ()),
                                                 ("frozen", 101, ()), ("full", 101, STREAM),
                                                 ("frozen", 101, STREAM[:2]), ("full", 101, ALL_ROWS)])
def test_two_processes_match_one(tiny_model, tmp_path, strategy, rows, extra):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    # 112 train rows = 7 full global batches of 16; 101 = 6 of 16 and a last one of 5, which
    # Accelerate fills to 16 on 2 processes (the engine trains only the 5 real rows, weighted).
    # 29 held-out rows: not divisible by 2 (nor by 16).
    data = write_csv(tmp_path / "d" / "train.csv", make_rows(rows))
    write_csv(tmp_path / "d" / "dev.csv", make_rows(29, seed=5))
    env = _env(tmp_path)
    one = subprocess.run([sys.executable, "-m", "nlp_transfer.cli", "train", *_args(tiny_model, tmp_path / "d",
                                                                                    tmp_path / "one", strategy), *extra],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
                          "-m", "nlp_transfer.cli", "train", *_args(tiny_model, tmp_path / "d", tmp_path / "two", strategy),
                          *extra],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "note: the encoder trains with its own dropout" not in two.stdout + two.stderr  # exact: no note
    seen_rows = strategy == "full" and extra not in (STREAM, ALL_ROWS)
    assert ("rows occur in the training data" in one.stdout) == ("rows occur" in two.stdout) == seen_rows
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["num_processes"] == 1 and m2["num_processes"] == 2
    assert len(m1["history"]) == len(m2["history"]) == 2 and bool(m2["data"].get("streamed")) == (extra in (STREAM, STREAM[:2]))
    for rec1, rec2 in zip(m1["history"], m2["history"]):
        # every held-out example counted exactly once on both
        assert rec1["held_out"]["n"] == rec2["held_out"]["n"] == 29
        assert rec2["train_sample"]["n"] == 40
        for k in ("accuracy", "f1", "matthews_correlation"):
            assert rec2["held_out"][k] == pytest.approx(rec1["held_out"][k], abs=1e-6)
        # Held-out loss is a mean of per-batch means; each process sees half-batches, so it
        # is close but not exact. The metrics above are exact.
        assert rec2["held_out"]["loss"] == pytest.approx(rec1["held_out"]["loss"], rel=5e-2)
    # only the main process wrote outputs (one complete folder, no stray temp dirs)
    assert not [p for p in (tmp_path / "two").iterdir() if p.name.startswith(".partial")]


def _torchrun() -> str:
    return shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


def test_sharded_extraction_matches_one_process_and_encodes_every_row_once(tiny_model, tmp_path):
    """Sentence features, token features, rank-models layer features and the strategy=auto probe:
    on 2 processes each row is encoded by exactly one process, every process ends with the whole
    split, bitwise equal to 1 process; the cache the 2-process run writes is what 1 process reads."""
    import numpy as np
    env, script, cache = _env(tmp_path), str(Path(__file__).parent / "dist_extract.py"), tmp_path / "feature_cache"
    two = subprocess.run([_torchrun(), "--nproc_per_node", "2", "--master_port", str(30500 + os.getpid() % 1000),
                          script, str(tiny_model), str(tmp_path / "two"), str(cache)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, script, str(tiny_model), str(tmp_path / "one"), str(cache)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    ref = np.load(tmp_path / "one" / "rank0.npz")
    done = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [d["world"] for d in done] == [2, 2]
    for r in (0, 1):
        got = np.load(tmp_path / "two" / f"rank{r}.npz")
        for k in ("sentence", "sentence_cached", "tokens", "token_offsets", "tokens_cached", "rank_last", "rank_mean",
                  "auto_probe"):
            assert np.array_equal(got[k], ref[k]), (r, k)
        assert not got["sentence_cached_hit"] and not got["tokens_cached_hit"]  # computed (sharded), then cached
    assert ref["sentence_cached_hit"] and ref["tokens_cached_hit"]  # 1 process read the 2-process entries
    single = json.loads((tmp_path / "one" / "rank0.json").read_text())["encoded"]
    for stage in ("sentence", "sentence_cached", "tokens", "tokens_cached", "rank", "auto"):
        parts = [d["encoded"].get(stage, []) for d in done]
        every_row = single[stage.removesuffix("_cached")]  # 1 process read the cached stages: its rows
        assert sorted(parts[0] + parts[1]) == sorted(every_row), stage  # each row once, none missing
        assert not set(parts[0]) & set(parts[1]), stage
    assert all(done[r]["encoded"]["sentence"] for r in (0, 1))  # both processes did share the work
    assert "sentence_cached" not in single and "tokens_cached" not in single


def test_rank_models_on_two_processes_reports_once(tiny_model, blind_model, toy_csv, tmp_path):
    out = tmp_path / "rank.json"
    two = subprocess.run([_torchrun(), "--nproc_per_node", "2", "--master_port", str(31500 + os.getpid() % 1000),
                          "-m", "nlp_transfer.cli", "rank-models", "--data", str(toy_csv), "--models", str(tiny_model),
                          str(blind_model), "--sample", "100", "--max-length", "32", "--out", str(out)],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("recommendation: ") == 1
    ranked = json.loads(out.read_text())
    assert ranked["rows"][0]["model"].endswith(tiny_model.name)  # the informative model first, as on 1 process


def test_launch_says_when_dropout_makes_n_processes_differ_from_one():
    from types import SimpleNamespace

    from nlp_transfer.training.engine import process_count_note
    bert = SimpleNamespace(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    quiet = SimpleNamespace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    assert process_count_note(1, bert, False) is None  # one process: nothing to compare
    assert process_count_note(2, bert, True) is None  # frozen features: the head's dropout is process-count free
    assert process_count_note(2, quiet, False) is None  # fine-tuning an encoder without dropout: exact
    note = process_count_note(4, bert, False)
    assert "hidden_dropout_prob=0.1" in note and "4-process run" in note and "in distribution" in note


@pytest.mark.parametrize("token_level", [False, True])
def test_head_dropout_masks_do_not_depend_on_the_process_count(tmp_path, token_level):
    """GlobalBatchDropout on 2 gloo processes, each holding half of a global batch (token inputs
    padded to different widths per process), gives each row the mask it gets on 1 process."""
    import torch

    from nlp_transfer.model import GlobalBatchDropout
    torch.manual_seed(3)
    widths = [7, 4]  # process 0's rows are longer than process 1's
    x = torch.randn(8, 7, 5) if token_level else torch.randn(8, 5)
    drop = GlobalBatchDropout(0.5).train()
    torch.manual_seed(11)
    one = drop(x)
    script = tmp_path / "two.py"
    script.write_text(f"""
import torch, torch.distributed as dist
from nlp_transfer.model import GlobalBatchDropout
dist.init_process_group("gloo")
r = dist.get_rank()
torch.manual_seed(3)
x = torch.randn(8, 7, 5) if {token_level} else torch.randn(8, 5)
mine = x[4 * r:4 * (r + 1)]
if {token_level}:
    mine = mine[:, :{widths}[r]]
torch.manual_seed(11)
torch.save(GlobalBatchDropout(0.5).train()(mine), "{tmp_path}/out%d.pt" % r)
dist.destroy_process_group()
""")
    two = subprocess.run([_torchrun(), "--nproc_per_node", "2", "--master_port", str(32500 + os.getpid() % 1000),
                          str(script)], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert two.returncode == 0, two.stderr[-3000:]
    for r in (0, 1):
        got = torch.load(tmp_path / f"out{r}.pt")
        want = one[4 * r:4 * (r + 1)]
        want = want[:, :widths[r]] if token_level else want
        assert torch.equal(got, want)
    assert (one == 0).float().mean().item() == pytest.approx(0.5, abs=0.15)  # it does drop
