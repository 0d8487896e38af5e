"""A run directory read back: its manifest and every result file (empty frames for the files it lacks)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.core.errors import UserError
from attnbench.runs.rundir import read_rows
from attnbench.runs.schema import (
    ACCURACY_CSV,
    APPROXIMATION_CSV,
    BY_DISTANCE_CSV,
    COMPLEXITY_CSV,
    CURVES_CSV,
    DECODE_CSV,
    FILES,
    MANIFEST,
)


@dataclass
class RunData:
    """Everything a report is made from: the manifest and the result files (empty frames when absent)."""

    path: Path
    manifest: dict[str, Any]
    complexity: pd.DataFrame
    accuracy: pd.DataFrame
    curves: pd.DataFrame
    by_distance: pd.DataFrame
    approximation: pd.DataFrame
    missing_files: list[str] = field(default_factory=list)
    decode: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def specs(self) -> list[str]:
        frames = (self.complexity, self.accuracy, self.by_distance, self.approximation, self.decode)
        return sorted({str(s) for f in frames if "spec" in f.columns for s in f["spec"].dropna()})


def node_type(node: Any, device: Any, nodes: dict[str, Any]) -> str:
    """The kind of machine a row ran on (its GPU model on CUDA, else its CPU model and count); "" if unrecorded."""
    description = nodes.get(str(node)) if isinstance(node, str) else None
    if not isinstance(description, dict):
        return ""
    if str(device).startswith("cuda") and description.get("gpu"):
        return str(description["gpu"])
    return f"{description.get('cpu_model', '?')} ({description.get('cpu_count', '?')} CPUs)"


def with_node_type(frame: pd.DataFrame, manifest: dict[str, Any]) -> pd.DataFrame:
    """``frame`` plus a ``node_type`` column: the key that keeps fits and picks to one kind of machine."""
    nodes = (manifest.get("executor") or {}).get("nodes") or {}
    frame = frame.copy()
    if frame.empty:
        frame["node_type"] = pd.Series(dtype=str)
        return frame
    nodes_of = frame["node"] if "node" in frame.columns else pd.Series([None] * len(frame), index=frame.index)
    devices = frame["device"] if "device" in frame.columns else pd.Series(["cpu"] * len(frame), index=frame.index)
    frame["node_type"] = [node_type(n, d, nodes) for n, d in zip(nodes_of, devices, strict=True)]
    return frame


def load_run(run_dir: Path) -> RunData:
    """Read a run directory; a path that is not one raises :class:`UserError` naming the file and the fix."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass a directory under results/ made by attnbench")
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        raise UserError(
            f"{manifest_path} not found: {run_dir} is not an attnbench run directory "
            "(pass a directory written by `attnbench run` or `attnbench bench ...`)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{manifest_path} is not valid JSON ({err}); restore it from the run or re-run") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{manifest_path} does not hold a JSON object; it is not an attnbench manifest")
    frames = {name: read_rows(run_dir / name, columns) for name, columns in FILES.items()}
    frames[COMPLEXITY_CSV] = with_node_type(frames[COMPLEXITY_CSV], manifest)
    missing = [name for name in FILES if not (run_dir / name).exists()]
    return RunData(
        path=run_dir,
        manifest=manifest,
        complexity=frames[COMPLEXITY_CSV],
        accuracy=frames[ACCURACY_CSV],
        curves=frames[CURVES_CSV],
        by_distance=frames[BY_DISTANCE_CSV],
        approximation=frames[APPROXIMATION_CSV],
        missing_files=missing,
        decode=frames[DECODE_CSV],
    )
