"""The built-in scenarios: every NAME.yaml here loads as ``--scenario NAME`` (the folder is
listed by ``model.scenario.builtin``; ``paper`` comes first, the rest in name order)."""
