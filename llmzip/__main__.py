"""python -m llmzip: the same as the llmzip command."""

from llmzip.cli.commands import main

main(prog_name="llmzip")
