from pathlib import Path

import pytest

from attnbench.core.errors import UserError
from attnbench.sweeps.suite import accuracy_config, complexity_config
from attnbench.sweeps.suite_file import load_suite, shipped_suites

GOOD = """
name = "tiny"
[complexity]
variants = ["softmax", "softmax-naive"]
seq_lens = [32, 64]
[[accuracy.tasks]]
task = "mqar"
variants = ["softmax"]
overrides = { steps = 2 }
"""


@pytest.mark.parametrize("name", shipped_suites())
def test_shipped_suites_validate(name: str) -> None:
    suite = load_suite(name)  # complexity values included: a bad one in a shipped suite fails here
    assert suite.name == name
    assert suite.accuracy is not None  # the mad suite trains only; the others also time
    if name != "mad":
        assert suite.complexity is not None
        config = complexity_config(suite, device="cpu", threads=1, plugins=[])
        assert config is not None and config.variants == suite.complexity.variants
    assert accuracy_config(suite, device="cpu", threads=None, plugins=[]) is not None


def test_quick_covers_every_family_and_the_required_tasks() -> None:
    from attnbench import available_attention
    from attnbench.core.registry import attention_class, parse_attention_spec

    suite = load_suite("quick")
    assert suite.complexity is not None and suite.accuracy is not None
    families = {attention_class(parse_attention_spec(v).name).family for v in suite.complexity.variants}
    # every family that can run in the suite's mode (a causal-only family cannot time non-causal cells)
    runnable = [
        n
        for n in available_attention()
        if not n.startswith("flex-")
        and attention_class(n).unsupported_reason(device="cpu", backward=False, causal=suite.complexity.causal) is None
    ]
    assert families >= {attention_class(n).family for n in runnable}
    assert max(suite.complexity.seq_lens) == 4096
    tasks: dict[str, list[str]] = {}
    for t in suite.accuracy.tasks:  # a task may have several entries (one along n, one at a single length)
        tasks.setdefault(t.task.partition(":")[0], []).extend(t.variants)
    assert {"softmax", "linear"} <= set(tasks["mqar"])
    assert any(v.startswith("performer") for v in tasks["mqar"])
    assert any(v.startswith("window") for v in tasks["mqar"])
    assert len(tasks["listops"]) >= 2
    # MQAR along n: three or more lengths spanning at least 4x, pairs fixed, a window among the variants
    (along_n,) = [t for t in suite.accuracy.tasks if t.seq_lens is not None and len(t.seq_lens) >= 3]
    assert along_n.task.startswith("mqar") and along_n.seq_lens[-1] >= 4 * along_n.seq_lens[0]
    assert any(v.startswith("window") for v in along_n.variants) and "softmax" in along_n.variants
    config = accuracy_config(suite, device="cpu", threads=None, plugins=[])
    assert config is not None
    pairs = {c.task_spec.split("pairs=")[1].split(",")[0] for c in config.cells() if c.task.startswith("mqar")}
    assert pairs == {"4"}
    # every trained spec is timed too, so the recommendation can judge it
    trained = {v for t in suite.accuracy.tasks for v in t.variants}
    assert trained <= set(suite.complexity.variants)


