"""The errors a user acts on, each carrying the CLI exit code it maps to.

The library raises these and never prints or exits; `cli.py` turns them into one line on
stderr and `exit_code`. Messages are one line: what went wrong and what to do.
"""


class LlmzipError(Exception):
    """Base class: a problem with the input, the environment or the request (exit 1)."""

    exit_code = 1


class ModelUnavailableError(LlmzipError):
    """The model a request names is not installed or cannot be loaded (exit 1)."""


class CorruptArchiveError(LlmzipError):
    """The archive is truncated, damaged, foreign, or fails its checksum (exit 2)."""

    exit_code = 2


class ModelMismatchError(LlmzipError):
    """The archive was made with a different model or arithmetic than the one at hand (exit 2)."""

    exit_code = 2
