"""llmoffload: where and in what order the pieces of an LLM request run across edge and cloud."""

from llmoffload.errors import OffloadError
from llmoffload.execution import Dispatch, Execution, Schedule, evaluate
from llmoffload.instance import Instance, load_instance, sample_instance
from llmoffload.scenario import Scenario, load_scenario

__all__ = [
    "Dispatch",
    "Execution",
    "Instance",
    "OffloadError",
    "Scenario",
    "Schedule",
    "evaluate",
    "load_instance",
    "load_scenario",
    "sample_instance",
]
