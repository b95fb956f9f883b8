"""Errors raised at the library's boundary: each names the problem and the fix."""

from __future__ import annotations


class LangCellError(Exception):
    """Base class of every error this library raises on purpose."""


class LangCellInputError(LangCellError, ValueError):
    """Bad user input (data, configuration, arguments).

    The message says what is wrong and how to fix it: ``LangCellInputError(problem, fix)``.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem} Fix: {fix}")


class CheckpointError(LangCellInputError):
    """A checkpoint that is missing, malformed, unsafe or does not fit the model."""


class CorpusError(LangCellInputError):
    """A tokenized-cell corpus that is missing, incomplete or inconsistent."""


def shorten(value: object, limit: int = 80) -> str:
    """``str(value)`` cut to its first ``limit`` characters + "…" (a label in a message stays readable)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"
