"""Checkpoint and resume: a run killed with SIGKILL at a random step, then resumed,
ends bitwise identical to an uninterrupted run; SIGTERM checkpoints and exits non-zero."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from nlp_transfer.training import checkpoint as ckpt
from toy import make_rows, write_csv

WEIGHTS = {"full": "encoder/model.safetensors", "frozen": "head.safetensors", "lora": "adapter_model.safetensors",
           "contrastive": "head.safetensors"}
#: Per-case settings: contrastive's 2 pair rounds keep the run short; full-budget is full under the
#: step budget (12 steps an epoch: 5 epochs for 60 steps, evaluated and checkpointed every 2).
#: full trains only the word-embedding rows its data uses (train.skip_unseen_embeddings, on by
#: default): checkpoints hold those rows, the resumed run rebuilds the same split and the decay of
#: the others from the step count; full-allrows trains the whole table.
EXTRA = {"contrastive": ["strategy.pair_rounds=2"], "full-budget": ["train.epochs=null", "train.min_steps=60"],
         "full-allrows": ["train.skip_unseen_embeddings=false"]}


def _args(model: Path, data: Path, out: Path, strategy: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nlp_transfer.cli", "train", f"model.name={model}", "model.max_length=32",
            "model.pooling=mean", f"data.name={data}", f"strategy={strategy}", "train.epochs=3", "train.batch_size=8",
            "train.lr=2e-3", "train.head_lr=1e-2", "eval.patience=10", "eval.train_sample_size=32",
            f"output.dir={out}", "output.report_to=none", "output.progress_bars=false",
            "output.checkpoint_every_steps=1", *extra]


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, NLP_TRANSFER_CACHE=str(cache), OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = str(Path(__file__).parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(args: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, **kw)


def _wait_for_step(proc: subprocess.Popen, out: Path, step: int, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(int(p.name[5:]) >= step for p in ckpt.list_checkpoints(out) if ckpt.is_complete(p)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended before step {step}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint for step {step} after {timeout}s")


def _final(out: Path, strategy: str) -> tuple[dict, dict]:
    m = json.loads((out / "metrics.json").read_text())
    return m, load_file(str(out / WEIGHTS[strategy]))


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("resume_data") / "train.csv", make_rows(120))


@pytest.mark.parametrize("case", ["full", "lora", "frozen", "contrastive", "full-budget", "full-allrows"])
def test_sigkill_then_resume_matches_uninterrupted(tiny_model, data_csv, tmp_path, case):
    """contrastive: the kill lands in the head phase; the resumed run reuses the tuned encoder kept
    in checkpoints/contrastive/ (phase 1 is not repeated) and still ends bitwise equal."""
    strategy, extra = case.split("-")[0], EXTRA.get(case, [])
    env = _env(tmp_path / "cache")
    ref = _run(_args(tiny_model, data_csv, tmp_path / "ref", strategy, *extra), env)
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_m, ref_w = _final(tmp_path / "ref", strategy)
    total = ref_m["history"][-1]["step"]  # 96 train rows / batch 8 = 12 steps/epoch
    kill_at = random.Random().randint(2, total - 2)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_args(tiny_model, data_csv, out, strategy, *extra), env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_step(proc, out, kill_at)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()
    resumed = _run(_args(tiny_model, data_csv, out, strategy, *extra, "output.resume=auto"), env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout, f"killed at step {kill_at}: {resumed.stdout[-500:]}"
    if strategy == "contrastive":
        assert "tuned encoder reused" in resumed.stdout
        enc = load_file(str(out / "encoder" / "model.safetensors"))
        ref_enc = load_file(str(tmp_path / "ref" / "encoder" / "model.safetensors"))
        assert all((enc[k] == ref_enc[k]).all() for k in ref_enc), "tuned encoder differs after resume"
    m, w = _final(out, strategy)
    assert m["resumed_from"]
    assert ("rows occur in the training data" in resumed.stdout) == (case in ("full", "full-budget"))
    if case == "full-budget":
        assert [h["step"] for h in m["history"]] == [24, 48, 60]  # the budget survives the resume
    for key in ("held_out", "train_sample", "gap", "best_epoch", "best_step", "stopped_early"):
        assert m[key] == ref_m[key], f"{key} differs after kill at step {kill_at}"
    assert set(w) == set(ref_w)
    assert all((w[k] == ref_w[k]).all() for k in w), f"weights differ after kill at step {kill_at}"


def sigterm_then_resume(command: list[str], resume: list[str], out: Path, env: dict) -> None:
    """SIGTERM at step 3: a checkpoint, exit 143, no finished folder; then the resume finishes."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(proc, out, 3)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "checkpoint written" in stdout and "output.resume=auto" in stdout
    assert ckpt.latest_complete(out) is not None and not (out / "metrics.json").exists()
    resumed = _run(resume, env)
    assert resumed.returncode == 0 and (out / "metrics.json").is_file()
    assert "resumed from" in resumed.stdout


