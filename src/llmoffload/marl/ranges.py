"""The ranges a learner's settings may take, declared on the config fields and checked
in one place for every learner.

A config field typed ``Positive``, ``NonNegative``, ``Unit`` or ``Count`` (a
``typing.Annotated`` type carrying a ``Range``) is checked by ``check_config``, which
``training.make_config`` and ``training.load_run`` call before anything is built or
written: an out-of-range ``--set`` is one clear error, not a crash (or a silent
nonsense run) after the run directory was started.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from llmoffload.errors import OffloadError


@dataclass(frozen=True)
class Range:
    """Finite numbers from ``low`` to ``high``, each end included unless marked open."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = self.low < value if self.low_open else self.low <= value
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def check(self, name: str, value: float) -> None:
        """One line naming the setting, its value and the range, if it lies outside."""
        if value not in self:
            raise OffloadError(f"{name}={value:g}: must be {self}")


Positive = Annotated[float, Range(0.0, low_open=True)]  # rates, clips, temperatures
NonNegative = Annotated[float, Range(0.0)]  # weights of loss terms and bonuses
Unit = Annotated[float, Range(0.0, 1.0)]  # discounts, probabilities, decaying weights
Count = Annotated[int, Range(1)]  # sizes, widths, periods
Tally = Annotated[int, Range(0)]  # counts that may be zero


def settings_of(cls: type) -> dict[str, tuple[type, Range | None]]:
    """Each field of a config dataclass: its plain type and its range, if it has one (its
    class's declarations, ``ClassVar``s, are no settings)."""
    hints = get_type_hints(cls, include_extras=True)
    out: dict[str, tuple[type, Range | None]] = {}
    for name in (f.name for f in fields(cls)):
        hint = hints[name]
        kind, *extra = get_args(hint) if get_origin(hint) is Annotated else (hint,)
        out[name] = (kind, next((x for x in extra if isinstance(x, Range)), None))
    return out


def check_config(config: Any) -> None:
    """Refuse a config with a setting outside its range (the first one found)."""
    for name, (_, allowed) in settings_of(type(config)).items():
        if allowed is not None:
            allowed.check(name, getattr(config, name))
