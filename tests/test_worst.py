"""The worst-case search: seeded, never below its start, within the scenario's ranges, and
its ratio reproduced by scheduling the instance it writes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from llmoffload.experiments.policies import resolve_policy
from llmoffload.experiments.worst import nudge, ratio, worst_case
from llmoffload.model.instance import Instance, load_instance, sample_instance
from llmoffload.model.scenario import load_scenario


def start(scenario: str = "contended", tasks: int = 4) -> Instance:
    return sample_instance(load_scenario(scenario), np.random.default_rng(2), tasks)


def test_the_worst_case_is_seeded_and_reproduced_from_its_file(tmp_path: Path) -> None:
    heft, best = resolve_policy("heft", 1.0), resolve_policy("best-classic", 1.0)
    first = worst_case(start(), heft, best, np.random.default_rng(7), steps=12)
    again = worst_case(start(), heft, best, np.random.default_rng(7), steps=12)
    assert first.instance == again.instance and first.ratio == again.ratio
    assert first.start == ratio(heft, best, start())
    assert first.ratio >= first.start and first.tried == 13
    path = tmp_path / "worst.json"
    path.write_text(first.instance.dumps())
    assert ratio(heft, best, load_instance(path)) == pytest.approx(first.ratio, rel=1e-12)


def numbers(inst: Instance) -> Counter[float]:
    """Every number an instance draws, as a multiset (an arrival moved may reorder tasks)."""
    out: Counter[float] = Counter()
    for task in inst.tasks:
        out.update([task.arrival_s, *task.distances_m])
        out.update(
            x for sub in task.subtasks for x in (sub.input_bits, sub.output_bits, sub.cycles)
        )
    return out


def test_a_nudge_moves_one_number_within_its_range() -> None:
    inst = start()
    sc = inst.scenario
    rng = np.random.default_rng(0)
    for _ in range(50):
        moved = nudge(inst, rng)
        gone = numbers(inst) - numbers(moved)
        assert gone.total() <= 2  # one number (an input size: and its cycles), or none clipped
        for task in moved.tasks:
            span = sc.network.channel.distance_m
            assert all(span.low <= d <= span.high for d in task.distances_m)
            for sub in task.subtasks:
                size = sc.workload.sizes[sub.modality]
                assert size.input_kbit.low <= sub.input_bits / 1e3 <= size.input_kbit.high
                assert size.output_kbit.low <= sub.output_bits / 1e3 <= size.output_kbit.high
                assert sub.cycles == pytest.approx(sc.workload.cycles_per_bit * sub.input_bits)
        inst = moved
