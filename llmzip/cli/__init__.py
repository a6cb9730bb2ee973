"""The llmzip command line: `commands` (click: parse, call one library function, print),
`outputs` (files that appear whole, never over an input or without -f), `failures` (the one
place errors become a line and an exit code, and signals an interruption), `progress`."""

from llmzip.cli.commands import main

__all__ = ["main"]
