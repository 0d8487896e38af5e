"""``report.md`` and ``plots/`` of a run directory, regenerated from its manifest and CSV files alone.

Nothing is measured here. A partial run (an interrupted session, a CSV that was never written, cells that
did not run) gives a partial report that says what is missing; failed cells keep their status.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from attnbench.core.baseline import ACC_TOLERANCE_POINTS, BASELINE, LSTM_BASELINE, RECURRENT_BASELINE_FAMILY
from attnbench.core.errors import UserError
from attnbench.reporting import decode_plots, plots
from attnbench.reporting.along_n import accuracy_vs_n_figure, tasks_along_n
from attnbench.reporting.along_n_section import mad_section, task_recommendation_section
from attnbench.reporting.analysis import (
    accuracy_spread,
    accuracy_verdicts,
    recommendations,
    scaling_summary,
    unstable_cells,
)
from attnbench.reporting.inference_report import decode_section, layer_section
from attnbench.reporting.layer_share import layer_shares
from attnbench.reporting.markdown import markdown_table
from attnbench.reporting.parallelism import parallelism_figure, parallelism_markdown, parallelism_table
from attnbench.reporting.quality import quality_section
from attnbench.reporting.units import human_bytes, human_seconds
from attnbench.runs.loading import RunData, load_run
from attnbench.runs.schema import (
    ACCURACY_CSV,
    APPROXIMATION_CSV,
    BY_DISTANCE_CSV,
    COMPLEXITY_CSV,
    CURVES_CSV,
    DECODE_CSV,
    PLOTS,
    REPORT,
)

PATTERN_N = 512  # small enough to see single positions, large enough for several 64-wide blocks


# plots ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plot:
    name: str  # file stem under plots/
    title: str
    section: str  # the report section that embeds it


def sparse_specs(data: RunData) -> list[str]:
    frames = [f for f in (data.complexity, data.accuracy) if {"spec", "family"} <= set(f.columns)]
    if not frames:
        return []
    rows = pd.concat([f[["spec", "family"]] for f in frames])
    return sorted(rows.loc[rows["family"] == "sparse", "spec"].dropna().astype(str).unique())


def pattern_masks(specs: Iterable[str], *, n: int, head_dim: int, num_heads: int) -> dict[str, object]:
    """Each spec's ``pattern_mask(n, n)``, or a message saying why there is none (unknown spec, no pattern)."""
    from attnbench import create_attention  # torch is needed only for this one figure
    from attnbench.core.registry import available_attention

    known = set(available_attention())
    masks: dict[str, object] = {}
    for spec in specs:
        if spec.partition(":")[0] not in known:
            masks[spec] = "not drawn: not a variant registered here (a report imports no plugin code)"
            continue
        try:
            mask = create_attention(spec, head_dim=head_dim, num_heads=num_heads).pattern_mask(n, n, causal=False)
        except Exception as err:  # a plugin variant that is not loaded must not stop the report
            masks[spec] = f"could not build: {err}"
            continue
        masks[spec] = "no pattern (attends to every key)" if mask is None else mask.cpu().numpy()
    return masks


