"""`attnbench bench decode`: prefill time, per-token latency, state bytes and peak memory at each context length."""

from __future__ import annotations

from typing import Annotated, Any

import pandas as pd
import typer
from rich.table import Table

from attnbench.cli.app import bench_app
from attnbench.cli.bench import DType
from attnbench.cli.console import console
from attnbench.cli.errors import fail, user_errors
from attnbench.cli.jobs import finish, in_session
from attnbench.cli.options import Device, MaxCells, Out, Resume, checked_device
from attnbench.reporting.units import human_bytes, human_seconds
from attnbench.sweeps.decode_config import decode_default_of


def _contexts() -> str:
    contexts = decode_default_of("contexts")
    return ", ".join(str(c) for c in contexts)


def decode_table(frame: pd.DataFrame) -> Table:
    """Variant × context: per-token latency / state bytes, or the status."""
    table = Table(title="decode: per-token latency / state bytes", title_justify="left")
    table.add_column("variant")
    table.add_column("batch", justify="right")
    if frame.empty:
        return table
    contexts = sorted(int(c) for c in frame["context"].unique())
    for c in contexts:
        table.add_column(f"c={c}", justify="right")
    for (spec, batch), part in frame.groupby(["spec", "batch"], sort=True):
        by_c = part.drop_duplicates("context", keep="last").set_index("context")
        cells = []
        for c in contexts:
            if c not in by_c.index:
                cells.append("[dim]missing[/]")
            elif by_c.loc[c, "status"] != "ok":
                cells.append(f"[yellow]{by_c.loc[c, 'status']}[/]")
            else:
                row = by_c.loc[c]
                cells.append(f"{human_seconds(row['decode_median_s'])} / {human_bytes(row['state_bytes'])}")
        table.add_row(str(spec), str(batch), *cells)
    return table


@bench_app.command("decode")
@user_errors
def decode_command(
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", help="Variant spec (repeatable); default: every one with a causal mode."),
    ] = None,
    context: Annotated[
        list[str] | None,
        typer.Option("--context", help=f"Context length or doubling range a..b (repeatable); default {_contexts()}."),
    ] = None,
    batch: Annotated[
        list[int] | None, typer.Option("--batch", min=1, help="Batch size (repeatable); default 1.")
    ] = None,
    heads: Annotated[int | None, typer.Option(min=1, help=f"Default {decode_default_of('heads')}.")] = None,
    head_dim: Annotated[int | None, typer.Option(min=1, help=f"Default {decode_default_of('head_dim')}.")] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, help=f"Timed decode steps per cell (default {decode_default_of('steps')}).")
    ] = None,
    dtype: Annotated[DType | None, typer.Option(help=f"Default {decode_default_of('dtype')}.")] = None,
    device: Device = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Default: torch's thread count.")] = None,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            help=f"Skip cells whose prefill is predicted above this: {decode_default_of('memory_budget')} "
            "(default, of available memory), 8GiB"
        ),
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option(help=f"Seconds per cell before it is killed (default {decode_default_of('time_budget_s'):g})."),
    ] = None,
    out: Out = None,
    resume: Resume = None,
    max_cells: MaxCells = None,
) -> None:
    """Inference cost: prefill over c tokens, then per-token decode latency, state bytes and peak memory at c."""
    import torch

    from attnbench.core.registry import canonical_spec, loaded_plugins
    from attnbench.runs.environment import device_memory_bytes
    from attnbench.runs.session import load_run_plugins, new_run, open_for_resume
    from attnbench.sweeps import decode
    from attnbench.sweeps.decode_config import DecodeConfig, default_decode_variants
    from attnbench.sweeps.options import parse_bytes, parse_lengths

    device = checked_device(device)
    if resume is not None and variant:
        load_run_plugins(resume)
    given: dict[str, Any] = {
        "variants": [canonical_spec(v) for v in variant] if variant else None,
        "contexts": parse_lengths(context, option="--context") if context else None,
        "batches": sorted(set(batch)) if batch else None,
        "heads": heads, "head_dim": head_dim, "steps": steps, "dtype": dtype.value if dtype else None,
        "device": device, "threads": threads, "time_budget_s": time_budget,
    }  # fmt: skip
    if resume is not None:
        if out is not None:
            fail("--out and --resume cannot be combined: --resume continues the run where it is")
        given["memory_budget"] = memory_budget
        run_dir, manifest = open_for_resume(resume, "decode", given)
        config = DecodeConfig.from_dict(manifest["decode"])
    else:
        chosen = {k: v for k, v in given.items() if v is not None}
        chosen.setdefault("variants", default_decode_variants(device=device or "cpu"))
        chosen.setdefault("threads", torch.get_num_threads())
        chosen["memory_budget"] = memory_budget or decode_default_of("memory_budget")
        available = device_memory_bytes(device or decode_default_of("device"))
        chosen["memory_budget_bytes"] = parse_bytes(chosen["memory_budget"], available=available)
        chosen["plugins"] = loaded_plugins()
        config = DecodeConfig(**chosen)
        run_dir = new_run(
            "decode", sections={"decode": config.to_dict()}, device=config.device, threads=config.threads, out=out
        )
    console.print(
        f"[bold]decode[/] {len(config.variants)} variants × c={config.contexts} × batch={config.batches} "
        f"→ {run_dir.path}"
    )
    frame = in_session(
        run_dir, lambda executor, on_event: decode.decode_job(
            config, run_dir, executor, max_cells=max_cells, on_event=on_event
        ),
    )  # fmt: skip
    console.print(decode_table(frame))
    finish(run_dir.path, "decode.csv, manifest.json")
