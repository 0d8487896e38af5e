"""The `attnbench` command line: thin commands that parse options, call a plain function and print.

User mistakes print one line (`error: ...`) and exit 2; a failed check or a regression exits 1.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from attnbench import __version__
from attnbench.bench.console import console
from attnbench.core.errors import UserError
from attnbench.core.registry import ATTENTION, attention_catalogue, load_plugin

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="attnbench",
    help="Which attention should I use at sequence length n? Measure time, memory, FLOPs and accuracy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Measure variants: `complexity` (time/memory/FLOPs vs n), `accuracy` (training).")
app.add_typer(bench_app, name="bench")


def fail(message: str, *, hint: str | None = None, code: int = 2) -> NoReturn:
    """Print one plain line (never wrapped, no traceback) and exit."""
    typer.echo(f"error: {message}" + (f" ({hint})" if hint else ""), err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the user's mistakes (UserError) into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from attnbench.bench.session import Interrupted

        try:
            return fn(*args, **kwargs)
        except UserError as err:
            fail(str(err))
        except Interrupted as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(130) from None

    return wrapper


def _show_plugin_failures() -> None:
    for failure in ATTENTION.failures:
        typer.echo(f"warning: plugin {failure.name!r} ({failure.source}) was skipped: {failure.error}", err=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"attnbench {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            help="Import a module or a .py file that registers attention variants or tasks (repeatable).",
            metavar="MODULE_OR_FILE.py",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version)
    ] = False,
) -> None:
    try:
        for target in plugin or []:
            load_plugin(target)
    except UserError as err:
        fail(str(err))


@app.command("list")
@user_errors
def list_command(
    family: Annotated[str | None, typer.Option(help="Only this family (full, sparse, linear, ...).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the registered attention variants and their options."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # plugin failures are reported below, once
        records = attention_catalogue(family)
    if family is not None and not records:
        families = sorted({r["family"] for r in attention_catalogue()})
        fail(f"no variants in family {family!r}", hint=f"families: {', '.join(families)}")
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        _show_plugin_failures()
        return
    table = Table(title="attention variants", title_justify="left")
    for column in ("name", "family", "exact", "causal", "cross", "options (type = default)"):
        table.add_column(column)
    for r in records:
        options = ", ".join(f"{o['name']}: {o['type']} = {o['default']}" for o in r["options"]) or "-"
        cells = (r["name"], r["family"], _yes(r["exact"]), _yes(r["causal"]), _yes(r["cross"]), options)
        table.add_row(*map(escape, cells))  # "list[int]" is not rich markup
    console.print(table)
    _show_plugin_failures()


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@app.command("check")
@user_errors
def check_command(
    spec: Annotated[str, typer.Argument(help="Variant spec, e.g. 'window:radius=8,block=16'.")],
    seq_len: Annotated[int, typer.Option(min=2, help="Sequence length of the checks.")] = 70,
    head_dim: Annotated[int, typer.Option(min=1)] = 8,
    heads: Annotated[int, typer.Option(min=1)] = 2,
    batch: Annotated[int, typer.Option(min=2, help="At least 2: one item is fully masked.")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Run the conformance kit on one variant; exit 1 if any check fails."""
    from attnbench.core.registry import create_attention
    from attnbench.testing import check_attention

    create_attention(spec, head_dim=head_dim, num_heads=heads)  # a bad spec fails here, as one line
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            fail(f"--device {device}: CUDA is not available on this machine", hint="use --device cpu")
    elif device != "cpu":
        fail(f"--device must be cpu or cuda, got {device!r}")
    report = check_attention(
        spec, seq_len=seq_len, head_dim=head_dim, num_heads=heads, batch=batch, seed=seed, device=device
    )
    table = Table(title=f"conformance: {report.spec}", title_justify="left")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    styles = {"passed": "green", "failed": "bold red", "skipped": "yellow", "reported": "cyan"}
    for r in report.results:
        table.add_row(escape(r.name), f"[{styles[r.status]}]{r.status}[/]", escape(r.detail))
    console.print(table)
    if not report.passed:
        console.print(f"[bold red]{len(report.failures)} check(s) failed[/]")
        raise typer.Exit(1)
    console.print("[green]all checks passed[/]")


class PassName(StrEnum):
    fwd = "fwd"
    fwd_bwd = "fwd+bwd"


