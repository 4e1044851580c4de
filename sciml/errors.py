"""Errors the command line reports in one line.

:class:`RunError` is a failure of a run that its user can act on (a setting that cannot work for this
problem, found only once the run computes it): its message says what to change, and ``sciml run``
prints it without a traceback (exit status 1). Input that is invalid on its face is a
:class:`~sciml.config.ConfigError` instead (exit status 2, before any work).
"""

from __future__ import annotations

__all__ = ["RunError"]


class RunError(RuntimeError):
    """A run cannot go on; the message names the cause and what to change."""
