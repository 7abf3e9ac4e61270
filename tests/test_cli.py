"""The command line: what it prints, what it writes, and how it refuses bad input.

Bad input must end in exactly one line ``error: ...`` on stderr, exit code 2,
no traceback, and no output file.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner, Result

from llmoffload.cli.app import app
from llmoffload.model.execution import Run, evaluate
from llmoffload.model.gantt import lanes
from llmoffload.model.instance import load_instance, sample_instance
from llmoffload.model.scenario import load_scenario
from llmoffload.schedulers.heuristics import heft
from llmoffload.schedulers.registry import SCHEDULERS

PAPER_YAML = resources.files("llmoffload.model.scenarios").joinpath("paper.yaml")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()


def cli(*args: object) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, result.output


def assert_one_line_error(result: Result, fragment: str = "") -> None:
    """Exit 2, one stderr line starting 'error:', nothing else, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert result.stdout == ""
    assert "Traceback" not in result.output


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp" in p.name]


@pytest.fixture(scope="module")
def paper() -> dict[str, Any]:
    return yaml.safe_load(PAPER_YAML.read_text())


@pytest.fixture
def instance_file(tmp_path: Path) -> Path:
    out = tmp_path / "inst.json"
    assert_ok(cli("instance", "--scenario", "paper", "--seed", 7, "--out", out))
    return out


# --- scenarios -------------------------------------------------------------------------------


def link_table(text: str) -> list[dict[str, str]]:
    """The rows of the device-edge link table printed by 'scenario show'."""
    lines = text.splitlines()
    head = next(k for k, line in enumerate(lines) if "up_mbps" in line)
    names = lines[head].split()
    rows = []
    for line in lines[head + 1 :]:
        if not line.strip():
            break
        rows.append(dict(zip(names, line.split(), strict=True)))
    return rows


def test_scenario_show_names_every_server_and_plausible_rates(paper: dict[str, Any]) -> None:
    result = cli("scenario", "show", "paper")
    assert_ok(result)
    for server in paper["servers"]:
        assert server["name"] in result.stdout
    for flow in paper["workflows"]:
        assert flow in result.stdout

    rows = link_table(result.stdout)
    edges = [s["name"] for s in paper["servers"] if s["kind"] == "edge"]
    assert sorted({r["server"] for r in rows}) == sorted(edges)
    for row in rows:
        assert 1.0 < float(row["up_mbps"]) < float(row["down_mbps"]) < 100.0

    # Independent hand computation at the nearest distance: W log2(1 + P d^-3 / sigma2).
    net = paper["network"]
    near = net["channel"]["distance_m"][0]
    sigma2 = 10 ** (net["noise_dbm"] / 10) / 1000
    for power, column in ((net["device_power_w"], "up_mbps"), (net["edge_power_w"], "down_mbps")):
        snr = power * near**-3.0 / sigma2
        expected = net["bandwidth_mhz"] * math.log2(1 + snr)
        printed = [float(r[column]) for r in rows if float(r["distance_m"]) == near]
        assert len(printed) == len(edges)
        assert printed == pytest.approx([expected] * len(edges), abs=0.006)
        snr_column = column.replace("mbps", "snr_db")
        snr_db = [float(r[snr_column]) for r in rows if float(r["distance_m"]) == near]
        assert snr_db == pytest.approx([10 * math.log10(snr)] * len(edges), abs=0.06)


def test_scenario_show_tells_slots_and_arrivals() -> None:
    result = cli("scenario", "show", "contended")
    assert_ok(result)
    cloud = next(line.split() for line in result.stdout.splitlines() if line.startswith("  cloud"))
    assert cloud[:5] == ["cloud", "cloud", "10.0", "2.0", "2"]  # name, kind, GHz, $/GHz, slots
    assert "arrivals: Poisson, 8 per s, the first at t = 0" in result.stdout
    assert "arrivals: all at t = 0" in cli("scenario", "show", "paper").stdout


def test_scenario_validate_builtin_file() -> None:
    with resources.as_file(PAPER_YAML) as path:
        result = cli("scenario", "validate", path)
    assert_ok(result)
    assert result.stdout.strip() == "ok: paper (4 servers, 5 workflows)"


# --- instances -------------------------------------------------------------------------------


def test_instance_writes_exactly_the_sampled_instance(tmp_path: Path) -> None:
    out = tmp_path / "i.json"
    result = cli("instance", "--scenario", "paper", "--seed", 11, "--out", out, "--tasks", 3)
    assert_ok(result)
    expected = sample_instance(load_scenario("paper"), np.random.default_rng(11), 3).dumps()
    assert out.read_text() == expected
    assert len(result.stdout.splitlines()) == 1
    assert no_temp_files(tmp_path)


