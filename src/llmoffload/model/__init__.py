"""The system model: scenarios, instances, the execution model and its independent checker.

The bottom layer: it imports nothing of llmoffload but the shared top-level modules
(``errors``, ``files``), so every layer above can trust one definition of the system.
"""
