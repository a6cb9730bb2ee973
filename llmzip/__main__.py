"""python -m llmzip: the same as the llmzip command."""

from .cli import main

main()