def test_a_user_suite_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(GOOD)
    suite = load_suite(str(path))
    assert suite.complexity is not None and suite.complexity.seq_lens == [32, 64]
    assert suite.accuracy is not None and suite.accuracy.tasks[0].overrides == {"steps": 2}


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ('variants = ["softmax", "softmax-naive"]', 'variant = ["softmax"]',
         "[complexity] has unknown key(s) variant; known: batch, causal"),
        ("seq_lens = [32, 64]", 'seq_lens = "64..32"', "[complexity].seq_lens: --seq-len 64..32: the range ends below"),
        ('variants = ["softmax", "softmax-naive"]', 'variants = ["windw"]',
         "[complexity].variants: unknown attention 'windw'. Did you mean 'window'"),
        ("seq_lens = [32, 64]", 'seq_lens = [32, 64]\nheads = "four"', "[complexity].heads: expected int, got four"),
        ('task = "mqar"', 'task = "mqar:pears=3"', "#1 (mqar:pears=3): task 'mqar' has no option 'pears'"),
        ('task = "mqar"', 'task = "nope"', "unknown task 'nope'"),
        ("overrides = { steps = 2 }", 'preset = "huge"', "unknown accuracy preset 'huge'"),
        ("overrides = { steps = 2 }", "overrides = { stepz = 2 }", "unknown accuracy cell setting(s) stepz"),
        ('variants = ["softmax"]\n', "", "[[accuracy.tasks]] #1 needs key 'variants'"),
        ('name = "tiny"', 'name = "a b"', "name 'a b' must be letters"),
        ("seq_lens = [32, 64]", "seq_lens = [32, 64]\nbatch = 0", "[complexity].batch: must be >= 1, got 0"),
        ("seq_lens = [32, 64]", 'seq_lens = [32, 64]\ndtype = "float8"',
         "[complexity].dtype: 'float8' is not one of float32, bfloat16, float16"),
        ("seq_lens = [32, 64]", "seq_lens = [32, 64]\ntime_budget_s = -5",
         "[complexity].time_budget_s: must be positive seconds, got -5.0"),
        ("seq_lens = [32, 64]", "seq_lens = [32, 64]\nmin_run_time = 2.0\nmax_run_time = 1.0",
         "[complexity].max_run_time: 1.0 is below min_run_time (2.0)"),
        ("seq_lens = [32, 64]", 'seq_lens = [32, 64]\nmemory_budget = "lots"',
         "[complexity].memory_budget: 'lots': expected a size like 8GiB"),
        ("seq_lens = [32, 64]", 'seq_lens = [32, 64]\nmemory_budget = "150%"',
         "[complexity].memory_budget: '150%': a percentage must be in (0, 100]"),
        ("seq_lens = [32, 64]", "seq_lens = [32, 64]\npasses = []", "[complexity].passes: is empty"),
        ("overrides = { steps = 2 }", "overrides = { steps = 2 }\nseeds = []", "#1.seeds: is empty"),
        ("overrides = { steps = 2 }", "overrides = { steps = 2 }\nseeds = 0", "#1.seeds: must be >= 1"),
        ("overrides = { steps = 2 }", 'overrides = { steps = "many" }',
         "[[accuracy.tasks]] #1.overrides.steps: expected int, got many"),
        ("overrides = { steps = 2 }", "overrides = { steps = 0 }", "steps must be >= 1, got 0"),
        ('name = "tiny"', 'name = "tiny"\n[report]\nacc_tolerance = -3',
         "[report].acc_tolerance: must be >= 0 accuracy points, got -3.0"),
    ],
)  # fmt: skip
def test_validation_errors_name_the_file_and_key(tmp_path: Path, replace: str, by: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    assert replace in GOOD
    path.write_text(GOOD.replace(replace, by, 1))
    with pytest.raises(UserError) as err:
        load_suite(str(path))
    assert f"suite {path}" in str(err.value)
    assert message in str(err.value)


def test_missing_file_unknown_name_bad_toml_and_empty_suite(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"suite file .*missing\.toml' does not exist \(shipped suites: mad, quick"):
        load_suite(str(tmp_path / "missing.toml"))
    with pytest.raises(UserError, match=r"suite path .* is a directory: pass a suite \.toml file"):
        load_suite(str(tmp_path))
    with pytest.raises(UserError, match="unknown suite 'quik': shipped suites are mad, quick, standard"):
        load_suite("quik")
    bad = tmp_path / "bad.toml"
    bad.write_text("[complexity\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_suite(str(bad))
    bad.write_text('name = "x"\n')
    with pytest.raises(UserError, match="nothing to run"):
        load_suite(str(bad))


def test_causal_needs_variants_that_can_run_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attnbench.core.registry import attention_class

    monkeypatch.setattr(attention_class("window"), "supports_causal", False)
    path = tmp_path / "causal.toml"
    path.write_text('[complexity]\nvariants = ["softmax", "window"]\ncausal = true\n')
    with pytest.raises(UserError, match=r"\[complexity\]\.causal: window cannot run causal attention"):
        load_suite(str(path))


def test_override_values_are_coerced_to_the_setting_type(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(GOOD.replace("overrides = { steps = 2 }", "overrides = { steps = 2, lr = 1 }"))
    suite = load_suite(str(path))
    assert suite.accuracy is not None
    lr = suite.accuracy.tasks[0].overrides["lr"]
    assert lr == 1.0 and isinstance(lr, float)


def _suite_with(tmp_path: Path, entry: str) -> Path:
    path = tmp_path / "lengths.toml"
    path.write_text(f'name = "lengths"\n[[accuracy.tasks]]\ntask = "mqar:pairs=4"\nvariants = ["softmax"]\n{entry}\n')
    return path


@pytest.mark.parametrize(("entry", "lengths"), [('seq_lens = "32..128"', [32, 64, 128]),
                                                 ("seq_lens = [128, 32, 48]", [32, 48, 128])])  # fmt: skip
def test_a_task_entry_takes_seq_lens_as_a_range_or_a_list(tmp_path: Path, entry: str, lengths: list[int]) -> None:
    suite = load_suite(str(_suite_with(tmp_path, entry)))
    assert suite.accuracy is not None and suite.accuracy.tasks[0].seq_lens == lengths
    config = accuracy_config(suite, device="cpu", threads=None, plugins=[])
    assert config is not None and [c.seq_len for c in config.cells()] == lengths


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('seq_lens = "8..32"', r"\(mqar:pairs=4\): task 'mqar:pairs=4,vocab=32' cannot run at n = 8: .*at least 16"),
        ('seq_lens = "64..32"', "seq_lens: seq_lens 64..32: the range ends below its start"),
        ("seq_lens = [32]\noverrides = { seq_len = 64 }", "give its lengths once"),
    ],
)
def test_bad_seq_lens_are_refused_naming_the_entry(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_suite(str(_suite_with(tmp_path, entry)))


def test_the_mad_suite_runs_every_mad_setting_and_the_grid_multiplies_it() -> None:
    from dataclasses import replace

    from attnbench.tasks.mad import MAD_LR_GRID, MAD_WEIGHT_DECAY_GRID, mad_settings

    suite = load_suite("mad")
    config = accuracy_config(suite, device="cpu", threads=None, plugins=[])
    assert config is not None
    trained = {(c.task_spec, c.variant) for c in config.cells()}
    wanted = {(f"{s.spec},seq_len={s.seq_len}" if ":" in s.spec else f"{s.spec}:seq_len={s.seq_len}") for s in
              mad_settings(quick=True)}  # fmt: skip
    from attnbench.tasks import canonical_task_spec

    assert {spec for spec, _ in trained} == {canonical_task_spec(w) for w in wanted}
    assert {v for _, v in trained} >= {"softmax", "linear"} and any(v.startswith("window") for _, v in trained)
    assert suite.accuracy is not None
    grid = accuracy_config(replace(suite, accuracy=replace(suite.accuracy, mad_grid=True)), device="cpu",
                           threads=None, plugins=[])  # fmt: skip
    assert grid is not None and len(grid.cells()) == len(MAD_LR_GRID) * len(MAD_WEIGHT_DECAY_GRID) * len(trained)
    assert {(c.lr, c.weight_decay) for c in grid.cells()} == {(lr, wd) for lr in MAD_LR_GRID
                                                              for wd in MAD_WEIGHT_DECAY_GRID}  # fmt: skip
