"""Run schedules for real: drive OpenAI-compatible LLM endpoints with a policy's plan.

Needs the ``runtime`` extra (httpx, FastAPI, uvicorn); the research core does not.
"""
