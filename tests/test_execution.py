"""The execution model against numbers worked out by hand on the paper's setting.

Every expected value below is derived in the comments from docs/model.md §2-§3 and the
paper's §5.1 numbers, never from the code under test:

    servers  0 edge-text 2.0 GHz, 1 edge-image 2.3 GHz, 2 edge-audio 2.5 GHz,
             3 cloud 10 GHz; 0.01 $/GHz on edges, 0.03 $/GHz on the cloud
    wireless r = W log2(1 + P G / sigma2), W = 6 MHz, P_d = 0.3 W, P_e = 0.8 W,
             sigma2 = -43 dBm = 10^(-4.3) mW = 10^(-7.3) W, G = d^-3
    wired    device->cloud 3 Mbps, cloud->device 12 Mbps, edge<->edge 22 Mbps,
             edge<->cloud 12 Mbps
    cycles   C = 1900 * D

The distances are chosen so that the uplink SNR P_d d^-3 / sigma2 is a round
number (1, 3, 7 or 15), which makes log2(1 + SNR) an integer; the downlink SNR
is then SNR_up * 0.8 / 0.3.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import approx, distance_for_snr, sub

from llmoffload.errors import OffloadError
from llmoffload.model import scenario
from llmoffload.model.execution import Breach, Execution, InvalidDispatch, Run, evaluate
from llmoffload.model.instance import Instance, Task, sample_instance
from llmoffload.model.scenario import BUILTIN, load_scenario
from llmoffload.model.validate import violations

PAPER = load_scenario("paper")
TEXT, IMAGE, AUDIO, CLOUD = 0, 1, 2, 3


# Task 0 sits where the uplink SNR is 7 to edge-text, 3 to edge-image, 15 to edge-audio:
#   r_ul(text)  = 6e6 log2(8)  = 18 Mbps      r_ul(image) = 6e6 log2(4) = 12 Mbps
#   r_dl(text)  = 6e6 log2(1 + 7 * 0.8 / 0.3) = 6e6 log2(59/3) ~ 25.786083 Mbps
D0 = [distance_for_snr(7), distance_for_snr(3), distance_for_snr(15)]  # ~94.9, 125.9, 73.6 m
# Task 1 sits where the uplink SNR to edge-text is 1:
#   r_ul(text) = 6e6 log2(2) = 6 Mbps;  r_dl(text) = 6e6 log2(1 + 8/3) = 6e6 log2(11/3)
D1 = [distance_for_snr(1), distance_for_snr(3), distance_for_snr(15)]  # ~181.6 m to edge-text
R_DL0_TEXT = 6e6 * math.log2(59 / 3)  # ~25,786,083 bit/s
R_DL1_TEXT = 6e6 * math.log2(11 / 3)  # ~11,246,815 bit/s

# The paper's VQA shape: analyse(text) -> {perceive(image), question(text)}
#                                      -> answer(image+text) -> aggregate(text)
VQA = Task(
    workflow="vqa",
    distances_m=D0,
    subtasks=[
        sub("analyse", "text", 1800, 1100, []),  # C = 3.42e6
        sub("perceive", "image", 240_000, 3300, [0]),  # C = 4.56e8
        sub("question", "text", 1500, 2400, [0]),  # C = 2.85e6
        sub("answer", "image+text", 450_000, 4800, [1, 2]),  # C = 8.55e8
        sub("aggregate", "text", 2600, 2000, [3]),  # C = 4.94e6
    ],
)
# A short text chain that competes with task 0 for edge-text.
CHAIN = Task(
    workflow="chain",  # not the scenario's text-analysis: two subtasks, not four
    distances_m=D1,
    subtasks=[
        sub("a", "text", 1200, 1000, []),  # C = 2.28e6
        sub("b", "text", 2400, 1500, [0]),  # C = 4.56e6
    ],
)
ORDER = [
    (0, 0, TEXT),
    (1, 0, TEXT),
    (0, 1, IMAGE),
    (0, 2, CLOUD),
    (1, 1, TEXT),
    (0, 3, CLOUD),
    (0, 4, TEXT),
]

# Run by run, in dispatch order (start, upload, compute, end, cost):
#
# 1. T0 analyse on edge-text: no preds, edge free -> start 0
#    upload 1800 / 18e6 = 1e-4;  compute 3.42e6 / 2e9 = 1.71e-3;  end 1.81e-3
#    cost 3.42e6 / 1e9 * 0.01 = 3.42e-5
# 2. T1 a on edge-text: ready at 0 but the edge is busy until 1.81e-3 (FIFO) -> start 1.81e-3
#    upload 1200 / 6e6 = 2e-4;  compute 2.28e6 / 2e9 = 1.14e-3;  end 3.15e-3;  cost 2.28e-5
# 3. T0 perceive on edge-image: analyse's 1100 bits go edge->edge at 22 Mbps = 5e-5
#    start 1.81e-3 + 5e-5 = 1.86e-3;  upload 240000 / 12e6 = 0.02
#    compute 4.56e8 / 2.3e9 = 4.56 / 23 = 0.198260869565...;  end 0.220120869565...
#    cost 4.56e8 / 1e9 * 0.01 = 4.56e-3
# 4. T0 question on the cloud: 1100 bits edge->cloud at 12 Mbps = 9.1666...e-5
#    start 1.81e-3 + 9.1666e-5 = 1.901666...e-3 (the cloud never queues)
#    upload 1500 / 3e6 = 5e-4;  compute 2.85e6 / 1e10 = 2.85e-4;  end 2.686666...e-3
#    cost 2.85e6 / 1e9 * 0.03 = 8.55e-5
# 5. T1 b on edge-text: a ended there at 3.15e-3 (transfer 0), edge free then -> 3.15e-3
#    upload 2400 / 6e6 = 4e-4;  compute 4.56e6 / 2e9 = 2.28e-3;  end 5.83e-3;  cost 4.56e-5
# 6. T0 answer on the cloud: perceive's 3300 bits edge->cloud = 2.75e-4, so
#    0.220120869565... + 2.75e-4 = 0.220395869565...; question is on the cloud already
#    (transfer 0): 2.6866e-3. WT = max = 0.220395869565...
#    upload 450000 / 3e6 = 0.15;  compute 8.55e8 / 1e10 = 0.0855;  end 0.455895869565...
#    cost 8.55e8 / 1e9 * 0.03 = 0.02565
# 7. T0 aggregate on edge-text: answer's 4800 bits cloud->edge = 4e-4 -> WT 0.456295869565...
#    edge-text free since 5.83e-3, so it starts at WT (no waiting for nothing)
#    upload 2600 / 18e6 = 1.444...e-4;  compute 4.94e6 / 2e9 = 2.47e-3;  end 0.458910314009...
#    cost 4.94e6 / 1e9 * 0.01 = 4.94e-5
S_PERCEIVE = 1.81e-3 + 1100 / 22e6
E_PERCEIVE = S_PERCEIVE + 240_000 / 12e6 + 4.56e8 / 2.3e9
S_QUESTION = 1.81e-3 + 1100 / 12e6
E_QUESTION = S_QUESTION + 1500 / 3e6 + 2.85e6 / 1e10
S_ANSWER = max(E_PERCEIVE + 3300 / 12e6, E_QUESTION + 0.0)
E_ANSWER = S_ANSWER + 450_000 / 3e6 + 8.55e8 / 1e10
S_AGGREGATE = max(E_ANSWER + 4800 / 12e6, 5.83e-3)
E_AGGREGATE = S_AGGREGATE + 2600 / 18e6 + 4.94e6 / 2e9
EXPECTED_RUNS = [
    Run(0, 0, TEXT, 0.0, 1e-4, 1.71e-3, 1.81e-3, 3.42e-5),
    Run(1, 0, TEXT, 1.81e-3, 2e-4, 1.14e-3, 3.15e-3, 2.28e-5),
    Run(0, 1, IMAGE, S_PERCEIVE, 0.02, 4.56 / 23, E_PERCEIVE, 4.56e-3),
    Run(0, 2, CLOUD, S_QUESTION, 5e-4, 2.85e-4, E_QUESTION, 8.55e-5),
    Run(1, 1, TEXT, 3.15e-3, 4e-4, 2.28e-3, 5.83e-3, 4.56e-5),
    Run(0, 3, CLOUD, S_ANSWER, 0.15, 0.0855, E_ANSWER, 0.02565),
    Run(0, 4, TEXT, S_AGGREGATE, 2600 / 18e6, 2.47e-3, E_AGGREGATE, 4.94e-5),
]
# Task 0 (span): max EN - min ST + R_J / r_dl = 0.458910314009... - 0 + 2000 / 25.786e6
#   = 0.458910314009... + 7.7561...e-5 = 0.458987875226...
#   cost 3.42e-5 + 4.56e-3 + 8.55e-5 + 0.02565 + 4.94e-5 = 0.0303791
# Task 1 (span): 5.83e-3 - 1.81e-3 + 1500 / 11.2468e6 = 4.02e-3 + 1.33371...e-4 = 4.15337...e-3
#   cost 2.28e-5 + 4.56e-5 = 6.84e-5
LATENCY0 = E_AGGREGATE - 0.0 + 2000 / R_DL0_TEXT
COST0 = 3.42e-5 + 4.56e-3 + 8.55e-5 + 0.02565 + 4.94e-5
LATENCY1_SPAN = 5.83e-3 - 1.81e-3 + 1500 / R_DL1_TEXT
LATENCY1_ARRIVAL = 5.83e-3 - 0.0 + 1500 / R_DL1_TEXT
COST1 = 2.28e-5 + 4.56e-5


def hand_instance(latency: str = "span") -> Instance:
    return Instance(scenario=PAPER.model_copy(update={"latency": latency}), tasks=[VQA, CHAIN])


def test_hand_rates() -> None:
    """The chosen distances give the round uplink rates the worked example relies on."""
    up0, down0 = PAPER.link_rates(D0)
    up1, down1 = PAPER.link_rates(D1)
    assert up0 == [approx(18e6), approx(12e6), approx(24e6), 3e6]
    assert down0[TEXT] == approx(R_DL0_TEXT)
    assert down0[CLOUD] == 12e6
    assert up1[TEXT] == approx(6e6)
    assert down1[TEXT] == approx(R_DL1_TEXT)


def test_hand_worked_schedule() -> None:
    schedule = evaluate(hand_instance(), ORDER)
    assert [(r.task, r.subtask, r.server) for r in schedule.runs] == ORDER
    for got, want in zip(schedule.runs, EXPECTED_RUNS, strict=True):
        for field in ("start", "upload", "compute", "end", "cost"):
            assert getattr(got, field) == approx(getattr(want, field)), (got, field)
    t0, t1 = schedule.tasks
    assert t0.latency == approx(LATENCY0)
    assert t0.latency == approx(0.458987875226593)  # the comment's decimal, to 1e-12
    assert t0.cost == approx(0.0303791)
    assert t0.slack == approx(3.0 - LATENCY0)
    assert t0.objective == approx(0.5 * LATENCY0 + 0.5 * COST0)
    assert t1.latency == approx(LATENCY1_SPAN)
    assert t1.cost == approx(COST1)
    assert t1.objective == approx(0.5 * LATENCY1_SPAN + 0.5 * COST1)
    total = 0.5 * (LATENCY0 + COST0) + 0.5 * (LATENCY1_SPAN + COST1)
    assert schedule.objective == approx(total)
    assert schedule.deadline_misses == 0
    assert violations(hand_instance(), schedule) == []


def test_hand_worked_schedule_latency_from_arrival() -> None:
    """From arrival, task 1's wait in edge-text's queue (1.81e-3 s) counts too."""
    schedule = evaluate(hand_instance("arrival"), ORDER)
    t0, t1 = schedule.tasks
    assert t0.latency == approx(LATENCY0)  # task 0 started at t = 0 anyway
    assert t1.latency == approx(LATENCY1_ARRIVAL)
    assert t1.latency - LATENCY1_SPAN == approx(1.81e-3)
    assert t1.objective == approx(0.5 * LATENCY1_ARRIVAL + 0.5 * COST1)
    assert violations(hand_instance("arrival"), schedule) == []


def test_cloud_subtask_waits_for_its_cloud_predecessor() -> None:
    """The fix of docs/model.md §3: the paper's (1 - zeta) factor would start y at 0.

    x: D 1000, C 1.9e6 -> upload 1000 / 3e6 = 3.333e-4, compute 1.9e-4, end 5.2333e-4
    y: starts at x's end (transfer 0 on the same cloud)
       D 2000, C 3.8e6 -> upload 6.6667e-4, compute 3.8e-4, end 1e-3 + 5.7e-4 = 1.57e-3
    latency 1.57e-3 + 1200 / 12e6 = 1.67e-3; cost (1.9e6 + 3.8e6) / 1e9 * 0.03 = 1.71e-4
    """
    task = Task(
        workflow="chain",
        distances_m=D0,
        subtasks=[sub("x", "text", 1000, 1000, []), sub("y", "text", 2000, 1200, [0])],
    )
    schedule = evaluate(Instance(scenario=PAPER, tasks=[task]), [(0, 0, CLOUD), (0, 1, CLOUD)])
    x, y = schedule.runs
    assert x.end == approx(1000 / 3e6 + 1.9e-4)
    assert y.start == approx(x.end)
    assert y.start > 5e-4
    assert y.end == approx(1.57e-3)
    assert schedule.tasks[0].latency == approx(1.67e-3)
    assert schedule.tasks[0].cost == approx(1.71e-4)


def test_edge_queue_is_fifo_in_dispatch_order() -> None:
    """A later dispatch waits behind an earlier one even if its data were ready first.

    T0: x (text, cloud) -> y (text, edge-text). y's data arrive at
        x.end + 1000 / 12e6 = (1000 / 3e6 + 1.9e-4) + 8.333e-5 = 6.0667e-4;
        the edge is idle before that (nothing waits), so y starts then:
        upload 2000 / 18e6 = 1.111e-4, compute 3.8e6 / 2e9 = 1.9e-3, end ~2.6178e-3.
    T1: z (text, edge-text), dispatched after y, ready at t = 0, yet it starts at y's end
        (no back-filling of the idle gap [0, 6.0667e-4)): upload 1200 / 6e6 = 2e-4,
        compute 2.28e6 / 2e9 = 1.14e-3.
    """
    t0 = Task(
        workflow="chain",
        distances_m=D0,
        subtasks=[sub("x", "text", 1000, 1000, []), sub("y", "text", 2000, 1200, [0])],
    )
    t1 = Task(workflow="one", distances_m=D1, subtasks=[sub("z", "text", 1200, 1000, [])])
    schedule = evaluate(
        Instance(scenario=PAPER, tasks=[t0, t1]), [(0, 0, CLOUD), (0, 1, TEXT), (1, 0, TEXT)]
    )
    _, y, z = schedule.runs
    y_start = 1000 / 3e6 + 1.9e-4 + 1000 / 12e6
    y_end = y_start + 2000 / 18e6 + 1.9e-3
    assert y.start == approx(y_start)
    assert y.end == approx(y_end)
    assert z.start == approx(y_end)
    assert z.end == approx(y_end + 2e-4 + 1.14e-3)
    # Task 1 (span) does not see its queueing; from arrival it does.
    assert schedule.tasks[1].latency == approx(2e-4 + 1.14e-3 + 1000 / R_DL1_TEXT)


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ([(0, 1, IMAGE)], "waits for predecessors"),
        ([(0, 0, TEXT), (0, 1, TEXT)], "cannot serve"),
        ([(0, 0, TEXT), (0, 3, IMAGE)], "waits for predecessors"),
        ([(0, 0, TEXT), (0, 1, IMAGE), (0, 2, TEXT), (0, 3, TEXT)], "cannot serve"),
        ([(0, 0, TEXT), (0, 0, CLOUD)], "already dispatched"),
        ([(0, 0, 4)], "no server"),
        ([(2, 0, TEXT)], "no subtask"),
    ],
)
def test_invalid_dispatches_raise(order: list[tuple[int, int, int]], message: str) -> None:
    with pytest.raises(InvalidDispatch, match=message):
        evaluate(hand_instance(), order)


def test_breaches_and_valid_set_by_hand() -> None:
    """VQA's answer (3) needs perceive (1) and question (2) and runs on the cloud only
    (image+text); edge-text serves text, edge-image image, the cloud everything."""
    ex = Execution(hand_instance())
    assert ex.breaches(0, 3, TEXT) == [Breach("precedence", 2), Breach("modality")]
    ex.dispatch(0, 0, TEXT)
    ex.dispatch(0, 1, IMAGE)
    assert ex.breaches(0, 3, TEXT) == [Breach("precedence", 1), Breach("modality")]
    assert ex.violation(0, 3, TEXT) == "task 0 subtask 3 waits for predecessors [2]"
    assert ex.breaches(0, 3, CLOUD) == [Breach("precedence", 1)]
    assert ex.breaches(0, 2, IMAGE) == [Breach("modality")]
    assert ex.breaches(0, 1, CLOUD) == [Breach("repeat")]
    assert ex.breaches(0, 2, 4) == [Breach("no-server")]
    assert ex.breaches(1, 2, TEXT) == [Breach("no-subtask")]
    # now ready: question (0, 2) and chain's a (1, 0), both text: edge-text or the cloud
    want = [[0, 2, TEXT], [0, 2, CLOUD], [1, 0, TEXT], [1, 0, CLOUD]]
    assert np.argwhere(ex.valid()).tolist() == want
    assert all(ex.breaches(*d) == [] for d in want)
    ex.dispatch(0, 2, CLOUD)
    assert ex.breaches(0, 3, CLOUD) == []
    assert np.argwhere(ex.valid()).tolist() == [[0, 3, CLOUD], [1, 0, TEXT], [1, 0, CLOUD]]


def test_unfinished_schedule_raises() -> None:
    with pytest.raises(InvalidDispatch, match="still has"):
        evaluate(hand_instance(), ORDER[:-1])


def test_sampling_is_deterministic_and_round_trips() -> None:
    first = sample_instance(PAPER, np.random.default_rng(7)).dumps()
    second = sample_instance(PAPER, np.random.default_rng(7)).dumps()
    other = sample_instance(PAPER, np.random.default_rng(8)).dumps()
    assert first == second
    assert first != other
    again = Instance.model_validate_json(first).dumps()
    assert again == first


def test_sampled_sizes_follow_the_scenario() -> None:
    """C = 1900 D, and every size within its modality's kbit range (paper §5.1)."""
    instance = sample_instance(PAPER, np.random.default_rng(3), tasks=20)
    for task in instance.tasks:
        assert all(50 <= d <= 100 for d in task.distances_m)
        assert len(task.distances_m) == 3
        for s in task.subtasks:
            sizes = PAPER.workload.sizes[s.modality]
            assert sizes.input_kbit.low * 1e3 <= s.input_bits <= sizes.input_kbit.high * 1e3
            assert sizes.output_kbit.low * 1e3 <= s.output_bits <= sizes.output_kbit.high * 1e3
            assert s.cycles == approx(1900 * s.input_bits)


