"""Errors that reach the user as one line.

Anything the user can cause (a bad file, a wrong shape, an unreachable board) raises an
``EdgeprofError``; the CLI prints its message on one line and exits non-zero, never a traceback.
"""
from __future__ import annotations


class EdgeprofError(Exception):
    """A problem the user can fix; ``str(err)`` is the one-line message shown."""

    exit_code = 1


class InputError(EdgeprofError):
    """Bad model, data, shape or option."""


class WorkerError(EdgeprofError):
    """The worker (local subprocess or remote board) reported an error or died."""


class NotApplicable(EdgeprofError):
    """An operation that does not apply to this input (e.g. saturate on a grayscale image)."""
