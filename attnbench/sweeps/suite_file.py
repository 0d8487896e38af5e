"""Suites: TOML files naming what `attnbench run` measures. Shipped ones live in ``attnbench/suites/``.

A suite has up to four sections — ``[complexity]``, ``[[accuracy.tasks]]`` (plus ``[accuracy]`` options),
``[report]`` and ``[execution]`` (executor, ray_address, retries) — and every key is checked: an unknown key,
a wrong type or an unknown variant, task or preset is an error that names the file, the key and the fix.
"""

from __future__ import annotations

import tomllib
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from attnbench.core.baseline import ACC_TOLERANCE_POINTS, BASELINE
from attnbench.core.errors import UserError
from attnbench.core.registry import (
    attention_class,
    canonical_spec,
    coerce,
    parse_attention_spec,
    split_spec,
    type_name,
)
from attnbench.execution.choice import DEFAULT_EXECUTOR, DEFAULT_RETRIES, ExecutorChoice
from attnbench.sweeps.accuracy import DEFAULT_PRESET
from attnbench.sweeps.complexity_config import default_of
from attnbench.sweeps.decode_config import decode_default_of
from attnbench.sweeps.options import parse_bytes, parse_lengths

SUITES_PACKAGE = "attnbench.suites"


@dataclass(kw_only=True)
class ComplexitySection:
    """A suite's [complexity] table: the keys of ComplexityConfig a suite may set, with ComplexityConfig's defaults."""

    variants: list[str]
    seq_lens: list[int] | str = field(default_factory=lambda: default_of("seq_lens"))
    passes: list[str] = field(default_factory=lambda: default_of("passes"))
    batch: int = default_of("batch")
    heads: int = default_of("heads")
    head_dim: int = default_of("head_dim")
    causal: bool = default_of("causal")
    dtype: str = default_of("dtype")
    layer: bool = default_of("layer")
    memory_budget: str = default_of("memory_budget")
    time_budget_s: float = default_of("time_budget_s")
    min_run_time: float = default_of("min_run_time")
    max_run_time: float = default_of("max_run_time")


@dataclass(kw_only=True)
class DecodeSection:
    """A suite's [decode] table: the keys of DecodeConfig a suite may set, with DecodeConfig's defaults."""

    variants: list[str]
    contexts: list[int] | str = field(default_factory=lambda: decode_default_of("contexts"))
    batches: list[int] = field(default_factory=lambda: decode_default_of("batches"))
    heads: int = decode_default_of("heads")
    head_dim: int = decode_default_of("head_dim")
    dtype: str = decode_default_of("dtype")
    warmup_steps: int = decode_default_of("warmup_steps")
    steps: int = decode_default_of("steps")
    step_time_budget_s: float = decode_default_of("step_time_budget_s")
    memory_budget: str = decode_default_of("memory_budget")
    time_budget_s: float = decode_default_of("time_budget_s")


@dataclass(kw_only=True)
class TaskEntry:
    task: str
    variants: list[str]
    preset: str = DEFAULT_PRESET
    seeds: int | list[int] | None = None  # None: as many as the preset says (seeds 0..k-1)
    overrides: dict[str, Any] = field(default_factory=dict)  # any training setting of the preset
    baselines: list[str] = field(default_factory=list)  # model baselines trained beside the variants: "lstm"
    seq_lens: list[int] | str | None = None  # lengths to train at ("32..128" doubles); None: the preset's one


@dataclass(kw_only=True)
class AccuracySection:
    tasks: list[TaskEntry]
    threads: int | None = None  # None: one thread per cell (small models train fastest that way on a CPU)
    mad_grid: bool = False  # every task entry over MAD's learning-rate × weight-decay grid (the best cell counts)


@dataclass(kw_only=True)
class ReportSection:
    acc_tolerance: float = ACC_TOLERANCE_POINTS


@dataclass(kw_only=True)
class ExecutionSection:
    """Where the suite's cells run; the command line's --executor/--ray-address/--retries win over these."""

    executor: str = DEFAULT_EXECUTOR
    ray_address: str | None = None
    retries: int = DEFAULT_RETRIES


@dataclass(kw_only=True)
class Suite:
    name: str
    description: str = ""
    complexity: ComplexitySection | None = None
    accuracy: AccuracySection | None = None
    decode: DecodeSection | None = None
    report: ReportSection = field(default_factory=ReportSection)
    source: str = ""
    execution: ExecutionSection = field(default_factory=ExecutionSection)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shipped_suites() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files(SUITES_PACKAGE).iterdir()
                  if p.name.endswith(".toml"))  # fmt: skip


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name (``quick``) or a user's TOML file, validated."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.exists():
        if path.is_dir():
            raise UserError(f"suite path {name_or_path!r} is a directory: pass a suite .toml file or a shipped name")
        if not path.is_file():
            raise UserError(
                f"suite file {name_or_path!r} does not exist (shipped suites: {', '.join(shipped_suites())})"
            )
        text, source = path.read_text(), str(path)
    else:
        if name_or_path not in shipped_suites():
            raise UserError(
                f"unknown suite {name_or_path!r}: shipped suites are {', '.join(shipped_suites())}; "
                "or pass the path of a .toml file"
            )
        text = resources.files(SUITES_PACKAGE).joinpath(f"{name_or_path}.toml").read_text()
        source = f"{name_or_path}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"suite {source}: not valid TOML: {err}") from None
    return parse_suite(data, source=source, default_name=Path(source).stem)


