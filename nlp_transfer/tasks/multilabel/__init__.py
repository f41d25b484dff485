"""Multi-label classification: label parsing and thresholds (labels.py), the task (task.py)."""
