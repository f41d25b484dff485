"""Folder for the local `spearmanr` evaluate metric (load it with ``evaluate.load(<this folder>)``)."""
