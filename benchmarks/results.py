"""Write docs/results.md, and README's headline table, from the benchmarks run now.

    python benchmarks/results.py [--sweep full|quick] [--sweep-out DIR]
        [--study quick|full|none] [--study-out DIR] [--method M ...]
        [--runtime] [--instances 20] [--episodes 100] [--workers N]

Every number in docs/results.md comes from this run: the paper's sweep at the paper's
budget (its claims judged, `llmoffload reproduce`), the study beyond the paper
(`reproduce --study beyond`), `bench_model.py`, `bench_speed.py`, `bench_gnn.py` and,
with ``--runtime`` (the local extra: four llama.cpp servers), `bench_runtime.py`. The
sweep and the study reuse their caches (by default those of `llmoffload reproduce` and
`reproduce --study beyond --quick`; `--sweep quick` that of `make run`, `--study full`
that of the full study; `--study-out DIR` the study run into DIR, as its study.json says
it was run), so after those commands only the benchmarks run; a cache that holds runs
of other code is refused, naming the modules that changed (rerun `reproduce` first:
it reruns only those runs). The file's header names the commit, whether the tree was
dirty, the code digest of the modules its numbers came from (the sweep's and the
study's code and the benchmark scripts run, with what they import: per module in
results.provenance.json beside it), the machine and the date;
tests/test_newcomer.py checks that those modules are unchanged and that README's
headline block is the one written here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmoffload.errors import OffloadError
from llmoffload.experiments.provenance import CodeDigest, code_digest

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- results:headline -->", "<!-- /results:headline -->"
SCENARIOS = ("paper", "dear-cloud", "slow-uplink", "contended")
# the code docs/results.md's numbers come from: the sweep's and the study's, and the
# benchmark scripts it runs (bench_runtime.py too with --runtime)
NUMBERS = ("llmoffload.experiments.report", "llmoffload.experiments.study_report")
BENCHES = ("bench_model.py", "bench_speed.py", "bench_gnn.py")
PROVENANCE = ".provenance.json"  # the suffix of the per-module digests beside results.md


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def numbers_code(scripts: list[str], root: Path = ROOT) -> CodeDigest:
    """The code digest of ``NUMBERS`` and ``scripts`` (paths under ``root``) with every
    llmoffload module they import, as the tree at ``root`` holds them."""
    return code_digest(NUMBERS, root / "src", [root / s for s in scripts])


def code_said(code: CodeDigest, record: Path) -> str:
    """How results.md's header names the code its numbers came from."""
    return (
        f"code digest `{code.digest}` (the {len(code.modules)} modules its numbers import: "
        f"{record.name})"
    )


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        cpu = found.group(1) if found else cpu
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.system()}"
    )


def provenance(command: str, code: CodeDigest, record: Path) -> list[str]:
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Made by `{command}` at commit `{git('rev-parse', '--short', 'HEAD')}`"
        f"{' (with uncommitted changes)' if dirty else ''}, {code_said(code, record)}, "
        f"on {machine()}, {when}.",
    ]


def write_record(code: CodeDigest, scripts: list[str], record: Path) -> None:
    """The per-module digests the header's digest combines, for the freshness test."""
    fields = {"digest": code.digest, "entries": NUMBERS, "scripts": scripts}
    record.write_text(json.dumps(fields | {"modules": code.modules}, indent=1) + "\n")


def shown(path: Path) -> str:
    """A path as a reader of the repository would type it."""
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


# -- the paper's sweep ------------------------------------------------------------------------