def test_instance_replaces_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "i.json"
    out.write_text("old")
    assert_ok(cli("instance", "--seed", 1, "--out", out))
    assert load_instance(out).tasks


# --- schedules -------------------------------------------------------------------------------


def test_schedule_heft_json_matches_the_library(instance_file: Path) -> None:
    result = cli("schedule", instance_file, "--policy", "heft", "--seed", 3, "--json")
    assert_ok(result)
    data = json.loads(result.stdout)
    inst = load_instance(instance_file)
    expected = evaluate(inst, heft(inst, np.random.default_rng(3)))
    assert data["objective"] == expected.objective
    assert data["policy"] == "heft"
    assert data["instance"] == str(instance_file)
    assert data["order"] == [list(d) for d in expected.order]
    assert data["deadline_misses"] == expected.deadline_misses
    assert [r["end"] for r in data["runs"]] == [r.end for r in expected.runs]
    names = [s.name for s in inst.scenario.servers]
    assert {r["server_name"] for r in data["runs"]} <= set(names)
    assert [t["workflow"] for t in data["tasks"]] == [t.workflow for t in inst.tasks]
    assert "bound" not in data


@pytest.mark.parametrize("policy", [p for p in SCHEDULERS if p != "optimal"])  # optimal: below
def test_schedule_table_lists_every_run_and_the_total(instance_file: Path, policy: str) -> None:
    result = cli("schedule", instance_file, "--policy", policy, "--seed", 5)
    assert_ok(result)
    inst = load_instance(instance_file)
    expected = evaluate(inst, SCHEDULERS[policy](inst, np.random.default_rng(5))).objective
    assert f"objective {expected:.6f} (sum of" in result.stdout
    for task in inst.tasks:
        assert task.workflow in result.stdout
        for sub in task.subtasks:
            assert sub.name in result.stdout
    assert "objective" in result.stdout
    assert "deadline misses" in result.stdout


def test_schedule_gantt_writes_a_png(instance_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.png"
    assert_ok(cli("schedule", instance_file, "--policy", "greedy", "--gantt", out))
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000
    assert no_temp_files(tmp_path)


def test_schedule_optimal_reports_bound_and_proof(tmp_path: Path) -> None:
    small = tmp_path / "small.json"
    assert_ok(cli("instance", "--seed", 1, "--tasks", 2, "--out", small))
    result = cli("schedule", small, "--policy", "optimal", "--time-limit", 5, "--json")
    assert_ok(result)
    data = json.loads(result.stdout)
    assert {"bound", "gap", "proven"} <= set(data)
    inst = load_instance(small)
    heft_objective = evaluate(inst, heft(inst, np.random.default_rng(0))).objective
    assert data["bound"] <= data["objective"] + 1e-5
    assert data["objective"] <= heft_objective + 1e-9
    text = cli("schedule", small, "--policy", "optimal", "--time-limit", 5)
    assert_ok(text)
    assert "lower bound" in text.stdout


def test_cloud_runs_that_overlap_get_their_own_lanes() -> None:
    def run(start: float, end: float) -> Run:
        return Run(0, 0, 3, start, 0.0, end - start, end, 0.0)

    assert lanes([run(0, 2), run(1, 3), run(2, 4), run(0.5, 1)]) == [0, 1, 0, 1]
    assert lanes([]) == []


# --- bad input -------------------------------------------------------------------------------


def cycle(d: dict[str, Any]) -> None:
    d["workflows"]["text-analysis"]["edges"].append(["aggregate", "extract"])


def video_node(d: dict[str, Any]) -> None:
    d["workflows"]["vqa"]["nodes"]["answer"] = "video"


def unserved(d: dict[str, Any]) -> None:
    d["workload"]["sizes"]["video"] = {"input_kbit": [100, 200], "output_kbit": [1, 2]}
    d["workflows"]["vqa"]["nodes"]["answer"] = "video"


def zero_edge_rate(d: dict[str, Any]) -> None:
    d["network"]["edge_edge_mbps"] = 0


def negative_bandwidth(d: dict[str, Any]) -> None:
    d["network"]["bandwidth_mhz"] = -5


def negative_size(d: dict[str, Any]) -> None:
    d["workload"]["sizes"]["text"]["input_kbit"] = [-1, 3]


BAD_SCENARIOS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "cyclic workflow": (cycle, "cycle"),
    "unknown modality": (video_node, "unknown modality 'video'"),
    "modality no server serves": (
        unserved,
        "the cloud must serve every modality, but not ['video']",
    ),
    "zero edge-edge rate": (zero_edge_rate, "edge_edge_mbps"),
    "negative bandwidth": (negative_bandwidth, "bandwidth_mhz"),
    "negative size": (negative_size, "input_kbit"),
}