def test_sigterm_writes_checkpoint_and_exits_nonzero(tiny_model, data_csv, tmp_path):
    out = tmp_path / "term"
    sigterm_then_resume(_args(tiny_model, data_csv, out, "full"),
                        _args(tiny_model, data_csv, out, "full", "output.resume=auto"), out, _env(tmp_path / "cache"))


def test_incomplete_checkpoint_is_skipped_with_warning(tmp_path):
    good = tmp_path / "checkpoints" / "step-4"
    good.mkdir(parents=True)
    (good / "a.bin").write_bytes(b"1234")
    (good / "manifest.json").write_text(json.dumps({"step": 4, "files": {"a.bin": 4}}))
    bad = tmp_path / "checkpoints" / "step-9"
    bad.mkdir()
    (bad / "a.bin").write_bytes(b"12")
    (bad / "manifest.json").write_text(json.dumps({"step": 9, "files": {"a.bin": 4}}))  # truncated file
    (tmp_path / "checkpoints" / "step-10").mkdir()  # no manifest: killed mid-write
    with pytest.warns(UserWarning, match="step-10") as rec:
        assert ckpt.latest_complete(tmp_path) == good
    assert any("step-9" in str(w.message) for w in rec)


def test_prune_keeps_best(tmp_path):
    for step in (1, 2, 3, 4):
        d = tmp_path / "checkpoints" / f"step-{step}"
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"step": step, "files": {}}))
    ckpt.prune(tmp_path, keep_last_n=1, best_step=2)
    assert sorted(p.name for p in ckpt.list_checkpoints(tmp_path)) == ["step-2", "step-4"]


def test_resume_with_changed_config_names_the_keys(tiny_model, data_csv, tmp_path):
    env = _env(tmp_path / "cache")
    out = tmp_path / "o"
    assert _run(_args(tiny_model, data_csv, out, "frozen"), env).returncode == 0
    r = _run(_args(tiny_model, data_csv, out, "frozen", "output.resume=auto", "train.lr=0.5"), env)
    assert r.returncode == 2
    assert "train.lr (0.002 -> 0.5)" in r.stderr and "output.force_resume=true" in r.stderr


def test_nan_loss_stops_with_step_and_last_checkpoint(tiny_model, data_csv, tmp_path):
    from conftest import recipe_kwargs
    from nlp_transfer import NLPTransferError, Recipe, train
    kw = recipe_kwargs(tiny_model, data_csv, tmp_path / "nan", "full", train={"lr": 1e30, "head_lr": 1e30,
                                                                             "max_grad_norm": 0.0})
    kw["output"]["checkpoint_every_steps"] = 1
    with pytest.raises(NLPTransferError, match=r"training loss at step \d+: expected a finite number.*last good checkpoint"):
        train(Recipe(**kw))
    assert not (tmp_path / "nan" / "metrics.json").exists()


def test_is_complete_survives_a_checkpoint_pruned_while_it_is_read(tmp_path, monkeypatch):
    """A reader (resume, a monitoring script) racing the trainer's prune sees 'incomplete',
    never a FileNotFoundError (CI once failed that way while polling a live run)."""
    d = tmp_path / "checkpoints" / "step-3"
    d.mkdir(parents=True)
    (d / "a.bin").write_bytes(b"1234")
    (d / "manifest.json").write_text(json.dumps({"step": 3, "files": {"a.bin": 4}}))
    assert ckpt.is_complete(d)
    real_read = Path.read_text

    def vanish(self, *a, **k):  # the folder is pruned between the existence check and the read
        if self.name == "manifest.json":
            import shutil
            shutil.rmtree(self.parent)
        return real_read(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", vanish)
    assert ckpt.is_complete(d) is False