def sweep(budget: str, out: Path | None, workers: int) -> tuple[list[list[str]], list[str]]:
    """The sweep's claims, judged: (headline rows, section lines)."""
    from llmoffload.experiments import report
    from llmoffload.experiments.claims import MARL
    from llmoffload.experiments.stats import cell
    from llmoffload.experiments.sweep import QUICK, Grid, execute, plan

    grid = QUICK if budget == "quick" else Grid()
    out = out or ROOT / ("runs/quick" if budget == "quick" else "runs/reproduce")
    specs = plan(grid)
    flag = " --quick" if budget == "quick" else ""
    refuse_other_code(specs, out, f"llmoffload reproduce{flag} --out {shown(out)}")
    swept = execute(specs, out, workers, progress=False)
    parts = report.write_report(grid, specs, swept, out)
    said = f"{budget} sweep: {len(grid.seeds)} seeds, {grid.episodes} episodes, {len(specs)} runs"
    rows = []
    lines = [f"`llmoffload reproduce{flag}` ({said}; every figure: `{shown(out)}/REPORT.md`)."]
    for part in parts:
        held = [v.claim for v in part.verdicts if v.verdict == "holds"]
        judged = [v for v in part.verdicts if v.verdict != "not tested"]
        among = [v for v in judged if (v.among or v.verdict) == "holds"]
        found = f"{len(held)} of {len(judged)} hold" + (f": {'; '.join(held)}" if held else "")
        found += f"; among the MARL learners ({', '.join(MARL)}) {len(among)} of {len(judged)}"
        rows.append([f"The paper's four claims, {part.protocol} protocol ({said})", found])
        lines += ["", f"### {part.protocol} protocol", "", *report.verdict_rows(part.verdicts)]
        title, _, numbers = part.sections[0]
        columns = list(next(iter(numbers.values())))
        lines += ["", f"{title}:", "", "| method | " + " | ".join(columns) + " |"]
        lines += ["|---|" + "---:|" * len(columns)]
        lines += [
            f"| {m} | " + " | ".join(cell(row[c]) for c in columns) + " |"
            for m, row in numbers.items()
        ]
    return rows, lines


def refuse_other_code(specs: list[Any], out: Path, command: str) -> None:
    """Stop, naming what changed, where ``out`` holds results of the planned runs made by
    other code: executing would silently start the whole rerun here."""
    from llmoffload.experiments.sweep import outdated

    changes = outdated(specs, out)
    if changes:
        raise SystemExit(
            f"error: {shown(out)} holds results of other code (changed: {', '.join(changes)}); "
            f"rerun `{command}` first"
        )


# -- the study beyond the paper ---------------------------------------------------------------


def study(
    budget: str, out: Path | None, workers: int, methods: list[str] | None
) -> tuple[list[list[str]], list[str]]:
    """Per scenario, the best learner, and the best of the paper's, against best classic
    and Optimal. A study already run in ``out`` (``--study-out``) is planned again from
    its ``study.json``, its runs then read from its cache; without ``out``, the quick or
    the full default study."""
    from llmoffload.experiments import study_report
    from llmoffload.experiments.study import QUICK_STUDY, Study, episodes, plan, scenario_of
    from llmoffload.experiments.study_report import COLUMNS
    from llmoffload.experiments.sweep import REFERENCES, execute
    from llmoffload.marl.registry import PAPER

    if out is not None:
        try:
            chosen = study_report.read_study(out)
        except OffloadError as e:
            raise SystemExit(f"error: {e}") from None
    else:
        chosen = QUICK_STUDY if budget == "quick" else Study()
        out = ROOT / ("runs/beyond-quick" if budget == "quick" else "runs/beyond")
    chosen = replace(chosen, methods=tuple(methods)) if methods else chosen
    specs = plan(chosen)
    refuse_other_code(specs, out, f"{study_command(chosen)} --out {shown(out)}")
    swept = execute(specs, out, workers, progress=False)
    study_report.write_report(chosen, specs, swept, out)
    trained = ", ".join(f"{episodes(chosen, n)} on {n}" for n in chosen.scenarios)
    said = (
        f"study: {len(chosen.seeds)} seeds x {chosen.eval_episodes} held-out, episodes "
        f"{trained}, CP-SAT {chosen.time_limit_s:g} s"
    )
    rows = []
    lines = [
        f"`{study_command(chosen)}` ({said}; "
        f"figures: `{shown(out)}/REPORT.md`). IQM ratio over (seed, held-out instance) "
        "[95% stratified-bootstrap interval]; below 1 is better than the reference; "
        "plan s: mean seconds to plan one instance; train s: mean seconds to train one run, "
        "expert data included."
    ]
    for name in chosen.scenarios:
        runs = [s for s in specs if scenario_of(s) == name]
        results = [swept.results[s.key] for s in runs if s.key in swept.results]
        setting = f"W = {runs[0].bandwidth_mhz:g} MHz, T_max = {runs[0].deadline_s:g} s"
        sec = study_report.section(chosen, name, setting, results, out)
        learners = [r for r in sec.rows if r.method not in REFERENCES and r.to_classic]
        paper = [r for r in learners if r.method in PAPER]
        best = min(learners, key=lambda r: r.to_classic.iqm)
        found = [f"best {versus(best)}"]
        if paper and (ours := min(paper, key=lambda r: r.to_classic.iqm)) is not best:
            found.append(f"best of the paper's: {versus(ours)}")
        budget = f"{len(chosen.seeds)} seeds x {chosen.eval_episodes} held-out, "
        budget += f"{episodes(chosen, name)} episodes"
        rows.append([f"Learners on `{name}` ({budget})", "; ".join(found)])
        lines += ["", f"### {name} ({setting})", "", sec.verdict, ""]
        lines += [
            "| method | " + " | ".join(h for _, h in COLUMNS) + " | plan s | train s | runs |"
        ]
        lines += ["|---|" + "---:|" * (len(COLUMNS) + 3)]
        lines += [
            f"| {r.method} | "
            + " | ".join(interval(r.to.get(key)) for key, _ in COLUMNS)
            + f" | {r.plan_s:.3g} | {r.train_s:.0f} | {r.runs} |"
            for r in sec.rows
        ]
        lines += time_split([s for s in runs if s.key in swept.results], out)
    return rows, lines


