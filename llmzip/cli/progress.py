"""What a person watching sees while llmzip works: a progress bar on a terminal.
"""

from __future__ import annotations

import sys

import click

from llmzip.cli.failures import SIGNALS


class ProgressBar:
    """tqdm on stderr while a terminal watches: tokens/s and the running bits per byte."""

    def __init__(self, label: str, enabled: bool, bytes_per_token: float = 0.0):
        self.label, self.enabled, self.bytes_per_token = label, enabled, bytes_per_token
        self.bar = None

    def __call__(self, done: int, total: int, bits: float) -> None:
        SIGNALS.checkpoint()
        if not self.enabled or total == 0:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=self.label, unit="tok", file=sys.stderr,
                            leave=False, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if bits and done:
            self.bar.set_postfix_str(f"{bits / (done * self.bytes_per_token or 1):.3f} bpb",
                                     refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Phases:
    """With -v: a line per phase on standard error, terminal or not: the model's loading,
    which engine and device run, each file's start and end with its speed."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        self.say(text)

    def say(self, text: str) -> None:
        if self.enabled:
            click.echo(f"llmzip: {text}", err=True)

    def start(self, name: str, doing: str, size: int) -> None:
        self.say(f"{name}: {doing} {size:,} bytes")

    def end(self, name: str, done: str, size: int, seconds: float) -> None:
        rate = f", {size / 1e3 / seconds:.2f} KB/s" if seconds > 0 and size else ""
        self.say(f"{name}: {done} {size:,} bytes in {duration(seconds)}{rate}")


def show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class BenchProgress:
    """A bar per llmzip phase and a line per finished row, on stderr."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.phase = enabled, None, None

    def __call__(self, phase: str, done: int, total: int, bits: float) -> None:
        SIGNALS.checkpoint()
        if not self.enabled:
            return
        if phase != self.phase:
            self.close()
            self.bar, self.phase = ProgressBar(phase, True, bytes_per_token=3.6), phase
        self.bar(done, total, bits)

    def row(self, r) -> None:
        self.close()
        if self.enabled:
            click.echo(f"  {r.file}: {r.compressor}: {r.bpb:.3f} bits/byte "
                       f"({r.compress_s:.1f} s + {r.decompress_s:.1f} s)", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.phase = None, None
