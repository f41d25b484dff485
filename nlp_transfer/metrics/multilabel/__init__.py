"""Folder for the local `multilabel` evaluate metric (load it with ``evaluate.load(<this folder>)``)."""