def parse_suite(data: dict[str, Any], *, source: str, default_name: str) -> Suite:
    where = f"suite {source}"
    known = {"name", "description", "complexity", "accuracy", "decode", "report", "execution"}
    _reject_unknown(data, known, where, "top level")
    complexity = accuracy = None
    if "complexity" in data:
        complexity = _section(data["complexity"], ComplexitySection, where, "[complexity]")
        complexity.variants = _specs(complexity.variants, where, "[complexity].variants")
        lengths = complexity.seq_lens
        try:
            complexity.seq_lens = parse_lengths([lengths] if isinstance(lengths, str) else [str(n) for n in lengths])
        except UserError as err:
            raise UserError(f"{where}: [complexity].seq_lens: {err}") from None
        _check_complexity(complexity, where)
    if "accuracy" in data:
        raw = data["accuracy"]
        if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list) or not raw["tasks"]:
            raise UserError(f"{where}: [accuracy] needs at least one [[accuracy.tasks]] table")
        _reject_unknown(raw, {"tasks", "threads", "mad_grid"}, where, "[accuracy]")
        threads = raw.get("threads")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise UserError(f"{where}: [accuracy].threads must be a positive integer, got {threads!r}")
        mad_grid = raw.get("mad_grid", False)
        if not isinstance(mad_grid, bool):
            raise UserError(f"{where}: [accuracy].mad_grid must be true or false, got {mad_grid!r}")
        tasks = []
        for i, entry in enumerate(raw["tasks"]):
            label = f"[[accuracy.tasks]] #{i + 1}"
            task = _section(entry, TaskEntry, where, label)
            task.variants = _specs(task.variants, where, f"{label}.variants")
            task.baselines = _baselines(task.baselines, where, f"{label}.baselines")
            _check_task(task, where, label)
            tasks.append(task)
        accuracy = AccuracySection(tasks=tasks, threads=threads, mad_grid=mad_grid)
    decode = _decode_section(data["decode"], where) if "decode" in data else None
    if complexity is None and accuracy is None and decode is None:
        raise UserError(f"{where}: has none of [complexity], [[accuracy.tasks]], [decode]: nothing to run")
    report = _section(data.get("report", {}), ReportSection, where, "[report]")
    if not report.acc_tolerance >= 0:  # `not >=` also refuses nan
        raise UserError(f"{where}: [report].acc_tolerance: must be >= 0 accuracy points, got {report.acc_tolerance}")
    execution = _section(data.get("execution", {}), ExecutionSection, where, "[execution]")
    try:
        ExecutorChoice(**asdict(execution))
    except UserError as err:
        raise UserError(f"{where}: [execution]: {err}") from None
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise UserError(f"{where}: name {name!r} must be letters, digits, '-' or '_' (it names the run directory)")
    return Suite(
        name=name, description=str(data.get("description", "")), complexity=complexity, accuracy=accuracy,
        decode=decode, report=report, source=source, execution=execution,
    )  # fmt: skip