def draw_plots(data: RunData, colors: plots.Palette) -> list[tuple[Plot, Callable[[], Figure]]]:
    """The figures the run's data supports, each with a function that draws it (lazily, one at a time)."""
    todo: list[tuple[Plot, Callable[[], Figure]]] = []
    comp = data.complexity
    peak = (data.manifest.get("machine") or {}).get("matmul_peak_gflops")
    scopes = [s for s in ("attention", "layer") if not comp.empty and (comp["scope"] == s).any()]
    for scope in scopes:
        todo += [
            (Plot(f"time_vs_n_{scope}", f"Median time vs n ({scope})", "complexity"),
             lambda s=scope: plots.scaling_figure(comp, colors, metric="time_median_s", scope=s)),
            (Plot(f"memory_vs_n_{scope}", f"Peak memory vs n ({scope})", "complexity"),
             lambda s=scope: plots.scaling_figure(comp, colors, metric="peak_mem_bytes", scope=s)),
            (Plot(f"gflops_vs_n_{scope}", f"Achieved GFLOP/s vs n ({scope})", "throughput"),
             lambda s=scope: plots.gflops_figure(comp, colors, peak_gflops=peak, scope=s)),
        ]  # fmt: skip
    layer_steps = parallelism_table(comp)
    if not layer_steps.empty:
        todo.append((Plot("parallelism_vs_n", "Per-token time and sequential steps vs n (layer)", "parallelism"),
                     lambda: parallelism_figure(layer_steps, colors)))  # fmt: skip
    if not data.accuracy.empty:
        todo.append((Plot("accuracy", "Test accuracy per task", "accuracy"),
                     lambda: plots.accuracy_figure(data.accuracy, colors)))  # fmt: skip
        if (accuracy_spread(data.accuracy)["seeds_ok"] > 0).any():
            todo.append((Plot("pareto", "Accuracy vs cost (Pareto)", "accuracy"),
                         lambda: plots.pareto_figure(data.accuracy, colors)))  # fmt: skip
    if tasks_along_n(data.accuracy):
        todo.append((Plot("accuracy_vs_n", "Test accuracy vs training length n", "accuracy"),
                     lambda: accuracy_vs_n_figure(data.accuracy, colors)))  # fmt: skip
    if not data.by_distance.empty:
        todo.append((Plot("accuracy_by_distance", "Accuracy by key–query distance", "accuracy"),
                     lambda: plots.distance_figure(data.by_distance, colors)))  # fmt: skip
    approx = data.approximation
    if not approx.empty and ((approx["status"] == "ok") & (approx["rel_error"] > 0)).any():
        todo.append((Plot("approximation_error", "Approximation error vs softmax", "approximation"),
                     lambda: plots.approximation_figure(approx, colors)))  # fmt: skip
    if not data.decode.empty and (data.decode["status"] == "ok").any():
        todo.append((Plot("decode_vs_context", "Decode latency and state bytes vs context", "decode"),
                     lambda: decode_plots.decode_figure(data.decode, colors)))  # fmt: skip
    shares = layer_shares(comp)
    if not shares.empty:
        todo.append((Plot("layer_share", "Attention's share of layer time vs n", "layer"),
                     lambda: decode_plots.layer_share_figure(shares, colors)))  # fmt: skip
    sparse = sparse_specs(data)
    if sparse:
        config = data.manifest.get("complexity") or {}

        def patterns() -> Figure:
            masks = pattern_masks(sparse, n=PATTERN_N, head_dim=int(config.get("head_dim") or 64),
                                  num_heads=int(config.get("heads") or 1))  # fmt: skip
            return plots.pattern_figure(masks, n=PATTERN_N)

        todo.append((Plot("patterns", f"Sparse attention patterns at n={PATTERN_N}", "patterns"), patterns))
    return todo


# markdown ------------------------------------------------------------------------------------------------
def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(value: Any) -> str:
    return "-" if _is_missing(value) else f"{100 * float(value):.1f}%"


def _canonical(spec: str) -> str:
    from attnbench import canonical_spec

    try:
        return canonical_spec(spec)
    except UserError:  # a plugin's spec whose plugin is not loaded here: keep it as written
        return spec


def _context_title(scope: Any, pass_: Any, causal: Any, several_causal: bool) -> str:
    title = f"{scope} · {pass_}"
    return title + (" · causal" if str(causal).lower() == "true" else " · bidirectional") if several_causal else title


