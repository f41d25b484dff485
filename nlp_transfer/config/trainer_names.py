"""``transformers.TrainingArguments`` names accepted as aliases of nlp_transfer config keys.

:data:`TRAINER_ALIASES` is the one table (the CLI ``train --help`` and the README print it). An alias
works as an override (``learning_rate=1e-4`` or ``train.learning_rate=1e-4``), in a YAML section or
at the top level of a preset, and in ``Recipe(train={"learning_rate": 1e-4})``: it is rewritten to
its nlp_transfer key with a one-line ``[nlp_transfer] ...`` notice (once per alias and value). An
alias and its key both set to different values is a ConfigError naming both.

Batch size: nlp_transfer's ``train.batch_size`` is the GLOBAL batch (split over the processes);
Trainer's ``per_device_train_batch_size`` is per process (global = per_device x processes x
accumulation). The alias sets ``train.batch_size = per_device x WORLD_SIZE`` (the number of
processes of the launch, 1 in a plain ``python`` run) so a Trainer-sized run keeps its batch.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from typing import Any

from nlp_transfer.errors import ConfigError, is_main_process

#: Trainer name -> nlp_transfer key ("section.field").
TRAINER_ALIASES: dict[str, str] = {
    "learning_rate": "train.lr",
    "num_train_epochs": "train.epochs",
    "per_device_train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "eval.batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "warmup_ratio": "train.warmup_ratio",
    "weight_decay": "train.weight_decay",
    "lr_scheduler_type": "train.lr_scheduler",
    "max_grad_norm": "train.max_grad_norm",
    "seed": "train.seed",
    "data_seed": "data.seed",
    "max_steps": "train.max_steps",
    "fp16": "train.mixed_precision",
    "bf16": "train.mixed_precision",
    "torch_compile": "train.compile",
    "group_by_length": "train.group_by_length",
    "metric_for_best_model": "eval.metric_for_best",
    "load_best_model_at_end": "eval.select_best",
    "early_stopping_patience": "eval.patience",
    "early_stopping_threshold": "eval.min_delta",
    "eval_steps": "eval.every_steps",
    "output_dir": "output.dir",
    "overwrite_output_dir": "output.overwrite",
    "save_steps": "output.checkpoint_every_steps",
    "save_total_limit": "output.keep_last_n",
    "resume_from_checkpoint": "output.resume",
    "report_to": "output.report_to",
    "disable_tqdm": "output.progress_bars",
    "logging_steps": "output.logging_steps",
    "log_level": "output.verbosity",
    "run_name": "output.run_name",
    "push_to_hub": "hub.push",
    "hub_model_id": "hub.repo_id",
    "hub_private_repo": "hub.private",
    "hub_revision": "hub.revision",
}

#: How an alias's value differs from ours (shown in ``train --help`` and the README table).
TRAINER_ALIAS_NOTES: dict[str, str] = {
    "per_device_train_batch_size": "x number of processes (WORLD_SIZE): train.batch_size is the global batch",
    "fp16": "true -> train.mixed_precision=fp16 (false: left as is)",
    "bf16": "true -> train.mixed_precision=bf16 (false: left as is)",
    "lr_scheduler_type": "linear, cosine, constant; constant_with_warmup -> constant (ours warms up)",
    "metric_for_best_model": "an eval_ prefix is dropped (eval_f1 -> f1)",
    "resume_from_checkpoint": "true -> auto (latest checkpoint in output.dir), or a checkpoint path",
    "disable_tqdm": "inverted: disable_tqdm=true -> output.progress_bars=false",
    "report_to": "'all' -> tensorboard",
    "log_level": "debug, info, warning, error; critical -> error, passive -> left as is",
}

#: Trainer names nlp_transfer has no equivalent for -> what to do instead.
TRAINER_UNSUPPORTED: dict[str, str] = {
    "greater_is_better": "the direction follows eval.metric_for_best (loss: lower is better, "
                         "task metrics: their own direction); remove the key",
    "warmup_steps": "set train.warmup_ratio (warm-up as a fraction of the optimizer steps)",
    "eval_strategy": "evaluation runs every epoch, or every eval.every_steps optimizer steps",
    "evaluation_strategy": "evaluation runs every epoch, or every eval.every_steps optimizer steps",
    "save_strategy": "set output.checkpoint_every_epoch / output.checkpoint_every_steps",
    "logging_strategy": "logs go to output.dir/logs through output.report_to",
    "logging_dir": "logs go to output.dir/logs",
    "load_best_model_at_end": "nothing to set: the best evaluation (eval.metric_for_best) is kept",
    "optim": "the optimizer is AdamW (train.lr, train.head_lr, train.weight_decay)",
    "adam_beta1": "the optimizer is AdamW with torch's default betas",
    "adam_beta2": "the optimizer is AdamW with torch's default betas",
    "adam_epsilon": "the optimizer is AdamW with torch's default epsilon",
    "do_train": "a recipe always trains and evaluates; remove the key",
    "do_eval": "a recipe always evaluates on held-out data; remove the key",
    "do_predict": "set eval.use_test=true to score the test split",
    "gradient_checkpointing": "not supported; lower train.batch_size or model.max_length",
    "label_smoothing_factor": "not supported; remove the key",
    "dataloader_num_workers": "tokenisation processes are data.num_proc",
    "hub_token": "log in with `hf auth login` or set HF_TOKEN",
    "hub_strategy": "the output folder is pushed once, at the end of training (hub.push)",
    "lr_scheduler_kwargs": "not supported; train.lr_scheduler is linear, cosine or constant",
}

_SCHEDULERS = {"constant_with_warmup": "constant"}
_noticed: set[tuple[str, str]] = set()
_SKIP = object()


def notice(message: str) -> None:
    """Print ``[nlp_transfer] message`` on stderr once per process (main process only)."""
    key = ("notice", message)
    if key in _noticed:
        return
    _noticed.add(key)
    if is_main_process():
        print(f"[nlp_transfer] {message}", file=sys.stderr, flush=True)


def world_size() -> int:
    """Processes of this launch (``WORLD_SIZE`` of torchrun / accelerate launch), 1 otherwise."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def convert(name: str, value: Any) -> tuple[Any, str]:
    """(our value, a note for the notice) for the Trainer setting ``name=value``; the value is
    ``_SKIP`` when the alias leaves our setting as it is (``fp16=false``)."""
    truthy = value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "1"))
    falsy = value is False or value is None or (isinstance(value, str) and value.strip().lower() in ("false", "no", "0"))
    if name in ("fp16", "bf16"):
        return (name, "") if truthy else (_SKIP, "")
    if name == "per_device_train_batch_size" and isinstance(value, int) and not isinstance(value, bool):
        n = world_size()
        return value * n, f" ({value} per process x {n} process{'es' if n > 1 else ''}; ours is the global batch)"
    if name == "lr_scheduler_type" and isinstance(value, str):
        return _SCHEDULERS.get(value, value), ""
    if name == "metric_for_best_model" and isinstance(value, str):
        return value.removeprefix("eval_"), ""
    if name == "resume_from_checkpoint":
        return ("auto" if truthy else (None if falsy else value)), ""
    if name == "disable_tqdm" and isinstance(value, bool):
        return (not value), ""
    if name == "log_level" and isinstance(value, str):
        level = value.strip().lower()
        return (_SKIP, "") if level == "passive" else ({"critical": "error"}.get(level, level), "")
    if name == "report_to" and value == "all":
        return ["tensorboard"], ""
    return value, ""


