"""Folder for the local `matthews_correlation` evaluate metric (load it with ``evaluate.load(<this folder>)``)."""