def recommendation_section(data: RunData, tolerance: float) -> str:
    rule = (
        f"**Rule** (tolerance: {tolerance:g} accuracy points). At each n, *fastest* is the variant with the lowest "
        f"median time and *leanest* the one with the lowest peak memory among the variants that ran `ok` at that n "
        f"and keep accuracy. A variant **keeps accuracy** when, on every task {BASELINE} learned and the variant "
        f"was trained on, its mean test accuracy over usable seeds (status ok, or timeout with its best checkpoint) "
        f"is at least {BASELINE}'s mean minus {tolerance:g} percentage points; a task on which none of its seeds "
        f"is usable (diverged, oom, error) counts as a miss. {BASELINE} *learned* a task when its mean test "
        f"accuracy beats the majority-class rate by more than {tolerance:g} points; other tasks are not counted. "
        f"A variant with no counted task is *speed only, accuracy untested* and is never recommended. "
        f"*none fits* means no variant qualifies at that n."
    )
    parts = ["## Recommendation", "", rule, ""]
    comp = data.complexity
    if comp.empty:
        parts.append("No complexity results (`complexity.csv` is missing or empty): nothing to recommend.")
        return "\n".join([*parts, "", verdict_table(data, tolerance)] if not data.accuracy.empty else parts)
    if data.accuracy.empty:
        parts += ["This run has no accuracy results, so only softmax (the reference) can be recommended; *left out* "
                  "names the fastest variant by speed alone.", ""]  # fmt: skip
    comp = comp[comp["family"] != RECURRENT_BASELINE_FAMILY]  # the LSTM layer is a reference, not a candidate
    recs = recommendations(comp, data.accuracy, tolerance_points=tolerance, baseline=BASELINE)
    if not unstable_cells(comp).empty:
        parts += [f"{len(unstable_cells(comp))} unstable timing(s) are left out of the picks (see Measurement "
                  "quality).", ""]  # fmt: skip
    several_causal = comp["causal"].nunique() > 1
    for (scope, pass_, causal), part in recs.groupby(["scope", "pass", "causal"], sort=False):
        rows = []
        for r in part.sort_values("seq_len").itertuples(index=False):
            lead = "faster" if not _is_missing(r.fastest) else "fastest that fits"
            notes = []
            if not _is_missing(r.faster_untested):
                notes.append(f"{lead} but accuracy untested: {r.faster_untested}")
            if not _is_missing(r.faster_below):
                notes.append(f"{lead} but below tolerance: {r.faster_below}")
            if _is_missing(r.fastest):
                rows.append([int(r.seq_len), "**none fits**", "-", "**none fits**", "-", "; ".join(notes)])
                continue
            rows.append([
                int(r.seq_len), f"**{r.fastest}**", human_seconds(r.fastest_time_s),
                "-" if _is_missing(r.leanest) else f"**{r.leanest}**", human_bytes(r.leanest_peak_bytes),
                "; ".join(notes),
            ])  # fmt: skip
        parts += [f"### {_context_title(scope, pass_, causal, several_causal)}", ""]
        parts += [markdown_table(["n", "fastest", "median time", "leanest", "peak memory", "left out"], rows,
                                 "rlrlrl"), ""]  # fmt: skip
    parts += [verdict_table(data, tolerance)]
    return "\n".join(parts)


def verdict_table(data: RunData, tolerance: float) -> str:
    comp_specs = sorted(data.complexity["spec"].dropna().unique()) if not data.complexity.empty else []
    verdicts = accuracy_verdicts(data.accuracy, tolerance_points=tolerance, baseline=BASELINE)
    by_spec = verdicts.set_index("spec") if not verdicts.empty else verdicts
    words = {
        "baseline": "baseline",
        "within": f"keeps accuracy (within {tolerance:g} points)",
        "below": f"**excluded**: more than {tolerance:g} points below {BASELINE}",
        "untested": "speed only, accuracy untested",
    }
    rows = []
    for spec in sorted(set(comp_specs) | set(verdicts["spec"] if not verdicts.empty else [])):
        if spec in by_spec.index:
            v = by_spec.loc[spec]
            rows.append([spec, words[v["verdict"]], v["detail"] or "-"])
        else:
            rows.append([spec, words["untested"], "no accuracy results"])
    header = f"Accuracy verdicts (test accuracy minus {BASELINE}'s, in points, per task compared):"
    return header + "\n\n" + markdown_table(["variant", "verdict", "per task"], rows)