def alias_name(section: str | None, key: str, own_fields: list[str] | tuple[str, ...] = ()) -> str | None:
    """The Trainer name ``key`` stands for when written in ``section`` (None: top level / bare), or
    None when ``key`` is a real field of that section or no alias."""
    if key in own_fields or key not in TRAINER_ALIASES:
        return None
    return key


def unsupported_hint(key: str) -> str:
    """For an unknown key: a note when it is (or is close to) a Trainer name we do not support."""
    name = key.split(".")[-1]
    match = name if name in TRAINER_UNSUPPORTED else next(iter(difflib.get_close_matches(
        name, list(TRAINER_UNSUPPORTED), n=1, cutoff=0.85)), None)
    if match is None:
        return ""
    return f" ('{match}' is a transformers.TrainingArguments name nlp_transfer does not support: {TRAINER_UNSUPPORTED[match]})"


def resolve(written: str, name: str, value: Any) -> tuple[str | None, Any, str]:
    """(our dotted key, our value, the notice to print once it is applied) for the alias ``name``
    written as ``written``; the key is None when the alias leaves our setting as it is."""
    target = TRAINER_ALIASES[name]
    ours, note = convert(name, value)
    if ours is _SKIP:
        return None, None, f"{written}={value} is Trainer's name for {target}: left as is"
    return target, ours, f"{written} is Trainer's name for {target}: using {target}={ours}{note}"


