"""The output folder: checked before a run, written atomically after it, and the final table."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from nlp_transfer.errors import ConfigError
from nlp_transfer.model import DEFAULT_MODEL, embedded_model_path, format_params, weights_sha256

#: 2: pooled-head encoders in encoder/, native task-model folders, held_out.jsonl (1 still loads).
FORMAT_VERSION = 2
#: Files a run may write at the top of its output folder (stale ones are removed on overwrite).
ARTIFACTS = {"model.safetensors", "head.safetensors", "adapter_model.safetensors", "adapter_config.json",
             "config.json", "nlp_transfer.json", "metrics.json", "recipe.yaml", "confusion_matrix.png",
             "confusion_matrices", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
             "base_model", "held_out.jsonl", "encoder"}


def library_versions() -> dict[str, str]:
    """Versions of the libraries a trained model depends on (nlp_transfer.json ``versions``; the model card)."""
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("nlp_transfer", "transformers", "torch", "peft", "accelerate", "datasets", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def base_reference(resolved: str, name: str) -> dict[str, Any]:
    """How an output folder points back at the encoder it was trained from."""
    ref: dict[str, Any] = {"name": name, "path": resolved}
    emb = embedded_model_path()
    if emb is not None and Path(resolved) == emb:
        ref["name"] = DEFAULT_MODEL
        ref["embedded"] = True
    ref["sha256"] = weights_sha256(resolved) if Path(resolved).is_dir() else None
    return ref


def prepare_output_dir(out: Path, overwrite: bool) -> None:
    """A new or empty folder (or ``overwrite``), and one we can write: checked before training."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output folder {out}", expected="a new or empty folder",
                          found="an existing folder with files",
                          fix="pass output.overwrite=true, or choose output.dir=<new folder>")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output folder {out}", expected="a writable folder", found=f"{type(e).__name__}: {e.strerror}",
                          fix="choose output.dir=<a folder you can write>") from None


def write_atomically(out_dir: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temporary folder inside ``out_dir``, which is then moved in.

    A failed write (full disk...) leaves no half-written folder behind. ``metrics.json`` marks
    a complete folder: it is removed first and moved in last, so a crash mid-move never pairs
    old metrics with new weights; stale artifacts of an earlier run are dropped."""
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
    try:
        write(tmp)
        (out_dir / "metrics.json").unlink(missing_ok=True)
        fresh = {p.name for p in tmp.iterdir()}
        for stale in ARTIFACTS - fresh:
            target = out_dir / stale
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        for p in sorted(tmp.iterdir(), key=lambda p: p.name == "metrics.json"):
            target = out_dir / p.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(p, target)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def format_table(m: dict[str, Any], best_metric: str) -> str:
    """The final printout: held-out vs train-sample metrics, gap, best epoch, params, time."""
    rows = []
    names = [k for k in m["held_out"] if k not in ("loss", "n")]
    w = max(len(n) for n in names + ["metric"]) + 2
    rows.append(f"{'metric':<{w}}{'held-out':>10}{'train-sample':>14}{'gap':>9}")
    for n in names:
        ho = m["held_out"][n]
        tr = m["train_sample"].get(n, float("nan"))
        rows.append(f"{n:<{w}}{ho:>10.4f}{tr:>14.4f}{tr - ho:>+9.4f}")
    rows.append("")
    rows.append(f"best epoch        {m['best_epoch']} of {m['epochs_run']} (by held-out {best_metric})")
    rows.append(f"stopped early     {'yes' if m['stopped_early'] else 'no'}")
    rows.append(f"strategy          {m['strategy']}  ({format_params(m['trainable_params'], m['total_params'])})")
    d = m["data"]
    dropped = "streamed: held-out texts kept out of training" if d.get("streamed") else \
        f"{d.get('duplicates_dropped', 0)} duplicates, {d.get('leaked_dropped', 0)} leaks dropped"
    rows.append(f"held-out / train  {d['held_out_size']} / {d['train_size']} examples ({dropped})")
    rows.append(f"wall time         {m['wall_s']:.1f} s")
    line = "-" * max(len(r) for r in rows)
    return "\n".join([line] + rows + [line])
