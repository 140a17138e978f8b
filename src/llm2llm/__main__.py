"""`python -m llm2llm` runs the command-line interface."""

from llm2llm.cli import main

main()
