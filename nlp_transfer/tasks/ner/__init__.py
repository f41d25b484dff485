"""Token classification: CoNLL reading and label utilities (conll.py), the task (task.py)."""
