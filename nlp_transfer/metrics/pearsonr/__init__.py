"""Folder for the local `pearsonr` evaluate metric (load it with ``evaluate.load(<this folder>)``)."""
