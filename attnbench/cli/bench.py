"""`attnbench bench complexity` and `attnbench bench accuracy`: options in, one config object, the sweep, tables."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from attnbench.cli.app import bench_app
from attnbench.cli.console import accuracy_table, complexity_tables, console
from attnbench.cli.errors import fail, user_errors
from attnbench.cli.jobs import executor_choice, finish, in_session
from attnbench.cli.options import (
    Device,
    ExecutorName,
    MaxCells,
    Out,
    RayAddress,
    Remeasure,
    Resume,
    Retries,
    TrustPlugins,
    checked_device,
)
from attnbench.core.baseline import BASELINE
from attnbench.sweeps.complexity_config import default_of


def _lengths() -> str:
    lengths = default_of("seq_lens")
    return f"{lengths[0]}..{lengths[-1]}"


class PassName(StrEnum):
    fwd = "fwd"
    fwd_bwd = "fwd+bwd"


class DType(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@bench_app.command("complexity")
@user_errors
def complexity_command(
    variant: Annotated[
        list[str] | None, typer.Option("--variant", help="Variant spec (repeatable); default: every registered one.")
    ] = None,
    seq_len: Annotated[
        list[str] | None,
        typer.Option("--seq-len", help=f"Length or doubling range a..b (repeatable); default {_lengths()}."),
    ] = None,
    pass_: Annotated[list[PassName] | None, typer.Option("--pass", help="fwd and/or fwd+bwd; default both.")] = None,
    batch: Annotated[int | None, typer.Option(min=1, help=f"Default {default_of('batch')}.")] = None,
    heads: Annotated[int | None, typer.Option(min=1, help=f"Default {default_of('heads')}.")] = None,
    head_dim: Annotated[int | None, typer.Option(min=1, help=f"Default {default_of('head_dim')}.")] = None,
    causal: Annotated[bool | None, typer.Option("--causal/--no-causal", help="Default: non-causal.")] = None,
    dtype: Annotated[DType | None, typer.Option(help=f"Default {default_of('dtype')}.")] = None,
    device: Device = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Default: torch's thread count.")] = None,
    compile_: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="Wrap each variant in torch.compile.")
    ] = None,
    layer: Annotated[
        bool | None, typer.Option("--layer/--no-layer", help="Also measure a whole skeleton layer.")
    ] = None,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            help=f"Skip cells predicted above this: {default_of('memory_budget')} (default, of available RAM), 8GiB"
        ),
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option(help=f"Seconds per cell before it is killed (default {default_of('time_budget_s'):g})."),
    ] = None,
    out: Out = None,
    resume: Resume = None,
    max_cells: MaxCells = None,
    executor: ExecutorName = None,
    ray_address: RayAddress = None,
    retries: Retries = None,
    min_run_time: Annotated[float | None, typer.Option(hidden=True, min=0.0)] = None,
    remeasure: Remeasure = None,
    trust_plugins: TrustPlugins = False,
) -> None:
    """Time, peak memory and FLOPs of each variant as the sequence length grows; fitted scaling exponents."""
    import torch

    from attnbench.core.registry import canonical_spec, loaded_plugins
    from attnbench.runs.environment import device_memory_bytes
    from attnbench.runs.session import load_run_plugins, new_run, open_for_resume
    from attnbench.sweeps import complexity
    from attnbench.sweeps.complexity_config import PASSES, ComplexityConfig, default_of, default_variants
    from attnbench.sweeps.options import parse_bytes, parse_lengths

    device = checked_device(device)
    choice = executor_choice(executor, ray_address, retries)
    if resume is not None and variant:
        load_run_plugins(resume, trust=trust_plugins)  # the run's plugin variants resolve before --variant does
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
        if remeasure is not None:
            fail("--remeasure cannot change on --resume: the run keeps the stability rules it started with")
        given["memory_budget"] = memory_budget  # as typed: "75%" of today's free RAM is not a conflict
        run_dir, manifest = open_for_resume(resume, "complexity", given, trust_plugins=trust_plugins)
        config = ComplexityConfig.from_dict(manifest["complexity"])
    else:
        chosen = {k: v for k, v in given.items() if v is not None}
        chosen.setdefault(
            "variants",
            default_variants(causal=bool(causal), device=device or "cpu", passes=chosen.get("passes", PASSES)),
        )
        chosen.setdefault("threads", torch.get_num_threads())
        chosen["memory_budget"] = memory_budget or default_of("memory_budget")
        available = device_memory_bytes(device or default_of("device"))
        chosen["memory_budget_bytes"] = parse_bytes(chosen["memory_budget"], available=available)
        chosen["plugins"] = loaded_plugins()
        if remeasure is not None:
            chosen["stability"] = {"remeasure": remeasure}
        config = ComplexityConfig(**chosen)
        run_dir = new_run(
            "complexity", sections={"complexity": config.to_dict()}, device=config.device, threads=config.threads,
            out=out,
        )  # fmt: skip
    console.print(
        f"[bold]complexity[/] {len(config.variants)} variants × n={config.seq_lens} × {config.passes} → {run_dir.path}"
    )
    frame = in_session(
        run_dir, lambda executor, on_event: complexity.complexity_job(
            config, run_dir, executor, max_cells=max_cells, on_event=on_event
        ), choice, config.plugins,
    )  # fmt: skip
    for table in complexity_tables(frame):
        console.print(table)
    finish(run_dir.path, "complexity.csv, complexity_raw.csv, manifest.json")


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
    baseline: Annotated[
        list[str] | None,
        typer.Option("--baseline", help="A model baseline trained beside the variants (repeatable): lstm."),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="Per-task settings: quick (default), standard, lra, mad, mad-quick (see list --tasks)."),
    ] = None,
    seq_len: Annotated[
        list[str] | None,
        typer.Option(
            "--seq-len",
            help="Train at this length (repeatable; a..b doubles from a to b, e.g. 32..128); default: the preset's.",
        ),
    ] = None,
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
    device: Device = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Torch threads per cell; default 1 (small models train fastest so).")
    ] = None,
    mad_grid: Annotated[
        bool, typer.Option("--mad-grid", help="Train each cell over MAD's lr × weight-decay grid (6×); best counts.")
    ] = False,
    out: Out = None,
    resume: Resume = None,
    max_cells: MaxCells = None,
    executor: ExecutorName = None,
    ray_address: RayAddress = None,
    retries: Retries = None,
    trust_plugins: TrustPlugins = False,
) -> None:
    """Train each variant in the same skeleton on long-range tasks; report accuracy and cost per step."""
    from attnbench.core.registry import loaded_plugins
    from attnbench.runs.session import new_run, open_for_resume
    from attnbench.sweeps import accuracy
    from attnbench.sweeps.accuracy import AccuracyConfig, TaskPlan, tasks_with_data_dir
    from attnbench.sweeps.options import parse_lengths
    from attnbench.tasks import available_tasks

    device = checked_device(device)
    choice = executor_choice(executor, ray_address, retries)
    if resume is not None:
        given_any = [task, variant, seed, baseline, preset, seq_len, steps, batch_size, lr, d_model, layers, heads,
                     time_budget, data_dir, out]  # fmt: skip
        if any(v is not None for v in given_any) or mad_grid:
            fail("--resume finishes a run as it was configured: pass only --resume DIR (and --device/--threads)")
        run_dir, manifest = open_for_resume(
            resume, "accuracy", {"device": device, "threads": threads}, trust_plugins=trust_plugins
        )
        config = AccuracyConfig.from_dict(manifest["accuracy"])
    else:
        overrides = {
            "steps": steps, "batch_size": batch_size, "lr": lr, "d_model": d_model,
            "num_layers": layers, "num_heads": heads, "time_budget_s": time_budget,
        }  # fmt: skip
        overrides = {k: v for k, v in overrides.items() if v is not None}
        tasks = task or available_tasks()
        if data_dir is not None:
            tasks = tasks_with_data_dir(tasks, data_dir, named=task is not None)
        lengths = parse_lengths(seq_len) if seq_len else None
        if lengths is not None and len(lengths) == 1:  # one length overrides the preset's, as it always did
            overrides["seq_len"], lengths = lengths[0], None
        plan_options: dict[str, Any] = {
            "overrides": overrides, "seeds": seed, "seq_lens": lengths, "baselines": baseline or [],
        }  # fmt: skip
        if preset is not None:
            plan_options["preset"] = preset
        grid = accuracy.mad_grid() if mad_grid else [{}]
        if mad_grid and ("lr" in overrides or "weight_decay" in overrides):
            fail("--mad-grid sets the learning rate itself: drop --lr (or drop --mad-grid)")
        plans = [
            TaskPlan(task=t, variants=variant or [BASELINE], **{**plan_options, "overrides": {**overrides, **point}})
            for t in tasks
            for point in grid
        ]
        settings: dict[str, Any] = {"device": device, "threads": threads}
        config = AccuracyConfig(
            tasks=plans, plugins=loaded_plugins(), **{k: v for k, v in settings.items() if v is not None}
        )
        run_dir = new_run(
            "accuracy", sections={"accuracy": config.to_dict()}, device=config.device, threads=config.threads, out=out
        )
    console.print(f"[bold]accuracy[/] {len(config.cells())} cells → {run_dir.path}")
    frame = in_session(
        run_dir, lambda executor, on_event: accuracy.accuracy_job(
            config, run_dir, executor, max_cells=max_cells, on_event=on_event
        ), choice, config.plugins,
    )  # fmt: skip
    console.print(accuracy_table(frame))
    finish(run_dir.path, "accuracy.csv, curves.csv, accuracy_by_distance.csv, manifest.json")
