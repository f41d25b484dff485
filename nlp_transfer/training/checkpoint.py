"""Checkpoints that survive SIGKILL: atomic folders with a manifest, resume from the
latest complete one, prune old ones but never the best.

A checkpoint is ``<output>/checkpoints/step-<N>/`` holding what
``accelerator.save_state`` writes (trainable weights, optimizer, scheduler, RNG states
of every process) plus ``trainer_state.json`` (epoch, step, batches consumed in the
epoch, best metric and its step, early-stopping counter, history, resolved config) and
``best.safetensors`` (the best trainable weights so far). It is written into
``step-<N>.tmp`` and renamed only after ``manifest.json`` (file sizes) is written, so a
folder without a matching manifest is incomplete by construction.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nlp_transfer.errors import ConfigError

#: Config keys that may differ between the interrupted run and its resumption.
RESUME_IGNORED = {"output.resume", "output.force_resume", "output.overwrite", "output.progress_bars",
                  "output.report_to", "hub.push", "hub.repo_id", "hub.private", "hub.revision", "hub.merge", "hub.base_model_id",
                  "eval.batch_size", "output.logging_steps", "output.verbosity", "output.run_name",
                  "output.tracker_init_kwargs", "train.heap_allocations"}


def checkpoints_dir(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def _manifest(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def is_complete(folder: Path) -> bool:
    """A checkpoint is complete when its manifest exists and every file matches its size."""
    m = folder / "manifest.json"
    try:
        listed = json.loads(m.read_text())["files"]
        for rel, size in listed.items():
            if (folder / rel).stat().st_size != size:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # Missing or malformed manifest, a missing file - or the folder vanishing while we read
        # it (another process pruning, seen as a flaky FileNotFoundError in CI): incomplete.
        return False
    return True


def list_checkpoints(out_dir: Path) -> list[Path]:
    """All ``step-N`` folders (complete or not), newest first."""
    d = checkpoints_dir(out_dir)
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def latest_complete(out_dir: Path) -> Path | None:
    """Newest complete checkpoint; incomplete or corrupt ones are skipped with a warning."""
    for ckpt in list_checkpoints(out_dir):
        if is_complete(ckpt):
            return ckpt
        warnings.warn(f"skipping incomplete or corrupt checkpoint {ckpt} (manifest missing or sizes differ)",
                      stacklevel=2)
    return None


def config_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ (ignoring output/hub keys that may change on resume)."""
    diffs = []
    for section in sorted(set(saved) | set(current)):
        a, b = saved.get(section), current.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                key = f"{section}.{k}"
                if key not in RESUME_IGNORED and a.get(k) != b.get(k):
                    diffs.append(f"{key} ({a.get(k)!r} -> {b.get(k)!r})")
        elif a != b:
            diffs.append(f"{section} ({a!r} -> {b!r})")
    return diffs


def save_checkpoint(accelerator: Any, out_dir: Path, step: int, state: dict[str, Any],
                    best_weights: dict[str, torch.Tensor] | None, keep_last_n: int, best_step: int | None) -> Path:
    """Write ``step-<step>`` atomically on every process (each saves its RNG state)."""
    root = checkpoints_dir(out_dir)
    final = root / f"step-{step}"
    tmp = root / f"step-{step}.tmp"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    # The RNG state *inside* an epoch (restored after a resumed data iterator is built);
    # one file per process, written before the manifest so it is covered by it.
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, tmp / f"loop_rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1, default=str))
        if best_weights is not None:
            save_file({k: v.contiguous() for k, v in best_weights.items()}, str(tmp / "best.safetensors"))
        (tmp / "manifest.json").write_text(json.dumps({"step": step, "files": _manifest(tmp)}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        prune(out_dir, keep_last_n, best_step)
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def prune(out_dir: Path, keep_last_n: int, best_step: int | None) -> None:
    """Keep the newest ``keep_last_n`` complete checkpoints and the best one; drop stale temps."""
    kept = 0
    for ckpt in list_checkpoints(out_dir):
        step = int(ckpt.name[5:])
        if is_complete(ckpt) and kept < keep_last_n:
            kept += 1
            continue
        if best_step is not None and step == best_step and is_complete(ckpt):
            continue
        shutil.rmtree(ckpt, ignore_errors=True)
    for tmp in checkpoints_dir(out_dir).glob("step-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(accelerator: Any, ckpt: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore weights/optimizer/scheduler/RNG via Accelerate; return our state and best weights."""
    # strict=False: checkpoints hold only the trainable weights (a frozen encoder is not copied).
    accelerator.load_state(str(ckpt), strict=False)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    best = load_file(str(ckpt / "best.safetensors")) if (ckpt / "best.safetensors").is_file() else None
    return state, best


def trainable_only_hook(models: list[torch.nn.Module], weights: list[dict[str, torch.Tensor]], _dir: str) -> None:
    """``register_save_state_pre_hook``: keep only trainable tensors in checkpoints."""
    for i, model in enumerate(models):
        if i >= len(weights):
            break
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        weights[i] = {k: v for k, v in weights[i].items() if k in names or k.removeprefix("module.") in names}


def resolve_resume(out_dir: Path, resume: str | None) -> Path | None:
    """``resume=auto`` -> latest complete checkpoint (or None: fresh start); a path -> that one."""
    if not resume:
        return None
    if resume == "auto":
        return latest_complete(out_dir)
    p = Path(resume)
    if not p.is_dir():
        raise ConfigError("output.resume", expected="'auto' or a checkpoint folder", found=f"'{resume}' does not exist",
                          fix="pass output.resume=auto or a path like outputs/run/checkpoints/step-120")
    if not is_complete(p):
        raise ConfigError(f"checkpoint {p}", expected="a complete checkpoint (manifest.json with matching sizes)",
                          found="an incomplete or corrupt folder", fix="pass output.resume=auto to use the latest complete one")
    return p


class StopSignal:
    """SIGTERM / SIGINT set a flag; the loop checkpoints at the next step and exits non-zero."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave handlers alone
                pass
        return self

    def _handler(self, signum: int, _frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
