"""`attnbench run`: a suite's complexity and accuracy sweeps in one run directory, then plots and report.md."""

from __future__ import annotations

from typing import Annotated

import typer

from attnbench.cli.app import app
from attnbench.cli.console import accuracy_table, complexity_tables, console
from attnbench.cli.errors import fail, user_errors
from attnbench.cli.jobs import executor_choice, in_session
from attnbench.cli.options import (
    Device,
    ExecutorName,
    MaxCells,
    Out,
    RayAddress,
    Remeasure,
    Resume,
    Retries,
    Threads,
    TrustPlugins,
    checked_device,
)


@app.command("run")
@user_errors
def run_command(
    suite: Annotated[
        str | None, typer.Option(help="A shipped suite (quick, standard) or a suite .toml file; default quick.")
    ] = None,
    resume: Resume = None,
    out: Out = None,
    device: Device = None,
    threads: Threads = None,
    max_cells: MaxCells = None,
    remeasure: Remeasure = None,
    executor: ExecutorName = None,
    ray_address: RayAddress = None,
    retries: Retries = None,
    trust_plugins: TrustPlugins = False,
) -> None:
    """The main job: a suite's complexity and accuracy sweeps, then plots and report.md."""
    import dataclasses
    import time
    from dataclasses import asdict

    import torch

    from attnbench.cli.decode import decode_table
    from attnbench.core.registry import loaded_plugins
    from attnbench.reporting.report import write_report
    from attnbench.runs.schema import (
        ACCURACY_COLUMNS,
        ACCURACY_CSV,
        COMPLEXITY_COLUMNS,
        COMPLEXITY_CSV,
        DECODE_COLUMNS,
        DECODE_CSV,
    )
    from attnbench.runs.session import new_run, open_for_resume
    from attnbench.sweeps import suite as suites
    from attnbench.sweeps.accuracy import AccuracyConfig
    from attnbench.sweeps.complexity_config import ComplexityConfig
    from attnbench.sweeps.decode_config import DecodeConfig
    from attnbench.sweeps.suite_file import load_suite

    started = time.perf_counter()
    device = checked_device(device)
    if resume is not None:
        if suite is not None or out is not None or remeasure is not None:
            fail("--resume finishes a run with its own suite: drop --suite/--out/--remeasure")
        run_dir, manifest = open_for_resume(
            resume, "run", {"device": device, "threads": threads}, trust_plugins=trust_plugins
        )
        complexity = ComplexityConfig.from_dict(manifest["complexity"]) if manifest.get("complexity") else None
        accuracy = AccuracyConfig.from_dict(manifest["accuracy"]) if manifest.get("accuracy") else None
        decode = DecodeConfig.from_dict(manifest["decode"]) if manifest.get("decode") else None
        tolerance = manifest["run"]["acc_tolerance"]
        suite_execution = (manifest["run"].get("suite") or {}).get("execution")
    else:
        chosen = load_suite(suite or "quick")
        device = device or "cpu"
        plugins = loaded_plugins()
        complexity = suites.complexity_config(
            chosen, device=device, threads=threads or torch.get_num_threads(), plugins=plugins
        )
        if complexity is not None and remeasure is not None:
            stability = dataclasses.replace(complexity.stability, remeasure=remeasure)
            complexity = dataclasses.replace(complexity, stability=stability)
        accuracy = suites.accuracy_config(chosen, device=device, threads=threads, plugins=plugins)
        decode = suites.decode_config(
            chosen, device=device, threads=threads or torch.get_num_threads(), plugins=plugins
        )
        tolerance = chosen.report.acc_tolerance
        suite_execution = asdict(chosen.execution)
        sections = {
            "run": {"device": device, "threads": threads, "acc_tolerance": tolerance, "suite": chosen.to_dict()},
            "complexity": complexity.to_dict() if complexity else None,
            "accuracy": accuracy.to_dict() if accuracy else None,
            "decode": decode.to_dict() if decode else None,
        }
        run_dir = new_run(
            "run", suite=chosen.name, sections=sections, device=device, threads=threads or torch.get_num_threads(),
            out=out,
        )  # fmt: skip
    choice = executor_choice(executor, ray_address, retries, suite_execution)
    console.print(f"[bold]attnbench run[/] → {run_dir.path}")
    plugins = (complexity or accuracy).plugins if (complexity or accuracy) else []
    in_session(
        run_dir, lambda executor, on_event: suites.run_suite(
            run_dir, executor, complexity=complexity, accuracy=accuracy, decode=decode, max_cells=max_cells,
            on_event=on_event,
        ), choice, plugins,
    )  # fmt: skip
    report = write_report(run_dir.path, acc_tolerance=tolerance)
    for table in complexity_tables(run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS)):
        console.print(table)
    console.print(accuracy_table(run_dir.rows(ACCURACY_CSV, ACCURACY_COLUMNS)))
    if decode is not None:
        console.print(decode_table(run_dir.rows(DECODE_CSV, DECODE_COLUMNS)))
    console.print(f"done in {time.perf_counter() - started:.0f} s")
    console.print(f"[bold green]report:[/] {report}")
