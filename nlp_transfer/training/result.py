"""What a run returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    """Where the model is, and its metrics."""
    output_dir: Path
    metrics: dict[str, Any]
    #: The config that was run (RecipeConfig, or MultiTaskConfig for a multi-task run).
    config: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    #: The trained module (best weights restored; PEFT-wrapped for lora), for inspection.
    model: Any = None
