"""Folder for the local `recall` evaluate metric (load it with ``evaluate.load(<this folder>)``)."""
