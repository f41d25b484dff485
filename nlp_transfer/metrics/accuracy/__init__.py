"""Folder for the local `accuracy` evaluate metric (load it with ``evaluate.load(<this folder>)``)."""