def _reject_unknown(data: Any, known: set[str], where: str, section: str) -> None:
    if not isinstance(data, dict):
        raise UserError(f"{where}: {section} must be a table, got {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(
            f"{where}: {section} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def _section(data: Any, cls: type, where: str, section: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    _reject_unknown(data, names, where, section)
    values = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise UserError(f"{where}: {section} needs key {f.name!r} ({type_name(hints[f.name])})")
            continue
        if f.name == "overrides":
            if not isinstance(data[f.name], dict):
                raise UserError(f"{where}: {section}.overrides must be a table of training settings")
            values[f.name] = dict(data[f.name])
            continue
        try:
            values[f.name] = coerce(data[f.name], hints[f.name])
        except (TypeError, ValueError) as err:
            raise UserError(f"{where}: {section}.{f.name}: {err}") from None
    return cls(**values)


def _specs(specs: list[str], where: str, key: str) -> list[str]:
    if not specs:
        raise UserError(f"{where}: {key} is empty; name at least one variant (see `attnbench list`)")
    out = []
    for spec in specs:
        try:
            out.append(canonical_spec(spec))
        except UserError as err:
            raise UserError(f"{where}: {key}: {err}") from None
    return out


def _baselines(names: list[str], where: str, key: str) -> list[str]:
    from attnbench.training.baselines import get_baseline

    try:
        return [get_baseline(name).name for name in names]
    except UserError as err:
        raise UserError(f"{where}: {key}: {err}") from None


def _check_complexity(section: ComplexitySection, where: str) -> None:
    """Every value, checked here so that errors name the TOML key (ComplexityConfig's name command-line flags);
    then the config is built once, as the run will build it, so nothing it refuses gets past loading."""
    from attnbench.measure.workload import DTYPES
    from attnbench.sweeps.complexity_config import PASSES, ComplexityConfig

    def bad(key: str, problem: str) -> UserError:
        return UserError(f"{where}: [complexity].{key}: {problem}")

    if not section.passes:
        raise bad("passes", f"is empty; name at least one of {', '.join(PASSES)}")
    for p in section.passes:
        if p not in PASSES:
            raise bad("passes", f"{p!r} is not one of {', '.join(PASSES)}")
    for key in ("batch", "heads", "head_dim"):
        if getattr(section, key) < 1:
            raise bad(key, f"must be >= 1, got {getattr(section, key)}")
    if section.dtype not in DTYPES:
        raise bad("dtype", f"{section.dtype!r} is not one of {', '.join(DTYPES)}")
    for key in ("time_budget_s", "min_run_time", "max_run_time"):
        if not getattr(section, key) > 0:  # `not >` also refuses nan
            raise bad(key, f"must be positive seconds, got {getattr(section, key)}")
    if section.max_run_time < section.min_run_time:
        raise bad("max_run_time", f"{section.max_run_time} is below min_run_time ({section.min_run_time})")
    # the size of a percentage depends on the device, known only at run time: check the syntax here
    parse_bytes(section.memory_budget, available=2**40, option=f"{where}: [complexity].memory_budget:")
    if section.causal:
        unable = [v for v in section.variants if not attention_class(parse_attention_spec(v).name).supports_causal]
        if unable:
            raise bad("causal", f"{', '.join(unable)} cannot run causal attention (drop them or set causal = false)")
    values = asdict(section)
    del values["memory_budget"]
    try:
        ComplexityConfig(**values)
    except UserError as err:
        raise UserError(f"{where}: [complexity]: {err}") from None


def _decode_section(raw: Any, where: str) -> DecodeSection:
    """The [decode] table, checked: then DecodeConfig is built once, as the run will build it."""
    from attnbench.sweeps.decode_config import DecodeConfig

    section = _section(raw, DecodeSection, where, "[decode]")
    section.variants = _specs(section.variants, where, "[decode].variants")
    contexts = section.contexts
    try:
        section.contexts = parse_lengths(
            [contexts] if isinstance(contexts, str) else [str(c) for c in contexts], option="contexts"
        )
        parse_bytes(section.memory_budget, available=2**40, option="memory_budget")
        values = asdict(section)
        del values["memory_budget"]
        DecodeConfig(**values)
    except UserError as err:
        raise UserError(f"{where}: [decode]: {err}") from None
    return section


def _check_task(task: TaskEntry, where: str, label: str) -> None:
    from attnbench.tasks import canonical_task_spec
    from attnbench.tasks.models import ModelSize
    from attnbench.training.presets import get_preset
    from attnbench.training.settings import AccuracyCell

    if task.seq_lens is not None:
        raw_lengths = task.seq_lens
        try:
            task.seq_lens = parse_lengths(
                [raw_lengths] if isinstance(raw_lengths, str) else [str(n) for n in raw_lengths], option="seq_lens"
            )
        except UserError as err:
            raise UserError(f"{where}: {label}.seq_lens: {err}") from None
        if "seq_len" in task.overrides:
            raise UserError(f"{where}: {label}: give its lengths once, as seq_lens or as overrides.seq_len")
    if isinstance(task.seeds, int) and task.seeds < 1:
        raise UserError(f"{where}: {label}.seeds: must be >= 1 (a count) or a list of seeds, got {task.seeds}")
    if isinstance(task.seeds, list) and not task.seeds:
        raise UserError(f"{where}: {label}.seeds: is empty; give a count or a list of seeds")
    # an override reaches the cell unchecked (dataclasses.replace): coerce it to the setting's type here
    hints = {**typing.get_type_hints(ModelSize), **typing.get_type_hints(AccuracyCell)}
    for key, value in task.overrides.items():
        if key in hints:
            try:
                task.overrides[key] = coerce(value, hints[key])
            except (TypeError, ValueError) as err:
                raise UserError(f"{where}: {label}.overrides.{key}: {err}") from None
    try:
        canonical_task_spec(task.task)  # checked only: an option set to its default must reach TaskPlan as written
        preset = get_preset(task.task.partition(":")[0], task.preset)
        cell = preset.cell(BASELINE, seed=0).with_overrides(**task.overrides)
        if task.seq_lens is not None:  # the task's own one-line error for a length it cannot take
            from attnbench.tasks import task_spec_with
            from attnbench.tasks.lengths import check_task_lengths

            options = split_spec(task.task)[1]
            check_task_lengths(task_spec_with(task_spec_with(cell.task, **options), seq_len=None), task.seq_lens)
    except UserError as err:
        raise UserError(f"{where}: {label} ({task.task}): {err}") from None