@pytest.fixture(params=list(BAD_SCENARIOS))
def bad_scenario(
    request: pytest.FixtureRequest, paper: dict[str, Any], tmp_path: Path
) -> tuple[Path, str]:
    mutate, fragment = BAD_SCENARIOS[request.param]
    data = copy.deepcopy(paper)
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, fragment


def test_bad_scenario_fails_validate(bad_scenario: tuple[Path, str]) -> None:
    path, fragment = bad_scenario
    assert_one_line_error(cli("scenario", "validate", path), fragment)
    assert_one_line_error(cli("scenario", "show", path), fragment)


def test_bad_scenario_writes_no_instance(bad_scenario: tuple[Path, str], tmp_path: Path) -> None:
    path, fragment = bad_scenario
    out = tmp_path / "x.json"
    assert_one_line_error(cli("instance", "--scenario", path, "--out", out), fragment)
    assert not out.exists()
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("servers: [1, 2\nnetwork: {", "not valid YAML"), ("- just\n- a list\n", "mapping")],
    ids=["malformed", "not a mapping"],
)
def test_unreadable_scenario_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "x.json"
    assert_one_line_error(cli("scenario", "validate", path), fragment)
    assert_one_line_error(cli("instance", "--scenario", path, "--out", out), fragment)
    assert not out.exists()


def test_missing_scenario_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    out = tmp_path / "x.json"
    assert_one_line_error(cli("scenario", "validate", missing), "not found")
    assert_one_line_error(cli("scenario", "show", missing), "not found")
    assert_one_line_error(cli("instance", "--scenario", missing, "--out", out), "not found")
    assert not out.exists()


def test_non_utf8_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00 not text")
    assert_one_line_error(cli("scenario", "validate", path))


@pytest.mark.parametrize("noise_dbm", [400.0, math.nan])
def test_scenario_whose_wireless_rate_is_zero(
    paper: dict[str, Any], tmp_path: Path, noise_dbm: float
) -> None:
    data = copy.deepcopy(paper)
    data["network"]["noise_dbm"] = noise_dbm
    path = tmp_path / "noisy.yaml"
    path.write_text(yaml.safe_dump(data))
    assert_one_line_error(cli("scenario", "validate", path))


def bad_instance(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["missing", "malformed JSON", "negative input_bits"])
def test_bad_instance_file(instance_file: Path, tmp_path: Path, case: str) -> None:
    if case == "missing":
        path, fragment = tmp_path / "missing.json", "not found"
    elif case == "malformed JSON":
        path, fragment = bad_instance(tmp_path, '{"format": '), "not valid JSON"
    else:
        data = json.loads(instance_file.read_text())
        data["tasks"][0]["subtasks"][0]["input_bits"] = -1
        path, fragment = bad_instance(tmp_path, json.dumps(data)), "input_bits"
    gantt = tmp_path / "g.png"
    result = cli("schedule", path, "--policy", "heft", "--json", "--gantt", gantt)
    assert_one_line_error(result, fragment)
    assert not gantt.exists()


def test_unknown_policy(instance_file: Path, tmp_path: Path) -> None:
    gantt = tmp_path / "g.png"
    result = cli("schedule", instance_file, "--policy", "best", "--gantt", gantt)
    assert_one_line_error(result, "unknown policy 'best'")
    for name in SCHEDULERS:
        assert name in result.stderr
    assert not gantt.exists()


def test_unsupported_gantt_format_is_refused_before_scheduling(instance_file: Path) -> None:
    gantt = instance_file.with_name("g.gif")
    assert_one_line_error(cli("schedule", instance_file, "--policy", "heft", "--gantt", gantt))
    assert not gantt.exists()


def test_output_into_a_missing_directory(instance_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "x.json"
    assert_one_line_error(cli("instance", "--out", out), str(out))
    assert not out.parent.exists()
    gantt = tmp_path / "nowhere" / "g.png"
    result = cli("schedule", instance_file, "--policy", "heft", "--gantt", gantt)
    assert_one_line_error(result, str(gantt))
    assert not gantt.parent.exists()


def test_usage_errors_stay_typers(instance_file: Path) -> None:
    assert cli("schedule", instance_file).exit_code == 2  # --policy missing


# --- training protocols -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "mask"),
    [
        ([], False),
        (["--protocol", "masked"], True),
        (["--protocol", "masked", "--set", "mask=no"], False),
    ],
)
def test_train_protocol_sets_the_mask_and_set_overrides_it(
    tmp_path: Path, extra: list[str], mask: bool
) -> None:
    run = tmp_path / "run"
    assert_ok(cli("train", "--algo", "random", "--episodes", 1, "--out", run, *extra))
    assert json.loads((run / "config.json").read_text())["config"] == {"mask": mask}