def time_split(specs: list[object], out: Path) -> list[str]:
    """Where a warm-started learner's training time went (its config.json's clock), as the
    mean over its runs: the expert's CP-SAT solves (a run that found them cached: ~0),
    cloning, and the rest (RL), with the agreement cloning reached."""
    clocks: dict[str, list[dict[str, float]]] = {}
    for spec in specs:
        path = out / "runs" / spec.name / "config.json"
        clock = json.loads(path.read_text()) if path.is_file() else {}
        if "expert_s" in clock:
            clocks.setdefault(spec.method, []).append(clock)
    if not clocks:
        return []
    lines = ["", "| warm-started | expert s | cloning s | RL s | agreement with the expert |"]
    lines += ["|---|---:|---:|---:|---:|"]
    for method, runs in clocks.items():
        mean = {k: sum(c[k] for c in runs) / len(runs) for k in ("expert_s", "bc_s", "train_s")}
        rl = mean["train_s"] - mean["expert_s"] - mean["bc_s"]
        agreement = sum(c["bc_agreement"] for c in runs) / len(runs)
        lines.append(
            f"| {method} | {mean['expert_s']:.0f} | {mean['bc_s']:.0f} | {rl:.0f} | "
            f"{agreement:.1%} |"
        )
    return lines


def study_command(study: object) -> str:
    """The command line that runs ``study`` (the cache's directory aside)."""
    words = ["llmoffload reproduce --study beyond", f"--seeds {len(study.seeds)}"]
    words += [f"--scenario {n}" for n in study.scenarios]
    words += [f"--method {m}" for m in study.methods]
    words += [f"--eval-episodes {study.eval_episodes}", f"--time-limit {study.time_limit_s:g}"]
    return " ".join(words + ([f"--episodes {study.episodes}"] if study.episodes else []))


def versus(row: object) -> str:
    """A learner's row as the headline gives it: against best classic, against the search
    at its own planning time (beats it: the interval below 1; loses to it: above 1; to 4
    places, where the verdict turns on a hair), and above the certified lower bound."""
    search = row.to.get("search")
    said = "n/a"
    if search is not None:
        said = "beats" if search.high < 1 else "loses to" if search.low > 1 else "does not beat"
    return (
        f"{row.method}: {interval(row.to_classic)} x best classic; "
        f"{interval(search, 4)} x search at its {row.plan_s:.2g} s ({said} it); "
        f"{interval(row.to.get('bound'))} x lower bound"
    )


def interval(e: object, places: int = 3) -> str:
    """An IQM with its interval, or n/a where there was no reference to divide by."""
    if e is None:
        return "n/a"
    return f"{e.iqm:.{places}f} [{e.low:.{places}f}, {e.high:.{places}f}]"


# -- the benchmarks ---------------------------------------------------------------------------


