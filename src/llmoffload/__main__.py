"""``python -m llmoffload``: the same command line as the ``llmoffload`` script."""

from llmoffload.cli.app import main

main()