class DType(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def _device_option(device: str | None) -> str | None:
    if device is None:
        return None
    if device != "cpu" and not device.startswith("cuda"):
        fail(f"--device must be cpu or cuda, got {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            fail(f"--device {device}: CUDA is not available on this machine", hint="use --device cpu")
    return device


def _finish(run_dir: Path, what: str) -> None:
    console.print(f"[bold]{what}[/] written to {run_dir}")


@bench_app.command("complexity")
@user_errors
def complexity_command(
    variant: Annotated[
        list[str] | None, typer.Option("--variant", help="Variant spec (repeatable); default: every registered one.")
    ] = None,
    seq_len: Annotated[
        list[str] | None,
        typer.Option("--seq-len", help="Length or doubling range a..b (repeatable); default 256..8192."),
    ] = None,
    pass_: Annotated[list[PassName] | None, typer.Option("--pass", help="fwd and/or fwd+bwd; default both.")] = None,
    batch: Annotated[int | None, typer.Option(min=1, help="Default 1.")] = None,
    heads: Annotated[int | None, typer.Option(min=1, help="Default 4.")] = None,
    head_dim: Annotated[int | None, typer.Option(min=1, help="Default 64.")] = None,
    causal: Annotated[bool | None, typer.Option("--causal/--no-causal", help="Default: non-causal.")] = None,
    dtype: Annotated[DType | None, typer.Option(help="Default float32.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu (default) or cuda.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Default: torch's thread count.")] = None,
    compile_: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="Wrap each variant in torch.compile.")
    ] = None,
    layer: Annotated[
        bool | None, typer.Option("--layer/--no-layer", help="Also measure a whole skeleton layer.")
    ] = None,
    memory_budget: Annotated[
        str | None, typer.Option(help="Skip cells predicted above this: 75% (default, of available RAM), 8GiB, ...")
    ] = None,
    time_budget: Annotated[
        float | None, typer.Option(help="Seconds per cell before it is killed (default 120).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default results/<time>-complexity).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Finish an interrupted run in this directory.")] = None,
    max_cells: Annotated[int | None, typer.Option(hidden=True, min=1)] = None,
    min_run_time: Annotated[float | None, typer.Option(hidden=True, min=0.0)] = None,
) -> None:
    """Time, peak memory and FLOPs of each variant as the sequence length grows; fitted scaling exponents."""
    import torch

    from attnbench.bench.complexity import PASSES, ComplexityConfig, complexity_job, default_variants
    from attnbench.bench.console import complexity_tables
    from attnbench.bench.environment import device_memory_bytes
    from attnbench.bench.options import parse_bytes, parse_lengths
    from attnbench.bench.session import load_run_plugins, new_run, open_for_resume, session
    from attnbench.bench.workers import LocalExecutor
    from attnbench.core.registry import canonical_spec, loaded_plugins

    device = _device_option(device)
    if resume is not None and variant:
        load_run_plugins(resume)  # the run's plugin variants must resolve before --variant is canonicalised
    given: dict[str, Any] = {
        "variants": [canonical_spec(v) for v in variant] if variant else None,
        "seq_lens": parse_lengths(seq_len) if seq_len else None,
        "passes": [p.value for p in pass_] if pass_ else None,
        "batch": batch, "heads": heads, "head_dim": head_dim, "causal": causal,
        "dtype": dtype.value if dtype else None, "device": device, "threads": threads,
        "compile": compile_, "layer": layer, "time_budget_s": time_budget, "min_run_time": min_run_time,
    }  # fmt: skip
    if resume is not None:
        if out is not None:
            fail("--out and --resume cannot be combined: --resume continues the run where it is")
        given["memory_budget"] = memory_budget  # as typed: "75%" of today's free RAM is not a conflict
        run_dir, manifest = open_for_resume(resume, "complexity", given)
        config = ComplexityConfig.from_dict(manifest["complexity"])
    else:
        chosen = {k: v for k, v in given.items() if v is not None}
        chosen.setdefault(
            "variants",
            default_variants(causal=bool(causal), device=device or "cpu", passes=chosen.get("passes", PASSES)),
        )
        chosen.setdefault("threads", torch.get_num_threads())
        chosen["memory_budget"] = memory_budget or "75%"
        available = device_memory_bytes(device or "cpu")
        chosen["memory_budget_bytes"] = parse_bytes(chosen["memory_budget"], available=available)
        chosen["plugins"] = loaded_plugins()
        config = ComplexityConfig(**chosen)
        run_dir = new_run(
            "complexity", sections={"complexity": config.to_dict()}, device=config.device, threads=config.threads,
            out=out,
        )  # fmt: skip
    console.print(
        f"[bold]complexity[/] {len(config.variants)} variants × n={config.seq_lens} × {config.passes} → {run_dir.path}"
    )
    executor = LocalExecutor()
    with session(run_dir, executor):
        frame = complexity_job(config, run_dir, executor, max_cells=max_cells)
    for table in complexity_tables(frame):
        console.print(table)
    _finish(run_dir.path, "complexity.csv, complexity_raw.csv, manifest.json")


