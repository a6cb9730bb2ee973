"""gzip's and xz's command lines as llmzip's commands, so scripts written for them work.

`llmzip FILE` compresses; -d (--decompress), -t (--test) and -l (--list) pick decompress,
test and `info --list`; -z (--compress) compress; -V is --version; and short flags may be
joined, as in `llmzip -dc FILE` or `llmzip -9k FILE`. A command named first (`llmzip
decompress ...`) is taken as it is. With no FILES, as in `tar c DIR | llmzip > DIR.tar.llmz`,
standard input is coded to standard output (`standard_input`).
"""

from __future__ import annotations

import os
import sys

__all__ = ["gzip_style", "standard_input"]

MODES = {"-d": "decompress", "--decompress": "decompress", "--uncompress": "decompress",
         "-t": "test", "--test": "test", "-l": "list", "--list": "list",
         "-z": "compress", "--compress": "compress"}
FLAGS = set("dtlzcfkqvrV123456789")  # short options that take no value, joinable
GROUP_OPTIONS = {"-h", "--help", "-V", "--version"}


def _split_joined(arg: str) -> list[str]:
    """'-dc' -> ['-d', '-c'] when every letter is a flag; anything else as it is."""
    if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2 \
            and set(arg[1:]) <= FLAGS:
        return [f"-{c}" for c in arg[1:]]
    return [arg]


def gzip_style(args: list[str], commands) -> list[str]:
    """The arguments as llmzip's group parses them: a command first. A first word that is
    neither a command, an option nor an existing path stays as it is, for click to say
    that no such command exists (a mistyped command is not taken for a file)."""
    if not args:  # `llmzip` alone: help on a terminal, else gzip's filter
        return args if sys.stdin.isatty() else ["compress"]
    if args[0] in commands or (len(args) == 1 and args[0] in GROUP_OPTIONS):
        return args
    if not args[0].startswith("-") and not os.path.lexists(args[0]):
        return args
    split = [part for arg in args for part in
             (_split_joined(arg) if arg != "--" else [arg])]
    if "-V" in split or "--version" in split:
        return ["--version"]
    if "-h" in split or "--help" in split:
        return ["--help"] if not any(a in MODES for a in split) else \
            [_command(split), "--help"]
    mode = _command(split)
    rest = [a for a in split if a not in MODES]
    if mode == "list":
        return ["info", "--list", *[a for a in rest if not a.startswith("-")]]
    if mode == "test":  # test writes nothing: the output options of the others do not apply
        rest = [a for a in rest if a not in ("-c", "-k", "-f")]
    return [mode, *rest]


def _command(split: list[str]) -> str:
    modes = {MODES[a] for a in split if a in MODES}
    if len(modes) > 1:
        import click
        raise click.UsageError(f"{' and '.join(sorted(modes))} are different commands; "
                               "give one")
    return modes.pop() if modes else "compress"


def standard_input(files: tuple[str, ...]) -> tuple[str, ...]:
    """FILES, or with none given, standard input ("-", which writes standard output unless
    -o says otherwise), as gzip does; refused in one line when standard input is a
    terminal, where nothing is being piped in."""
    if files:
        return files
    if sys.stdin.isatty():
        import click
        raise click.UsageError("no FILES given, and standard input is a terminal: give FILES "
                               "or pipe data in")
    return ("-",)
