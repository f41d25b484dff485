"""The engine: one training loop for one task or many (see engine.py)."""
from nlp_transfer.training.engine import Engine, run_plan
from nlp_transfer.training.result import RunResult
from nlp_transfer.training.runs import RunPlan

__all__ = ["Engine", "RunPlan", "RunResult", "run_plan"]
