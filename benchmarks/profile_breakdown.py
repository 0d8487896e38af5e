"""Where a variant's time goes: one call under torch.profiler, aten ops grouped into kinds of work.

    .venv/bin/python benchmarks/profile_breakdown.py --seq-len 16384 --threads 2 \\
        window:radius=256 longformer:radius=256 bigbird performer:features=256 linear

Setting: fp32, batch 1, 4 heads, head_dim 64, CPU, non-causal unless ``--causal``, forward under
``inference_mode`` unless ``--backward``. Two warm-up calls, then one profiled call; self CPU time per aten op,
grouped as fused attention (SDPA's flash kernel, which holds both its matmuls and its softmax), matmuls,
elementwise maths (feature maps, exponentials, the merge of partial results), copies and gathers (cat, copy,
index, padding fills: bytes moved, no arithmetic) and the rest. ``--plugin FILE`` loads plugin variants
(e.g. ``benchmarks/peers.py``).
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from attnbench import create_attention
from attnbench.core.registry import load_plugin

KINDS = {
    "fused attention": ("scaled_dot_product", "flash_attention"),
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul", "aten::linear", "einsum"),
    "copies/gathers": (
        "aten::cat", "aten::copy_", "aten::index", "aten::index_select", "aten::gather", "aten::fill_",
        "aten::zero_", "aten::clone", "aten::contiguous", "aten::pad", "aten::constant_pad_nd", "aten::stack",
        "aten::index_copy", "aten::scatter", "aten::empty",
    ),
    "elementwise": (
        "aten::exp", "aten::elu", "aten::relu", "aten::clamp", "aten::mul", "aten::div", "aten::add", "aten::sub",
        "aten::softmax", "aten::_softmax", "aten::amax", "aten::max", "aten::logsumexp", "aten::pow", "aten::where",
        "aten::masked_fill", "aten::sum", "aten::cumsum", "aten::sqrt", "aten::gt", "aten::lt", "aten::log",
        "aten::square", "aten::neg", "aten::logaddexp",
    ),
}  # fmt: skip


def kind_of(op: str) -> str:
    for kind, prefixes in KINDS.items():
        if any(op.startswith(p) or p in op for p in prefixes):
            return kind
    return "other"


def breakdown(spec: str, *, seq_len: int, causal: bool, backward: bool) -> tuple[float, dict[str, float]]:
    attn = create_attention(spec, head_dim=64, num_heads=4)
    q, k, v = (torch.randn(1, 4, seq_len, 64, requires_grad=backward) for _ in range(3))

    def call() -> None:
        if backward:
            attn(q, k, v, causal=causal).sum().backward()
        else:
            with torch.inference_mode():
                attn(q, k, v, causal=causal)

    call()
    call()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    shares: dict[str, float] = {}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue  # wrappers (autograd functions, profiler ranges) hold no time of their own worth counting
        kind = kind_of(event.key)
        shares[kind] = shares.get(kind, 0.0) + event.self_cpu_time_total / 1e3  # ms
    return sum(shares.values()), shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--seq-len", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--plugin", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for plugin in args.plugin:
        load_plugin(plugin)
    kinds = [*KINDS, "other"]
    setting = f"n = {args.seq_len}, {args.threads} threads, {'fwd+bwd' if args.backward else 'fwd'}"
    print(f"{setting}, {'causal' if args.causal else 'non-causal'}: self CPU ms per kind of work (share of the call)")
    print("| variant | profiled ms | " + " | ".join(kinds) + " |")
    print("|---|---:|" + "---:|" * len(kinds))
    for spec in args.specs:
        total, shares = breakdown(spec, seq_len=args.seq_len, causal=args.causal, backward=args.backward)
        cells = [f"{shares.get(k, 0.0):.1f} ({100 * shares.get(k, 0.0) / total:.0f}%)" for k in kinds]
        print(f"| `{spec}` | {total:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
