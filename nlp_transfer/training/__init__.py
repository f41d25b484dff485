"""The engine: one training loop for one task or many (see engine.py)."""
from .engine import Engine, run_plan
from .result import RunResult
from .runs import RunPlan

__all__ = ["Engine", "RunPlan", "RunResult", "run_plan"]