@bench_app.command("accuracy")
@user_errors
def accuracy_command(
    task: Annotated[
        list[str] | None, typer.Option("--task", help="Task spec (repeatable), e.g. mqar:pairs=16; default: all.")
    ] = None,
    variant: Annotated[
        list[str] | None, typer.Option("--variant", help="Attention spec for the self-attention slots (repeatable).")
    ] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="Seed (repeatable); default: the preset's.")] = None,
    preset: Annotated[str | None, typer.Option(help="Per-task settings: quick (default), standard, lra.")] = None,
    seq_len: Annotated[int | None, typer.Option(min=8, help="Override the preset's sequence length.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Override the preset's training steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(min=0.0)] = None,
    d_model: Annotated[int | None, typer.Option(min=8)] = None,
    layers: Annotated[int | None, typer.Option(min=1)] = None,
    heads: Annotated[int | None, typer.Option(min=1)] = None,
    time_budget: Annotated[float | None, typer.Option(help="Seconds of training per cell.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with LRA's listops-1000 basic_{train,val,test}.tsv (real ListOps).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu (default) or cuda.")] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Torch threads per cell; default 1 (small models train fastest so).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default results/<time>-accuracy).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Finish an interrupted run in this directory.")] = None,
    max_cells: Annotated[int | None, typer.Option(hidden=True, min=1)] = None,
) -> None:
    """Train each variant in the same skeleton on long-range tasks; report accuracy and cost per step."""

    from attnbench.bench.accuracy_sweep import (
        DEFAULT_THREADS,
        AccuracyConfig,
        TaskPlan,
        accuracy_job,
        tasks_with_data_dir,
    )
    from attnbench.bench.console import accuracy_table
    from attnbench.bench.session import new_run, open_for_resume, session
    from attnbench.bench.workers import LocalExecutor
    from attnbench.core.registry import loaded_plugins
    from attnbench.tasks import available_tasks

    device = _device_option(device)
    if resume is not None:
        given_any = [task, variant, seed, preset, seq_len, steps, batch_size, lr, d_model, layers, heads, time_budget,
                     data_dir, out]  # fmt: skip
        if any(v is not None for v in given_any):
            fail("--resume finishes a run as it was configured: pass only --resume DIR (and --device/--threads)")
        run_dir, manifest = open_for_resume(resume, "accuracy", {"device": device, "threads": threads})
        config = AccuracyConfig.from_dict(manifest["accuracy"])
    else:
        overrides = {
            "seq_len": seq_len, "steps": steps, "batch_size": batch_size, "lr": lr, "d_model": d_model,
            "num_layers": layers, "num_heads": heads, "time_budget_s": time_budget,
        }  # fmt: skip
        overrides = {k: v for k, v in overrides.items() if v is not None}
        tasks = task or available_tasks()
        if data_dir is not None:
            tasks = tasks_with_data_dir(tasks, data_dir, named=task is not None)
        plans = [
            TaskPlan(task=t, variants=variant or ["softmax"], preset=preset or "quick", seeds=seed, overrides=overrides)
            for t in tasks
        ]
        config = AccuracyConfig(
            tasks=plans, device=device or "cpu", threads=threads or DEFAULT_THREADS, plugins=loaded_plugins()
        )
        run_dir = new_run(
            "accuracy", sections={"accuracy": config.to_dict()}, device=config.device, threads=config.threads, out=out
        )
    console.print(f"[bold]accuracy[/] {len(config.cells())} cells → {run_dir.path}")
    executor = LocalExecutor()
    with session(run_dir, executor):
        frame = accuracy_job(config, run_dir, executor, max_cells=max_cells)
    console.print(accuracy_table(frame))
    _finish(run_dir.path, "accuracy.csv, curves.csv, accuracy_by_distance.csv, manifest.json")