def _same(a: Any, b: Any) -> bool:
    """Equal values, numbers compared as numbers (YAML reads ``1e-4`` as text, ``0.0001`` as a float)."""
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def conflict(first: str, first_value: Any, second: str, second_value: Any) -> ConfigError:
    return ConfigError(f"{first} and {second} are the same setting", expected="one value",
                       found=f"{first}={first_value} and {second}={second_value}",
                       fix=f"keep one of them (e.g. remove {first if first.split('.')[-1] in TRAINER_ALIASES else second})")


def _default(obj: Any, field_name: str) -> Any:
    f = next(f for f in dataclasses.fields(obj) if f.name == field_name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _put(out: dict[str, Any], target: str, value: Any, written: str, origin: dict[str, str],
         main_field: dict[str, str]) -> None:
    """Set ``target`` (section.field) in the config dict ``out``, refusing a different value already
    set there by the same source."""
    section, key = target.split(".")
    cur = out.get(section)
    if dataclasses.is_dataclass(cur) and not isinstance(cur, type):
        have = getattr(cur, key)
        if not _same(have, value) and have != _default(cur, key):
            raise conflict(written, value, f"{section}.{key}", have)
        out[section] = dataclasses.replace(cur, **{key: value})
        return
    cur = dict(cur) if isinstance(cur, dict) else (
        {main_field[section]: cur} if isinstance(cur, str) and section in main_field else {})
    if key in cur and not _same(cur[key], value):
        raise conflict(written, value, origin.get(target, target), cur[key])
    cur[key] = value
    origin[target] = written
    out[section] = cur


def normalize(d: dict[str, Any], sections: dict[str, list[str]], main_field: dict[str, str]) -> dict[str, Any]:
    """A config dict with the Trainer names (top level or inside any section dict) rewritten to
    our keys; ``sections`` maps each section to its field names."""
    if not any(k in TRAINER_ALIASES for k in d) and not any(
            s in sections and isinstance(v, dict) and any(alias_name(s, k, sections[s]) for k in v)
            for s, v in d.items()):
        return d
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items() if k not in TRAINER_ALIASES}
    origin: dict[str, str] = {}
    moves = [(k, k, v) for k, v in d.items() if k in TRAINER_ALIASES]
    for s, sec in list(out.items()):
        if s in sections and isinstance(sec, dict):
            for k in [k for k in sec if alias_name(s, k, sections[s])]:
                moves.append((f"{s}.{k}", k, sec.pop(k)))
    notices = []
    for written, name, value in moves:
        target, ours, message = resolve(written, name, value)
        if target is not None:
            _put(out, target, ours, written, origin, main_field)
        notices.append(message)
    for message in notices:  # only once every alias applied without a conflict
        notice(message)
    return out


def override(key: str, value: Any, sections: dict[str, list[str]],
             seen: dict[str, tuple[str, Any, Any, str]]) -> tuple[str, Any] | None:
    """A ``key=value`` override with a Trainer name (bare ``learning_rate`` or ``train.learning_rate``)
    rewritten to (our key, our value), None when it leaves our setting as it is. ``seen`` (our key ->
    (written key, written value, our value, notice)) collects one override list: an alias and its key
    with different values raise a ConfigError naming both. :func:`notify` prints the notices after."""
    parts = key.split(".")
    name = parts[-1]
    target, ours, message = key, value, ""
    if name in TRAINER_ALIASES and (len(parts) == 1 or (len(parts) == 2 and parts[0] in sections
                                                        and name not in sections[parts[0]])):
        target, ours, message = resolve(key, name, value)
        if target is None:
            seen[f"{key}={value}"] = (key, value, None, message)  # nothing set: only the notice
            return None
    prev = seen.get(target)
    if prev is not None and prev[0] != key and not _same(prev[2], ours):
        raise conflict(key, value, prev[0], prev[1])
    seen[target] = (key, value, ours, message or (prev[3] if prev is not None else ""))
    return target, ours


def notify(seen: dict[str, tuple[str, Any, Any, str]]) -> None:
    """Print the notices of an override list collected by :func:`override` (once it all applied)."""
    for *_, message in seen.values():
        if message:
            notice(message)