def environment_section(manifest: dict[str, Any]) -> str:
    env = manifest.get("environment") or {}
    machine = manifest.get("machine") or {}
    git = env.get("git") or {}
    commit = git.get("commit")
    commit_text = (
        "unknown (not a git checkout)"
        if not commit
        else f"`{commit[:12]}`" + (" (uncommitted changes)" if git.get("dirty") else "")
    )
    peak = machine.get("matmul_peak_gflops")
    bandwidth = machine.get("memory_bandwidth_gbs")
    rows = [
        ["machine", f"{env.get('cpu_model', '?')} ({env.get('cpu_count', '?')} CPUs)"],
        ["device", f"{env.get('device', '?')} — {env.get('device_name', '?')}" + (
            f", CUDA {env['cuda']}" if env.get("cuda") else "")],
        ["threads", env.get("threads", "?")],
        ["matmul peak", f"{peak:.1f} GFLOP/s ({machine.get('matmul', 'measured')})" if peak else "not measured"],
        ["memory bandwidth", f"{bandwidth:.1f} GB/s ({machine.get('bandwidth', 'measured')})" if bandwidth
         else "not measured"],
        ["torch", env.get("torch", "?")],
        ["python", env.get("python", "?")],
        ["attnbench", f"{env.get('attnbench_version', '?')}, commit {commit_text}"],
        ["platform", env.get("platform", "?")],
        ["memory available", human_bytes(env.get("memory_available_bytes"))],
    ]  # fmt: skip
    plugins = manifest.get("plugins") or {}
    loaded = [
        *(plugins.get("files_and_modules") or []),
        *(f"{k} {v}" for k, v in (plugins.get("entry_points") or {}).items()),
    ]
    rows.append(["plugins", ", ".join(loaded) or "none"])
    config = manifest.get("complexity") or {}
    if config:
        shape = ", ".join(f"{k}={config[k]}" for k in ("batch", "heads", "head_dim", "causal", "dtype") if k in config)
        rows.append(["complexity sweep", shape])
        budget = [f"memory {human_bytes(config['memory_budget_bytes'])}" if config.get("memory_budget_bytes") else "",
                  f"time {config['time_budget_s']:g} s per cell" if config.get("time_budget_s") else ""]  # fmt: skip
        rows.append(["budgets", ", ".join(b for b in budget if b) or "none"])
    return "## Environment\n\n" + markdown_table(["", ""], rows)


def expected_cells(data: RunData) -> pd.DataFrame:
    """Every (spec, scope, pass, seq_len) the manifest configured or the CSV holds, with its status or ``missing``."""
    comp, config = data.complexity, data.manifest.get("complexity") or {}
    trust = ["stable"] if "stable" in comp.columns else []
    present = comp[["spec", "scope", "pass", "causal", "seq_len", "status", "time_median_s", "peak_mem_bytes", *trust]]
    present = present.drop_duplicates(["spec", "scope", "pass", "causal", "seq_len"], keep="last")
    specs = set(present["spec"]) | {_canonical(str(v)) for v in config.get("variants") or []}
    specs |= {LSTM_BASELINE} if config.get("layer") else set()
    lengths = set(present["seq_len"]) | set(config.get("seq_lens") or [])
    passes = set(present["pass"]) | set(config.get("passes") or [])
    scopes = set(present["scope"]) or {"attention"}
    if config.get("layer") and "layer" not in scopes:
        scopes.add("layer")
    causal_values = set(present["causal"]) or {bool(config.get("causal", False))}
    grid = pd.MultiIndex.from_product(
        [sorted(specs), sorted(scopes), sorted(passes), sorted(causal_values), sorted(int(n) for n in lengths)],
        names=["spec", "scope", "pass", "causal", "seq_len"],
    ).to_frame(index=False)
    grid = grid[(grid["spec"] != LSTM_BASELINE) | (grid["scope"] == "layer")]  # the LSTM is timed as a layer only
    cells = grid.merge(present, on=["spec", "scope", "pass", "causal", "seq_len"], how="left")
    cells["status"] = cells["status"].fillna("missing")
    return cells


