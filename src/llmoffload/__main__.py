"""``python -m llmoffload``: the same command line as the ``llmoffload`` script."""

from llmoffload.cli import main

main()
