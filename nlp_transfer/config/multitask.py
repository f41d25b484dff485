"""Multi-task recipe config: the shared sections (model, strategy, train, eval, output, hub)
plus ``tasks`` (name -> task type + data) and ``multitask`` (sampling of tasks per step)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from nlp_transfer.config import DataConfig, RecipeConfig, apply_overrides, closest, parse_value, read_yaml
from nlp_transfer.errors import ConfigError
from nlp_transfer.data.readers import READERS

SAMPLING = ("proportional", "temperature", "uniform")
#: The sections a multi-task preset shares with a single-task recipe.
BASE_SECTIONS = ("model", "strategy", "train", "eval", "output", "hub")


# --------------------------------------------------------------------------- config

@dataclass
class TaskEntry:
    """One task of a multi-task recipe."""
    name: str
    task: str = "sequence_classification"
    data: DataConfig | dict | str = field(default_factory=DataConfig)
    #: Reader for files the core does not read: "trec" (coarse labels), "trec_fine".
    reader: str | None = None
    #: Multiplies this task's loss.
    loss_weight: float = 1.0
    #: Weight of this task's metric_for_best in the combination that drives early stopping.
    combine_weight: float = 1.0
    metrics: list[str] | None = None
    metric_for_best: str | None = None

    def __post_init__(self) -> None:
        from nlp_transfer.registry import TASKS
        if self.task not in TASKS or self.task == "multi_task":
            raise ConfigError(f"tasks.{self.name}.task", expected=f"one of {sorted(TASKS)}", found=repr(self.task)
                              + closest(str(self.task), list(TASKS)), fix="pick a single-task type for each task")
        if isinstance(self.data, str):
            self.data = DataConfig(name=self.data)
        elif isinstance(self.data, dict):
            valid = [f.name for f in fields(DataConfig)]
            for k in self.data:
                if k not in valid:
                    raise ConfigError(f"unknown config key 'tasks.{self.name}.data.{k}'", expected=f"one of {valid}",
                                      found=repr(k) + closest(k, valid), fix="use a valid data.* key")
            self.data = DataConfig(**self.data)
        if self.reader is not None and self.reader not in READERS:
            raise ConfigError(f"tasks.{self.name}.reader", expected=f"one of {sorted(READERS)} or null",
                              found=repr(self.reader) + closest(str(self.reader), list(READERS)),
                              fix="leave it out for files the core reads (csv/tsv/json/parquet/conll)")
        for key in ("loss_weight", "combine_weight"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"tasks.{self.name}.{key}", expected="a number >= 0", found=repr(v),
                                  fix=f"pass tasks.{self.name}.{key}=1.0")
        if isinstance(self.metrics, str):
            self.metrics = [m.strip() for m in self.metrics.split(",") if m.strip()]


@dataclass
class MultiTaskSettings:
    """How tasks share the steps and how their scores combine."""
    sampling: str = "proportional"
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLING:
            raise ConfigError("multitask.sampling", expected=f"one of {list(SAMPLING)}",
                              found=repr(self.sampling) + closest(str(self.sampling), SAMPLING),
                              fix="pass multitask.sampling=proportional")
        if isinstance(self.temperature, str):
            self.temperature = float(self.temperature)
        if not isinstance(self.temperature, (int, float)) or self.temperature <= 0:
            raise ConfigError("multitask.temperature", expected="a number > 0", found=repr(self.temperature),
                              fix="pass multitask.temperature=2.0")


@dataclass
class MultiTaskConfig:
    """The shared sections (a ``RecipeConfig`` whose data/task are unused) + the tasks."""
    base: RecipeConfig
    tasks: dict[str, TaskEntry]
    multitask: MultiTaskSettings = field(default_factory=MultiTaskSettings)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("tasks", expected="at least one task", found="none",
                              fix="add tasks: {name: {task: ..., data: {...}}}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MultiTaskConfig":
        valid = list(BASE_SECTIONS) + ["tasks", "multitask"]
        for k in d:
            if k not in valid:
                raise ConfigError(f"unknown config key '{k}'", expected=f"one of {valid}",
                                  found=repr(k) + closest(k, valid), fix="remove or rename the key")
        base = RecipeConfig.from_dict({k: d[k] for k in BASE_SECTIONS if k in d})
        tasks_d = d.get("tasks") or {}
        if not isinstance(tasks_d, dict):
            raise ConfigError("tasks", expected="a mapping {name: {task:, data:}}", found=type(tasks_d).__name__,
                              fix="write tasks: {sentiment: {task: sequence_classification, data: {...}}}")
        tasks = {}
        valid_t = [f.name for f in fields(TaskEntry) if f.name != "name"]
        for name, entry in tasks_d.items():
            entry = dict(entry or {})
            for k in entry:
                if k not in valid_t:
                    raise ConfigError(f"unknown config key 'tasks.{name}.{k}'", expected=f"one of {valid_t}",
                                      found=repr(k) + closest(k, valid_t), fix="use a valid task key")
            tasks[str(name)] = TaskEntry(name=str(name), **entry)
        mt = d.get("multitask") or {}
        valid_m = [f.name for f in fields(MultiTaskSettings)]
        for k in mt:
            if k not in valid_m:
                raise ConfigError(f"unknown config key 'multitask.{k}'", expected=f"one of {valid_m}",
                                  found=repr(k) + closest(k, valid_m), fix="use a valid multitask.* key")
        return cls(base=base, tasks=tasks, multitask=MultiTaskSettings(**mt))

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.base.to_dict().items() if k in BASE_SECTIONS}
        d["multitask"] = dataclasses.asdict(self.multitask)
        d["tasks"] = {n: {k: v for k, v in dataclasses.asdict(t).items() if k != "name"} for n, t in self.tasks.items()}
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def only(self, task: str, output_dir: str | None = None) -> "MultiTaskConfig":
        """The same recipe restricted to one task (the single-task baseline)."""
        base = RecipeConfig.from_dict(self.base.to_dict())
        if output_dir:
            base.output.dir = output_dir
        return MultiTaskConfig(base=base, tasks={task: self.tasks[task]}, multitask=self.multitask)


def apply_multitask_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``key=value`` overrides: ``tasks.<name>.<key>[.<data key>]`` and ``multitask.<key>`` here,
    everything else (``strategy=lora``, ``train.lr=...``) through the core's rules."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    core: list[str] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError("override", expected="key=value", found=repr(item), fix="write e.g. strategy=lora")
        key = key.strip().lstrip("-")
        value = parse_value(key, raw)
        parts = key.split(".")
        if parts[0] == "multitask" and len(parts) == 2:
            d["multitask"] = {**(d.get("multitask") or {}), parts[1]: value}
        elif parts[0] == "tasks" and len(parts) in (3, 4):
            tasks = {n: dict(e or {}) for n, e in (d.get("tasks") or {}).items()}
            if parts[1] not in tasks:
                raise ConfigError(f"override '{key}'", expected=f"a task among {sorted(tasks)}", found=repr(parts[1])
                                  + closest(parts[1], list(tasks)), fix="check the task name")
            entry = tasks[parts[1]]
            if len(parts) == 4:
                if parts[2] != "data":
                    raise ConfigError(f"override '{key}'", expected="tasks.<name>.data.<key>", found=repr(key),
                                      fix="e.g. tasks.sentiment.data.max_train_samples=1000")
                data = entry.get("data") or {}
                data = {"name": data} if isinstance(data, str) else dict(data)
                data[parts[3]] = value
                entry["data"] = data
            else:
                entry[parts[2]] = value
            d["tasks"] = tasks
        else:
            core.append(item)
    if core:
        base = apply_overrides({k: d[k] for k in BASE_SECTIONS if k in d}, core)
        d.update(base)
    return d


def load_multitask_config(path: str | Path, overrides: list[str] | None = None) -> MultiTaskConfig:
    """A multi-task YAML preset with ``key=value`` overrides."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config file", expected="an existing YAML file", found=str(p),
                          fix="pass recipes/configs/multitask_<preset>.yaml")
    d = read_yaml(p)
    if not isinstance(d, dict) or "tasks" not in d:
        raise ConfigError(f"config file {p}", expected="a multi-task preset with a 'tasks' mapping",
                          found=f"keys {sorted(d) if isinstance(d, dict) else type(d).__name__}",
                          fix="add tasks: {name: {task:, data:}}")
    return MultiTaskConfig.from_dict(apply_multitask_overrides(d, overrides or []))


def is_multitask_config(path: str | Path) -> bool:
    """True for a YAML preset with a top-level ``tasks`` mapping."""
    try:
        d = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(d, dict) and isinstance(d.get("tasks"), dict)