def complexity_section(data: RunData, plot_links: dict[str, list[Plot]]) -> str:
    parts = ["## Time and memory"]
    comp = data.complexity
    if comp.empty:
        return "\n\n".join([*parts, "No complexity results: `complexity.csv` is missing or empty."])
    cells = expected_cells(data)
    several_causal = cells["causal"].nunique() > 1
    lengths = sorted(cells["seq_len"].unique())
    missing = int((cells["status"] == "missing").sum())
    parts.append(
        "Median time / peak memory per cell; a cell that did not run `ok` shows its status, one with no row "
        "shows *missing*" + (f" ({missing} cell(s) missing: the run is partial)." if missing else ".")
    )
    for (scope, pass_, causal), part in cells.groupby(["scope", "pass", "causal"], sort=True):
        rows = []
        for spec, by_spec in part.groupby("spec", sort=True):
            by_n = by_spec.set_index("seq_len")
            row = [spec]
            for n in lengths:
                cell = by_n.loc[n]
                if cell["status"] == "ok":
                    mark = " (unstable)" if str(cell.get("stable", "")).lower() in ("false", "0") else ""
                    row.append(f"{human_seconds(cell['time_median_s'])}{mark} / {human_bytes(cell['peak_mem_bytes'])}")
                else:
                    row.append(f"*{cell['status']}*")
            rows.append(row)
        table = markdown_table(["variant", *(f"n={n}" for n in lengths)], rows, "l" + "r" * len(lengths))
        parts.append(f"### {_context_title(scope, pass_, causal, several_causal)}\n\n{table}")
    summary = scaling_summary(comp, baseline=BASELINE).rename(columns={"pass": "pass_"})
    rows = []
    for r in summary.itertuples(index=False):
        if r.spec == BASELINE:
            crossover = "baseline"
        elif _is_missing(r.crossover_n):
            crossover = "not in range"
        else:
            crossover = f"{int(r.crossover_n)}" + (" (all n)" if r.always_ahead else "")
        longest = "none ok" if _is_missing(r.longest_ok_n) else str(int(r.longest_ok_n))
        if r.stopped_by:
            longest += f" (then {r.stopped_by})"
        if r.spec != BASELINE and not _is_missing(r.crossover_low) and not _is_missing(r.crossover_high):
            crossover += f" [{r.crossover_low:.0f}, {r.crossover_high:.0f}]"
        time_exponent = (
            "-"
            if _is_missing(r.time_exponent)
            else (f"{r.time_exponent:.2f} [{r.time_exponent_low:.2f}, {r.time_exponent_high:.2f}] ({r.time_r2:.3f})")
        )
        if r.uses_unstable is True:
            time_exponent += " ⚠ includes unstable cells"
        rows.append([
            r.spec, r.scope, r.pass_, time_exponent,
            "-" if _is_missing(r.memory_exponent) else f"{r.memory_exponent:.2f} ({r.memory_r2:.3f})",
            crossover, longest,
        ])  # fmt: skip
    parts.append(
        "### Scaling summary\n\n"
        "Exponents are robust (Theil–Sen) log–log slopes over the largest (up to 4) lengths that ran ok and "
        "stable, with a 95% bootstrap interval over those lengths and the line's r²; "
        f"*faster than {BASELINE} from n* is the smallest n from which the variant's median time beats "
        f"{BASELINE}'s at every larger measured n (a length where {BASELINE} failed counts as a win), with the "
        "log-interpolated crossing when each cell's time is taken as median ± IQR in brackets; unstable cells are "
        "left out of both (see Measurement quality).\n\n"
        + markdown_table(["variant", "scope", "pass", "time exponent (r²)", "memory exponent (r²)",
                          f"faster than {BASELINE} from n", "longest n that fits"], rows, "lllrrrr")
    )  # fmt: skip
    parts += [_embed(p) for p in plot_links.get("complexity", [])]
    return "\n\n".join(parts)


def parallelism_section(data: RunData, plot_links: dict[str, list[Plot]]) -> str:
    text = parallelism_markdown(parallelism_table(data.complexity), markdown_table)
    return "\n\n".join([text, *(_embed(p) for p in plot_links.get("parallelism", []))]) if text else ""


def throughput_section(data: RunData, plot_links: dict[str, list[Plot]]) -> str:
    links = plot_links.get("throughput", [])
    if not links:
        return ""
    peak = (data.manifest.get("machine") or {}).get("matmul_peak_gflops")
    text = (
        "Achieved GFLOP/s is each variant's analytic FLOPs (matrix multiplies only) over its median time; the "
        + (f"dotted line is this machine's measured matmul peak, {peak:.1f} GFLOP/s." if peak else
           "machine's matmul peak was not recorded.")
    )  # fmt: skip
    return "\n\n".join(["## Throughput", text, *(_embed(p) for p in links)])


