"""Failures as gzip users expect them: one line on standard error and an exit code.

Every LlmzipError becomes `llmzip: <what>` and its exit code (1 error, 2 corrupt or
mismatched archive) in `errors_to_exit_codes`, the only place that maps them; Ctrl-C and
SIGTERM become `llmzip: interrupted` and 130 or 143, raised where no output is half-made.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import click

from llmzip.errors import LlmzipError


def one_line(text: str) -> str:
    """Messages may quote file and model names: escape whatever would break the line or
    drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Fail(click.ClickException):
    """A one-line error with an exit code, printed as 'llmzip: message'."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None):
        click.echo(f"llmzip: {one_line(self.format_message())}", err=True)


@contextlib.contextmanager
def errors_to_exit_codes():
    """Library errors to one line and an exit code. Anything else is a bug in llmzip: it still
    gets one line (and exit 1), asking for a report, never a traceback."""
    try:
        yield
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `llmzip`: click prints help
            raise
        raise Fail(usage_line(exc), 1) from None
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except LlmzipError as exc:
        raise Fail(str(exc), exc.exit_code) from None
    except OSError as exc:
        name = f"{exc.filename}: " if exc.filename else ""
        raise Fail(f"{name}{exc.strerror or exc}", 1) from None
    except MemoryError:
        raise Fail("out of memory (try a smaller --group-size)", 1) from None
    except KeyboardInterrupt:
        raise Fail("interrupted", 128 + signal.SIGINT) from None
    except Exception as exc:
        raise Fail(f"internal error: {type(exc).__name__}: {exc} (please report)", 1) from None


def team_prefix() -> str:
    """'process 1 of 2: ' under a launcher that started several (which stops them all when
    one fails, and names the one that failed), else nothing."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return f"process {os.environ.get('RANK', '?')} of {size}: " if size > 1 else ""


def usage_line(exc: click.UsageError) -> str:
    """click's usage error as one line; exit code 2 is kept for archives that are bad."""
    hint = f"; see '{exc.ctx.command_path} -h'" if exc.ctx is not None else ""
    return exc.format_message().rstrip(".") + hint


class Interrupted(BaseException):
    """SIGINT or SIGTERM. Not a KeyboardInterrupt, so that click does not turn it into
    'Aborted!'; it unwinds every `finally` to `_Llmzip.main`, which reports it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def importing(frame) -> bool:
    """Is this frame, or one that called it, running an import?"""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


class Signals:
    """Turns SIGINT and SIGTERM into Interrupted, except while output is being put in place
    (`held_back`), where the signal waits until the output is whole or removed.

    Every signal is also remembered until it is raised: Python runs a handler wherever the
    main thread is, and an exception raised inside a ctypes callback or a `__del__` is
    dropped (numba compiling on a first run is inside llvmlite's callbacks much of the time;
    CI once saw a Ctrl-C ignored that way). `checkpoint`, called on every progress report and
    before any output is written, raises a signal that was dropped; the drop itself prints
    nothing. A signal that lands inside an import waits for the next checkpoint too: torch
    half imported (the decoder imports it for its int8 matmul) aborted the process at exit
    (SIGABRT, not exit code 143; seen 1 time in ~40 under load)."""

    def __init__(self):
        self.holding = 0
        self.pending: int | None = None

    def handler(self, signum, frame):
        self.pending = self.pending or signum
        if not self.holding and not importing(frame):
            raise Interrupted(signum)  # `pending` stays set in case this one is dropped

    def raise_pending(self) -> None:
        if self.pending:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)

    def checkpoint(self) -> None:
        """Raise a signal that came and was dropped (outside `held_back`)."""
        if not self.holding:
            self.raise_pending()

    @contextlib.contextmanager
    def held_back(self):
        self.checkpoint()  # a dropped signal stops the command before its output is written
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        if not self.holding:
            self.raise_pending()

    @contextlib.contextmanager
    def installed(self):
        """Handlers for the length of one command (only the main thread may set them)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.holding, self.pending = 0, None
        previous = {s: signal.signal(s, self.handler) for s in (signal.SIGINT, signal.SIGTERM)}
        previous_hook = sys.unraisablehook

        def quiet_about_dropped_signals(unraisable):  # no traceback: it is raised again later
            if not isinstance(unraisable.exc_value, Interrupted):
                previous_hook(unraisable)
        sys.unraisablehook = quiet_about_dropped_signals
        try:
            yield
        finally:
            sys.unraisablehook = previous_hook
            for signum, handler in previous.items():
                signal.signal(signum, handler)


SIGNALS = Signals()
