"""What a run prints: Python logging on the ``nlp_transfer`` logger, to stdout, one line a message.

During a run only the main process speaks (the others' logger is disabled); the
level comes from ``output.verbosity`` or the ``NLP_TRANSFER_VERBOSITY`` environment variable
(``info`` by default; ``warning`` is what ``--quiet`` sets)."""
from __future__ import annotations

import logging
import os
import sys

NAME = "nlp_transfer"
ENV = "NLP_TRANSFER_VERBOSITY"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (pytest and notebooks swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):  # noqa: ANN201
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def verbosity(setting: str | None = None) -> str:
    """The level name in force: the setting, else the environment variable, else ``info``."""
    name = (setting or os.environ.get(ENV) or "info").lower()
    return name if name in LEVELS else "info"


def configure(setting: str | None = None) -> logging.Logger:
    """The ``nlp_transfer`` logger at the chosen level, with one stdout handler."""
    logger = logging.getLogger(NAME)
    if not any(isinstance(h, StdoutHandler) for h in logger.handlers):
        handler = StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(LEVELS[verbosity(setting)])
    return logger