def accuracy_section(data: RunData, plot_links: dict[str, list[Plot]]) -> str:
    parts = ["## Accuracy"]
    if data.accuracy.empty:
        return "\n\n".join([*parts, "No accuracy results: `accuracy.csv` is missing or empty."])
    summary = accuracy_spread(data.accuracy)
    seeds_of_task = summary.groupby(["task", "seq_len"])["seeds_run"].transform("max")
    rows = []
    for r, most in zip(summary.itertuples(index=False), seeds_of_task, strict=True):
        if r.seeds_ok == 0:
            acc = "-"
        elif r.seeds_ok >= 2:
            acc = f"{100 * r.test_mean:.1f} ± {100 * r.test_ci95:.1f}%"
        else:
            acc = f"{100 * r.test_mean:.1f}% (1 seed)"
        spread = "-" if r.seeds_ok < 2 else f"{_pct(r.test_min)}–{_pct(r.test_max)}"
        seeds = f"{r.seeds_ok}/{r.seeds_run}" + (f" (of {most})" if r.seeds_run < most else "")
        rows.append([
            r.task, int(r.seq_len) if not _is_missing(r.seq_len) else "-", r.spec, acc, spread, seeds,
            _pct(r.val_mean), _pct(r.majority_acc), human_seconds(r.time_per_step_s), human_bytes(r.peak_mem_bytes),
            r.failures or "",
        ])  # fmt: skip
    parts.append(
        "Test accuracy is the mean over usable seeds (status ok, or timeout with its best checkpoint) ± the "
        "half-width of its 95% Student-t interval when there are two or more seeds; *majority* is the accuracy "
        "of always predicting the most frequent class, the floor any model must beat.\n\n"
        + markdown_table(["task", "n", "variant", "test acc (mean ± 95% CI)", "min–max", "seeds ok/run", "val acc",
                          "majority", "time/step", "peak memory", "not usable"], rows, "lrlrrrrrrrl")
    )  # fmt: skip
    parts += [_embed(p) for p in plot_links.get("accuracy", [])]
    return "\n\n".join(parts)


def approximation_section(data: RunData, plot_links: dict[str, list[Plot]]) -> str:
    parts = ["## Approximation error"]
    approx = data.approximation
    if approx.empty:
        return "\n\n".join([*parts, "No approximation results: `approximation.csv` is missing or empty."])
    latest = approx.drop_duplicates(["spec", "causal", "seq_len"], keep="last")
    lengths = sorted(int(n) for n in latest["seq_len"].unique())
    several_causal = latest["causal"].nunique() > 1
    rows = []
    for (spec, causal), part in latest.groupby(["spec", "causal"], sort=True):
        by_n = part.set_index("seq_len")
        row = [spec + (" (causal)" if several_causal and str(causal).lower() == "true" else "")]
        for n in lengths:
            if n not in by_n.index:
                row.append("*missing*")
            elif by_n.loc[n, "status"] != "ok":
                row.append(f"*{by_n.loc[n, 'status']}*")
            else:
                row.append(f"{float(by_n.loc[n, 'rel_error']):.2e}")
        rows.append(row)
    parts.append(
        "Relative L2 error ‖out − softmax‖ / ‖softmax‖ of each non-exact variant's output, with q, k and v drawn "
        "from N(0, 1) at the sweep's head_dim. That is a hard regime for random-feature kernels: FAVOR+'s "
        "estimator variance grows like exp(‖q‖² + ‖k‖²), so its error there can exceed 1 even though it "
        "shrinks as 1/√features for smaller-norm inputs (see tests/test_linear.py).\n\n"
        + markdown_table(["variant", *(f"n={n}" for n in lengths)], rows, "l" + "r" * len(lengths))
    )
    parts += [_embed(p) for p in plot_links.get("approximation", [])]
    return "\n\n".join(parts)


def patterns_section(plot_links: dict[str, list[Plot]]) -> str:
    links = plot_links.get("patterns", [])
    if not links:
        return ""
    text = "Which query–key pairs each sparse variant computes (its `pattern_mask`), drawn at a small n."
    return "\n\n".join(["## Attention patterns", text, *(_embed(p) for p in links)])


def files_section(data: RunData, failed_plots: list[tuple[str, str]]) -> str:
    rows = []
    frames = {COMPLEXITY_CSV: data.complexity, ACCURACY_CSV: data.accuracy, CURVES_CSV: data.curves,
              BY_DISTANCE_CSV: data.by_distance, APPROXIMATION_CSV: data.approximation,
              DECODE_CSV: data.decode}  # fmt: skip
    for name, frame in frames.items():
        rows.append([f"`{name}`", "missing" if name in data.missing_files else f"{len(frame)} rows"])
    text = "## Result files\n\n" + markdown_table(["file", "content"], rows, "lr")
    if failed_plots:
        text += "\n\nPlots that could not be drawn: " + "; ".join(f"`{n}` ({e})" for n, e in failed_plots)
    return text


def expected_accuracy_cells(manifest: dict[str, Any]) -> int | None:
    """How many task × variant × seed cells the manifest's accuracy configuration asks for (None: not recorded)."""
    tasks = (manifest.get("accuracy") or {}).get("tasks")
    if not tasks:
        return None
    return sum(
        (len(t.get("variants") or []) + len(t.get("baselines") or []))
        * len(t.get("seeds") or [])
        * len(t.get("seq_lens") or [None])
        for t in tasks
    )