@app.command("run")
@user_errors
def run_command(
    suite: Annotated[
        str | None, typer.Option(help="A shipped suite (quick, standard) or a suite .toml file; default quick.")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Finish an interrupted run in this directory.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default results/<time>-run-<suite>).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu (default) or cuda.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Default: torch's thread count.")] = None,
    max_cells: Annotated[int | None, typer.Option(hidden=True, min=1)] = None,
) -> None:
    """The main job: a suite's complexity and accuracy sweeps, then plots and report.md."""
    import time

    import torch

    from attnbench.bench.accuracy_sweep import AccuracyConfig
    from attnbench.bench.complexity import ComplexityConfig
    from attnbench.bench.console import accuracy_table, complexity_tables
    from attnbench.bench.results import ACCURACY_COLUMNS, COMPLEXITY_COLUMNS
    from attnbench.bench.runner import accuracy_config, complexity_config, run_suite
    from attnbench.bench.session import new_run, open_for_resume, session
    from attnbench.bench.suites import load_suite
    from attnbench.bench.workers import LocalExecutor
    from attnbench.core.registry import loaded_plugins

    started = time.perf_counter()
    device = _device_option(device)
    if resume is not None:
        if suite is not None or out is not None:
            fail("--resume finishes a run with its own suite: drop --suite/--out")
        run_dir, manifest = open_for_resume(resume, "run", {"device": device, "threads": threads})
        complexity = ComplexityConfig.from_dict(manifest["complexity"]) if manifest.get("complexity") else None
        accuracy = AccuracyConfig.from_dict(manifest["accuracy"]) if manifest.get("accuracy") else None
        tolerance = manifest["run"]["acc_tolerance"]
    else:
        chosen = load_suite(suite or "quick")
        device = device or "cpu"
        plugins = loaded_plugins()
        complexity = complexity_config(
            chosen, device=device, threads=threads or torch.get_num_threads(), plugins=plugins
        )
        accuracy = accuracy_config(chosen, device=device, threads=threads, plugins=plugins)
        tolerance = chosen.report.acc_tolerance
        sections = {
            "run": {"device": device, "threads": threads, "acc_tolerance": tolerance, "suite": chosen.to_dict()},
            "complexity": complexity.to_dict() if complexity else None,
            "accuracy": accuracy.to_dict() if accuracy else None,
        }
        run_dir = new_run(
            "run", suite=chosen.name, sections=sections, device=device, threads=threads or torch.get_num_threads(),
            out=out,
        )  # fmt: skip
    console.print(f"[bold]attnbench run[/] → {run_dir.path}")
    executor = LocalExecutor()
    with session(run_dir, executor):
        report = run_suite(
            run_dir, executor, complexity=complexity, accuracy=accuracy, acc_tolerance=tolerance, max_cells=max_cells
        )
    frame = run_dir.rows("complexity.csv", COMPLEXITY_COLUMNS)
    for table in complexity_tables(frame):
        console.print(table)
    console.print(accuracy_table(run_dir.rows("accuracy.csv", ACCURACY_COLUMNS)))
    console.print(f"done in {time.perf_counter() - started:.0f} s")
    console.print(f"[bold green]report:[/] {report}")


@app.command("report")
@user_errors
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (results/<time>-<command>...).")],
    acc_tolerance: Annotated[
        float | None, typer.Option(min=0.0, help="Accuracy points below softmax a recommended variant may be.")
    ] = None,
) -> None:
    """Plots and report.md again, from the run's result files alone (nothing is re-measured)."""
    from attnbench.bench.report import write_report

    path = write_report(run_dir, acc_tolerance=acc_tolerance)
    console.print(f"[bold green]report:[/] {path}")


@app.command("compare")
@user_errors
def compare_command(
    run_a: Annotated[Path, typer.Argument(help="The baseline run directory.")],
    run_b: Annotated[Path, typer.Argument(help="The run to check against it.")],
    fail_on: Annotated[
        float, typer.Option(min=0.0, help="Percent slower (beyond both cells' spread) or more memory = regression.")
    ] = 10.0,
    acc_drop: Annotated[float, typer.Option(min=0.0, help="Accuracy points lost that count as a regression.")] = 2.0,
) -> None:
    """Line up two runs cell by cell; exit 1 if B regressed against A (usable in CI)."""
    from attnbench.bench.compare import compare_runs, comparison_summary, comparison_tables

    comparison = compare_runs(run_a, run_b, fail_on=fail_on / 100, acc_drop=acc_drop)
    for warning in comparison.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    for table in comparison_tables(comparison):
        console.print(table)
    console.print(comparison_summary(comparison))
    if comparison.has_regressions:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: usage errors also become one line and exit code 2."""
    command = typer.main.get_command(app)
    try:
        code: Any = command.main(args=argv, prog_name="attnbench", standalone_mode=False)
    except typer.Exit as err:
        code = err.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        code = 130
    except Exception as err:
        # Click's (or Typer's vendored Click's) usage errors: duck-typed, so any Typer version works
        if not callable(getattr(err, "format_message", None)):
            raise
        ctx = getattr(err, "ctx", None)
        path = getattr(ctx, "command_path", "") or "attnbench"
        typer.echo(f"error: {err.format_message()} (see '{path} --help')", err=True)
        code = getattr(err, "exit_code", 2)
    sys.exit(code if isinstance(code, int) else 0)