def bench(script: str, *args: str) -> tuple[str, str]:
    """Run ``benchmarks/script`` and return its command line and what it printed."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    shown = " ".join(["python", f"benchmarks/{script}", *args])
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"error: {shown} failed:\n{done.stderr[-2000:]}")
    took = time.perf_counter() - began
    return f"`{shown}` ({took:.0f} s)", done.stdout.strip()


def runtime() -> tuple[list[list[str]], list[str]]:
    """bench_runtime.py's tables; the headline's row is calibration's effect on the
    prediction error of real workflow subtasks."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runtime.json"
        said, _ = bench("bench_runtime.py", "--seconds", "2", "--json", str(path))
        said = said.replace(str(path), "FILE")  # a temporary file, gone after
        tables = json.loads(path.read_text())
    lines = [said + ":"]
    for t in tables:
        lines += ["", f"{t['title']}:", "", "| " + " | ".join(t["header"]) + " |"]
        lines += ["|---|" + "---:|" * (len(t["header"]) - 1)]
        lines += ["| " + " | ".join(row) + " |" for row in t["rows"]]
    error = next(t for t in tables if t["title"].startswith("mean |real - predicted|"))
    _, before, after = next(r for r in error["rows"] if r[0] == "workflow subtasks")
    row = [
        f"{NOT_MEASURED[0]} of real workflow requests (4 local llama.cpp servers)",
        f"{before} ms with the paper's timings, {after} ms calibrated",
    ]
    return [row], lines


NOT_MEASURED = [
    "Runtime: mean \\|real - predicted\\| per subtask",
    "not measured in this run (`python benchmarks/results.py --runtime`, the local extra)",
]


def headline(rows: list[list[str]]) -> str:
    body = ["| finding | measured |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join([BEGIN, *body, END])


def replace_block(text: str, block: str) -> str:
    """``text`` with its headline block (markers included) replaced by ``block``."""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: README.md has no {BEGIN} ... {END} block to fill")
    return pattern.sub(lambda _: block, text, count=1)


def block_of(text: str) -> str | None:
    """The headline block of a markdown text, markers included, or None."""
    found = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), text, re.S)
    return found.group(0) if found else None


def main() -> None:
    from llmoffload.marl.registry import PAPER  # the paper's six learners

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", choices=("full", "quick"), default="full")
    parser.add_argument("--sweep-out", type=Path, help="its cache (default: as reproduce's)")
    parser.add_argument("--study", choices=("quick", "full", "none"), default="quick")
    parser.add_argument(
        "--study-out", type=Path, help="a study already run (its study.json), instead of --study"
    )
    parser.add_argument("--method", nargs="+", help="the study's learners (default: its own)")
    parser.add_argument("--runtime", action="store_true", help="bench_runtime.py too")
    parser.add_argument("--instances", type=int, default=20, help="bench_model.py, per scenario")
    parser.add_argument("--episodes", type=int, default=100, help="bench_speed.py, per run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    command = "python benchmarks/results.py " + " ".join(sys.argv[1:])
    benches = [*BENCHES, "bench_runtime.py"] if args.runtime else list(BENCHES)
    scripts = [f"benchmarks/{b}" for b in benches]
    code = numbers_code(scripts)  # before anything runs: the code as it was
    record = args.out.with_suffix(PROVENANCE)
    header = provenance(command.strip(), code, record)

    rows, lines = sweep(args.sweep, args.sweep_out, args.workers)
    sections = ["## The paper's claims", "", *lines]
    if args.study != "none":
        more, lines = study(args.study, args.study_out, args.workers, args.method)
        rows += more
        sections += ["", "## The learners where scheduling matters", "", *lines]
    model = f"--instances {args.instances} --time-limit 1 --repeats 5 --scenario".split()
    said, printed = bench("bench_model.py", *model, *SCENARIOS)
    sections += ["", "## The model and the classic schedulers", "", said + ":", "", printed]
    speed = f"--parts env train --episodes {args.episodes} --seconds 1 --algos".split()
    said, printed = bench("bench_speed.py", *speed, *PAPER)
    sections += ["", "## Speed", "", said + ":", "", printed]
    said, printed = bench("bench_gnn.py")
    sections += ["", "One decision of gnn-sched, " + said + ":", "", "```text", printed, "```"]
    if args.runtime:
        more, lines = runtime()
        rows += more
        sections += ["", "## The runtime on real endpoints", "", *lines]
    else:
        rows.append(NOT_MEASURED)

    block = headline(rows)
    text = "\n".join(
        ["# Measured results", "", *header, "", "## Headline", "", block, "", *sections, ""]
    )
    args.out.write_text(text)
    write_record(code, scripts, record)
    args.readme.write_text(replace_block(args.readme.read_text(), block))
    print(f"{args.out} and the headline of {args.readme} written")


if __name__ == "__main__":
    main()