def test_train_reward_objective_pays_bonuses_minus_the_objective(tmp_path: Path) -> None:
    """Random on valid actions is never refused or late here, so each episode's return
    under ``--reward objective`` is theta (2) per subtask minus its objective."""
    run = tmp_path / "run"
    args = ("--algo", "random", "--protocol", "masked", "--episodes", 4, "--reward", "objective")
    assert_ok(cli("train", *args, "--out", run))
    assert (
        json.loads((run / "config.json").read_text())["scenario"]["reward"]["form"] == "objective"
    )
    for row in csv.DictReader((run / "episodes.csv").open()):
        assert row["violations_deadline"] == "0" and row["undone"] == "0"
        bonuses = (float(row["reward"]) + float(row["objective"])) / 2
        assert bonuses == pytest.approx(round(bonuses)) and 20 <= round(bonuses) <= 25
    result = cli("train", "--reward", "speed", "--out", tmp_path / "bad")
    assert_one_line_error(result, "unknown reward form 'speed' (choose from paper, objective)")
    assert not (tmp_path / "bad").exists()


def test_train_unknown_protocol(tmp_path: Path) -> None:
    result = cli("train", "--protocol", "fair", "--out", tmp_path / "run")
    assert_one_line_error(result, "unknown protocol 'fair' (choose from paper, masked)")
    assert not (tmp_path / "run").exists()


# --- the installed command, in a real process ------------------------------------------------


def run_module(*args: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "llmoffload", *(str(a) for a in args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_real_process_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "i.json"
    made = run_module("instance", "--seed", 2, "--tasks", 2, "--out", out)
    assert made.returncode == 0, made.stderr
    scheduled = run_module("schedule", out, "--policy", "greedy", "--json")
    assert scheduled.returncode == 0, scheduled.stderr
    assert json.loads(scheduled.stdout)["policy"] == "greedy"

    failed = run_module("instance", "--scenario", tmp_path / "missing.yaml", "--out", out)
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr.startswith("error: ")
    assert len(failed.stderr.splitlines()) == 1


def test_builtin_variants_differ_from_paper_only_where_they_say() -> None:
    """dear-cloud and slow-uplink start from paper (``base: paper``): beside the name,
    one price and one link rate differ, nothing else."""
    paper = load_scenario("paper").model_dump(mode="json")
    dear = load_scenario("dear-cloud").model_dump(mode="json")
    slow = load_scenario("slow-uplink").model_dump(mode="json")
    assert dear["servers"][3]["usd_per_ghz"] == 10.0
    dear["servers"][3]["usd_per_ghz"] = paper["servers"][3]["usd_per_ghz"]
    assert slow["network"]["device_cloud_up_mbps"] == 0.5
    slow["network"]["device_cloud_up_mbps"] = paper["network"]["device_cloud_up_mbps"]
    for variant, name in ((dear, "dear-cloud"), (slow, "slow-uplink")):
        assert variant.pop("name") == name
        assert variant == {k: v for k, v in paper.items() if k != "name"}


def test_a_file_gives_only_what_differs_from_its_base(tmp_path: Path) -> None:
    """Mappings merge key by key (workload keeps its sizes), lists are replaced, and a
    relative base is found beside the file."""
    (tmp_path / "two.yaml").write_text("base: paper\nname: two\nworkload: {tasks: 2}\n")
    (tmp_path / "dear2.yaml").write_text("base: two.yaml\nname: dear2\ngamma: 0.2\n")
    sc = load_scenario(tmp_path / "dear2.yaml")
    paper = load_scenario("paper")
    assert (sc.name, sc.gamma, sc.workload.tasks) == ("dear2", 0.2, 2)
    assert sc.workload.sizes == paper.workload.sizes
    assert sc.servers == paper.servers


def test_a_base_that_leads_back_to_itself_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: ./a.yaml\n")
    assert_one_line_error(cli("scenario", "validate", tmp_path / "a.yaml"), "leads back to itself")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    assert_one_line_error(cli("scenario", "validate", tmp_path / "c.yaml"), "not found")


def help_of(*command: str) -> str:
    """A command's help on one wide line per option: names are not broken at hyphens."""
    result = runner.invoke(app, [*command, "--help"], terminal_width=1000)
    assert_ok(result)
    return result.stdout


def test_policy_help_names_every_scheduler_of_the_registry() -> None:
    for command in ("schedule", "run", "serve"):
        line = next(x for x in help_of(command).splitlines() if "--policy" in x)
        assert f"One of: {', '.join(SCHEDULERS)}, or a trained run directory." in line


def test_algo_help_names_every_learner_of_the_registry() -> None:
    from llmoffload.marl.registry import LEARNERS, PAPER

    line = next(x for x in help_of("train").splitlines() if "--algo" in x)
    named = line.split("A learner: ")[1].split(".  [default")[0].replace(" (the paper's)", "")
    assert named.split(", ") == [*PAPER, *(n for n in LEARNERS if n not in PAPER)]
    assert set(named.split(", ")) == set(LEARNERS)
