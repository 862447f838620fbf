"""DPT-Base speed: this project's model vs transformers' DPTForDepthEstimation of the same config, same run.

    PYTHONPATH=. python benchmarks/model.py [--device cpu|cuda] [--batch 2] [--size 384] [--iters 3]

Measures forward (no grad, eval) and forward+backward (train mode, mean of the output as loss) images/s, counts
the FLOPs of one pass with ``torch.utils.flop_counter.FlopCounterMode`` and reports achieved FLOP/s as a fraction
of this machine's measured float32 matmul rate (``torch.mm`` of 2048x2048 on CPU, 8192x8192 on GPU). Options
measured separately on our model: bf16 autocast (only where the hardware has bf16), channels_last, explicit
(unfused) attention. Setups are timed round-robin (each round runs every setup once, plus the matmul probe) so
that all see the same background load; numbers are medians over ``--iters`` rounds after a warm-up round.
Both models have random weights.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from training.model import build_model


def hf_dpt_base(size: int):
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                       image_size=size, patch_size=16, backbone_out_indices=[2, 5, 8, 11],
                       neck_hidden_sizes=[96, 192, 384, 768], fusion_hidden_size=256, readout_type="project",
                       layer_norm_eps=1e-6)
    model = DPTForDepthEstimation(config)
    return lambda x: model(pixel_values=x).predicted_depth, model


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def seconds(fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def matmul(device: str):
    n = 2048 if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return (lambda: torch.mm(a, b)), 2 * n ** 3


def native_bf16(device: str) -> bool:
    """bf16 is worth measuring on GPU and on CPUs with bf16 instructions (else it is emulated, slower)."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def setup(name, call, module, x, device, autocast=False):
    """``(name, forward, train_step)`` closures for one model setup."""

    def precision():
        return torch.autocast(device_type=device, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def forward():
        module.eval()
        with torch.no_grad(), precision():
            call(x)

    def train_step():
        module.train()
        with precision():
            loss = call(x).float().mean()
        loss.backward()
        module.zero_grad(set_to_none=True)  # free the gradients: several models share this machine's memory

    return name, forward, train_step


def run_rounds(setups, device: str, iters: int):
    """Round-robin: every round times each setup's forward and train step once, plus the matmul probe, so that
    all setups see the same background load (the CPU is shared). The first round is a warm-up."""
    probe, probe_flops = matmul(device)
    times = {name: ([], []) for name, _, _ in setups}
    rates = []
    for round_index in range(iters + 1):
        for name, forward, train_step in setups:
            fwd, train = seconds(forward, device), seconds(train_step, device)
            if round_index:
                times[name][0].append(fwd)
                times[name][1].append(train)
        rate = probe_flops / min(seconds(probe, device) for _ in range(3))
        if round_index:
            rates.append(rate)
        print(f"round {round_index}{' (warm-up)' if not round_index else ''} done", flush=True)
    return times, statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--iters", type=int, default=2, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--skip-options", action="store_true", help="only the float32 comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    hf_call, hf = hf_dpt_base(args.size)
    ours = build_model("dpt_base").to(device)
    setups = [setup("transformers DPT-Base fp32", hf_call, hf.to(device), x, device),
              setup("ours dpt_base fp32", ours, ours, x, device)]
    if not args.skip_options:
        if native_bf16(device):
            setups.append(setup("ours + bf16 autocast", ours, ours, x, device, autocast=True))
        else:
            print("bf16 autocast skipped: this CPU has no native bf16 (avx512_bf16 / amx_bf16); it would be emulated")
        ours_cl = build_model("dpt_base").to(device).to(memory_format=torch.channels_last)
        setups.append(setup("ours + channels_last", ours_cl, ours_cl,
                            x.contiguous(memory_format=torch.channels_last), device))
        unfused = build_model("dpt_base", fused_attention=False).to(device)
        setups.append(setup("ours, unfused attention", unfused, unfused, x, device))
    # FLOPs of one forward and one train step per model (options change how the work is done, not how much).
    flops = {name: (count_flops(fwd), count_flops(train)) for name, fwd, train in setups[:2]}
    times, peak = run_rounds(setups, device, args.iters)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, {args.size}x{args.size}, "
          f"float32 matmul {peak / 1e9:.1f} GFLOP/s (median over rounds), {args.iters} timed rounds")
    report(setups, times, flops, peak, args.batch)


def report(setups, times, flops, peak, batch) -> None:
    names = [name for name, _, _ in setups]
    ips = {n: (batch / statistics.median(times[n][0]), batch / statistics.median(times[n][1])) for n in names}
    base = ips[names[0]]
    print(f"\n{'setup':<28} {'fwd img/s':>10} {'ratio':>6} {'fwd %mm':>8} {'f+b img/s':>10} {'ratio':>6} "
          f"{'f+b %mm':>8}")
    for n in names:
        fwd_flops, train_flops = flops.get(n, flops[names[1]])
        print(f"{n:<28} {ips[n][0]:>10.3f} {ips[n][0] / base[0]:>6.2f} "
              f"{100 * fwd_flops / batch * ips[n][0] / peak:>7.0f}% {ips[n][1]:>10.3f} "
              f"{ips[n][1] / base[1]:>6.2f} {100 * train_flops / batch * ips[n][1] / peak:>7.0f}%")
    ours_flops, hf_flops = flops[names[1]], flops[names[0]]
    print(f"\nFLOPs per image: forward {ours_flops[0] / batch / 1e9:.1f} G (transformers "
          f"{hf_flops[0] / batch / 1e9:.1f} G), forward+backward {ours_flops[1] / batch / 1e9:.1f} G; "
          "ratio = vs transformers fp32; %mm = achieved FLOP/s / float32 matmul rate")


if __name__ == "__main__":
    main()
