"""Folder for the local `precision` evaluate metric (load it with ``evaluate.load(<this folder>)``)."""
