"""Errors that say what was expected, what was found and how to fix it.

Every user-facing failure in nlp_transfer raises a subclass of
:class:`NLPTransferError` built with :func:`make_message`, so messages share one
shape: ``<what>: expected <expected>, found <found>. Fix: <fix>`` on one line.
"""
from __future__ import annotations


class NLPTransferError(Exception):
    """Base class for errors caused by user input (config, data, model, environment)."""

    def __init__(self, what: str, expected: str | None = None, found: str | None = None,
                 fix: str | None = None) -> None:
        self.what, self.expected, self.found, self.fix = what, expected, found, fix
        super().__init__(make_message(what, expected, found, fix))


def make_message(what: str, expected: str | None = None, found: str | None = None,
                 fix: str | None = None) -> str:
    """Join the parts into one line (newlines in parts are flattened)."""
    parts = [what]
    if expected is not None:
        parts.append(f"expected {expected}")
    if found is not None:
        parts.append(f"found {found}")
    msg = ": ".join(parts[:1]) + (": " + ", ".join(parts[1:]) if len(parts) > 1 else "")
    if fix:
        msg += f". Fix: {fix}"
    return " ".join(msg.split())


class ConfigError(NLPTransferError, ValueError):
    """Invalid or unknown configuration key/value."""


class DataError(NLPTransferError, ValueError):
    """The dataset cannot be used as given (missing columns, bad labels, empty...)."""


class ModelError(NLPTransferError, ValueError):
    """The model cannot be loaded or adapted as asked."""


class EnvironmentSetupError(NLPTransferError, RuntimeError):
    """The machine / launcher setup cannot run the requested configuration."""


def is_main_process() -> bool:
    """True on the process that reports for a launch: rank 0 under torchrun / accelerate launch
    (``RANK``, else ``LOCAL_RANK``), or a plain single process (neither set)."""
    import os
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")).strip() or "0"
    return rank == "0"
