"""llmoffload: where and in what order the pieces of an LLM request run across edge and cloud."""

from llmoffload.errors import OffloadError
from llmoffload.model.execution import Dispatch, Execution, Schedule, evaluate
from llmoffload.model.instance import Instance, load_instance, sample_instance
from llmoffload.model.scenario import Scenario, load_scenario

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