def partial_notes(data: RunData) -> list[str]:
    """Why the run is incomplete, from its data: cells without a row, sessions that were interrupted or failed.

    A session still marked ``running`` is not evidence: the report is written inside the run's own session.
    """
    notes = []
    if not data.complexity.empty or (data.manifest.get("complexity") or {}).get("variants"):
        missing = int((expected_cells(data)["status"] == "missing").sum()) if not data.complexity.empty else None
        if missing is None:
            notes.append("no complexity cell has a result")
        elif missing:
            notes.append(f"{missing} complexity cell(s) have no result")
    expected = expected_accuracy_cells(data.manifest)
    have = len(data.accuracy.drop_duplicates(["task", "seq_len", "spec", "seed"])) if not data.accuracy.empty else 0
    if expected is not None and have < expected:
        notes.append(f"{expected - have} of {expected} accuracy cell(s) have no result")
    stopped = [s for s in data.manifest.get("sessions") or [] if s.get("status") in ("interrupted", "failed")]
    if stopped:
        notes.append("session(s) " + ", ".join(f"{s.get('start', '?')} {s['status']}" for s in stopped))
    return notes


def header_section(data: RunData) -> str:
    m = data.manifest
    sessions = m.get("sessions") or []
    title = f"# attnbench report: {data.path.name}"
    what = f"`{m.get('command', '?')}`" + (f" with suite `{m['suite']}`" if m.get("suite") else "")
    lines = [title, "", f"Run {what}, created {m.get('created', '?')}, {len(sessions)} session(s)."]
    notes = partial_notes(data)
    if notes:
        command = m.get("command")
        resume = "attnbench run" if command in ("run", None) else f"attnbench bench {command}"
        lines.append(f"\n> **Partial run**: {'; '.join(notes)}. Finish it with `{resume} --resume {data.path}`; "
                     "the tables below show what is there.")  # fmt: skip
    lines.append(f"\nRegenerate this report from the result files with `attnbench report {data.path}`.")
    return "\n".join(lines)


def _embed(plot: Plot) -> str:
    return f"![{plot.title}]({PLOTS}/{plot.name}.png)\n\n[SVG]({PLOTS}/{plot.name}.svg)"


def write_report(run_dir: Path, *, acc_tolerance: float | None = None) -> Path:
    """Regenerate ``plots/*.png|svg`` and ``report.md`` in ``run_dir`` from its manifest and CSVs; returns
    the report's path. ``acc_tolerance`` is in accuracy points (2.0 = two percentage points); None takes the
    run's own (``run.acc_tolerance`` in the manifest, recorded from the suite), else 5."""
    data = load_run(Path(run_dir))
    if acc_tolerance is None:
        recorded = (data.manifest.get("run") or {}).get("acc_tolerance")
        acc_tolerance = float(recorded) if recorded is not None else ACC_TOLERANCE_POINTS
    colors = plots.palette(data.specs)
    plot_links: dict[str, list[Plot]] = {}
    failed: list[tuple[str, str]] = []
    for plot, draw in draw_plots(data, colors):
        try:
            fig = draw()
            plots.save_figure(fig, data.path / PLOTS, plot.name)
        except Exception as err:  # one broken figure must not cost the user the tables
            failed.append((plot.name, f"{type(err).__name__}: {err}"))
            continue
        plot_links.setdefault(plot.section, []).append(plot)
    sections = [
        header_section(data),
        recommendation_section(data, acc_tolerance),
        task_recommendation_section(data.complexity, data.accuracy, acc_tolerance, table=markdown_table),
        mad_section(data.accuracy, table=markdown_table),
        environment_section(data.manifest),
        complexity_section(data, plot_links),
        parallelism_section(data, plot_links),
        quality_section(data),
        throughput_section(data, plot_links),
        accuracy_section(data, plot_links),
        approximation_section(data, plot_links),
        layer_section(data.complexity, [_embed(p) for p in plot_links.get("layer", [])]),
        decode_section(data.decode, [_embed(p) for p in plot_links.get("decode", [])]),
        patterns_section(plot_links),
        files_section(data, failed),
    ]
    path = data.path / REPORT
    path.write_text("\n\n".join(s for s in sections if s) + "\n")
    return path