def test_sampling_draws_each_number_in_turn() -> None:
    """A task's numbers, drawn in one call, are the ones drawn one call per number: the
    workflow, then each subtask's input and output size (in order), then the distances."""
    names = PAPER.workload.workflows
    for seed in range(30):
        rng = np.random.default_rng(seed)
        want = []
        for _ in range(PAPER.workload.tasks):
            flow = PAPER.workflows[names[int(rng.integers(len(names)))]]
            for node in flow.order():
                sizes = PAPER.workload.sizes[flow.nodes[node]]
                for kbit in (sizes.input_kbit, sizes.output_kbit):
                    want.append(float(rng.uniform(kbit.low, kbit.high)) * 1e3)
            want += [float(d) for d in rng.uniform(50, 100, size=3)]
        got = []
        for task in sample_instance(PAPER, np.random.default_rng(seed)).tasks:
            got += [bits for s in task.subtasks for bits in (s.input_bits, s.output_bits)]
            got += task.distances_m
        assert got == want


def test_link_rates_at_100_m() -> None:
    """G = 100^-3 = 1e-6; SNR_ul = 0.3e-6 / 10^-7.3 = 0.3 * 10^1.3 = 5.98578694490663880...

    r_ul = 6e6 log2(6.98578694490663880...) = 16,826,535.8613662252...
    SNR_dl = 0.8 * 10^1.3 = 15.9620985197510368..., r_dl = 6e6 log2(16.962...) =
    24,505,456.5805057670... (both to 40 digits with decimal.Decimal, independently).
    """
    up, down = PAPER.link_rates([100.0, 100.0, 100.0])
    for edge in (TEXT, IMAGE, AUDIO):
        assert up[edge] == approx(16_826_535.86136622529827918)
        assert down[edge] == approx(24_505_456.58050576709280997)
    assert up[CLOUD] == 3e6
    assert down[CLOUD] == 12e6


def test_built_in_scenarios_are_the_folders_files() -> None:
    assert {"paper", "dear-cloud", "slow-uplink", "contended", "tokens"} <= set(BUILTIN)
    assert BUILTIN[0] == "paper" and list(BUILTIN[1:]) == sorted(BUILTIN[1:])


def test_a_file_dropped_in_the_folder_loads_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A YAML file in model/scenarios/ is a built-in: loadable by name, a base by name,
    listed in the error for an unknown one; other files are not scenarios."""
    (tmp_path / "paper.yaml").write_text(scenario.FOLDER.joinpath("paper.yaml").read_text())
    (tmp_path / "mine.yaml").write_text("base: paper\nname: mine\nt_max_s: 7.0\n")
    (tmp_path / "notes.txt").write_text("not a scenario")
    monkeypatch.setattr(scenario, "FOLDER", tmp_path)
    assert scenario.builtin() == ("paper", "mine")
    mine = load_scenario("mine")
    assert (mine.name, mine.t_max_s) == ("mine", 7.0)
    assert mine.servers == PAPER.servers
    with pytest.raises(OffloadError, match=r"built-in: paper, mine\)"):
        load_scenario("contended")
