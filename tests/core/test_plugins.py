"""Plugins for real: entry points in installed distributions, broken plugins, --plugin files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench import available_attention
from attnbench.cli import app
from attnbench.core.registry import ATTENTION, PluginError, load_plugin

ROOT = Path(__file__).resolve().parents[2]

PLUGIN_SOURCE = textwrap.dedent(
    """
    import torch
    from attnbench import Attention

    class ScaledDot(Attention):
        family = "plugin-test"
        exact = True

        def __init__(self, *, head_dim: int, num_heads: int) -> None:
            super().__init__(head_dim=head_dim, num_heads=num_heads)

        def forward(self, q, k, v, *, causal=False, key_mask=None):
            self.validate(q, k, v, causal=causal, key_mask=key_mask)
            mask = None
            if key_mask is not None:
                mask = key_mask[:, None, None, :]
            if causal:
                tril = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
                mask = tril if mask is None else mask & tril
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return torch.nan_to_num(out) if mask is not None else out

        def flops(self, *, batch, seq_q, seq_k, causal):
            return 4 * batch * self.num_heads * seq_q * seq_k * self.head_dim
    """
)


def _make_distribution(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Lay out an installed distribution by hand: a .dist-info with entry_points.txt beside its modules."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[attnbench.attention]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    _make_distribution(
        site,
        "good_plugin",
        {"scaled-dot-test": "good_plugin_mod:ScaledDot"},
        {"good_plugin_mod": PLUGIN_SOURCE},
    )
    _make_distribution(
        site,
        "broken_plugin",
        {"broken-test": "broken_plugin_mod:Nope", "not-attention-test": "broken_plugin_mod:NOT_A_CLASS"},
        {"broken_plugin_mod": "NOT_A_CLASS = 3\nraise_later = True\n"},
    )
    return site


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ATTNBENCH_DISABLE_PLUGINS"}
    env.update(extra)
    return env


def _attnbench(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_entry_points_are_discovered_and_broken_ones_reported(
    plugin_site: Path, scratch_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.delenv("ATTNBENCH_DISABLE_PLUGINS", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ATTENTION.reload_entry_points()
    names = available_attention()
    assert "scaled-dot-test" in names
    assert "softmax" in names  # the broken plugins did not break the rest
    assert "broken-test" not in names and "not-attention-test" not in names
    failed = {f.name: f.error for f in ATTENTION.failures}
    assert "AttributeError" in failed["broken-test"]
    assert "not a subclass of Attention" in failed["not-attention-test"]
    messages = [str(w.message) for w in caught]
    assert any("'broken-test'" in m and "broken_plugin_mod:Nope" in m for m in messages)
    assert ATTENTION.plugin_versions["scaled-dot-test"] == "good_plugin 0.1"


def test_cli_list_and_check_see_an_entry_point_plugin(plugin_site: Path) -> None:
    env = _env(PYTHONPATH=str(plugin_site))
    listed = _attnbench("list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert '"name": "scaled-dot-test"' in listed.stdout
    assert "plugin 'broken-test'" in listed.stderr  # reported, not fatal
    checked = _attnbench("check", "scaled-dot-test", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "all checks passed" in checked.stdout


def test_disabling_plugins_hides_them(plugin_site: Path) -> None:
    listed = _attnbench("list", "--json", env=_env(PYTHONPATH=str(plugin_site), ATTNBENCH_DISABLE_PLUGINS="1"))
    assert listed.returncode == 0
    assert "scaled-dot-test" not in listed.stdout
    assert "broken-test" not in listed.stderr


def test_a_pip_installed_plugin_package_needs_no_change_to_attnbench(tmp_path: Path) -> None:
    target = tmp_path / "installed"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT / "examples" / "attnbench-relu-plugin")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    env = _env(PYTHONPATH=str(target))
    listed = _attnbench("list", "--family", "example", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "relu-squared" in listed.stdout
    checked = _attnbench("check", "relu-squared:eps=0.001", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_plugin_file_registers_for_that_invocation(tmp_path: Path, scratch_registry: None) -> None:
    plugin = tmp_path / "my_variant.py"
    plugin.write_text(
        PLUGIN_SOURCE + "\nfrom attnbench import register_attention\nregister_attention('file-test')(ScaledDot)\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["--plugin", str(plugin), "check", "file-test"])
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output
    assert "file-test" in available_attention()
    assert load_plugin(str(plugin)) == load_plugin(str(plugin))  # loading twice imports once


def test_bad_plugin_targets_are_one_line_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def broken(:\n")
    with pytest.raises(PluginError, match=r"broken.py.*failed to import: SyntaxError"):
        load_plugin(str(broken))
    with pytest.raises(PluginError, match="does not exist"):
        load_plugin(str(tmp_path / "missing.py"))
    with pytest.raises(PluginError, match="cannot be found"):
        load_plugin("no_such_module_anywhere")
    result = CliRunner().invoke(app, ["--plugin", str(tmp_path / "missing.py"), "list"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: plugin file")
    assert len(result.output.strip().splitlines()) == 1
