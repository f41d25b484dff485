"""Folder for the local `seqeval` evaluate metric (load it with ``evaluate.load(<this folder>)``)."""
