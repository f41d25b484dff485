"""Folder for the local `f1` evaluate metric (load it with ``evaluate.load(<this folder>)``)."""
