"""DPT-Base speed: this project's model vs transformers' DPTForDepthEstimation of the same config, same run.

    PYTHONPATH=. python benchmarks/model.py [--device cpu|cuda] [--batch 2] [--size 384] [--iters 3]

Measures forward (no grad, eval) and forward+backward (train mode, mean of the output as loss) images/s, counts
the FLOPs of one pass with ``torch.utils.flop_counter.FlopCounterMode`` and reports achieved FLOP/s as a fraction
of this machine's measured float32 matmul rate (``torch.mm`` of 2048x2048 on CPU, 8192x8192 on GPU). Options
measured separately on our model: bf16 autocast, channels_last, explicit (unfused) attention. Every number is a
median over ``--iters`` timed iterations after one warm-up iteration. Both models have random weights.
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


def time_it(fn, iters: int, device: str) -> float:
    """Median seconds of ``fn()`` over ``iters`` runs after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rate(device: str, iters: int) -> float:
    n = 2048 if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    seconds = time_it(lambda: torch.mm(a, b), max(iters, 3), device)
    return 2 * n ** 3 / seconds


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


def measure(name, call, module, x, iters, device, autocast=False, flops=None):
    """``{name, images/s and FLOP/s of forward and forward+backward}`` for one model setup.

    ``flops=(forward, train)`` reuses counts of an earlier setup of the same model (the options change how the
    work is done, not how much of it there is), which halves the run time on a slow CPU.
    """

    def precision():
        return torch.autocast(device_type=device, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def forward():
        with torch.no_grad(), precision():
            call(x)

    def train_step():
        module.zero_grad(set_to_none=True)
        with precision():
            loss = call(x).float().mean()
        loss.backward()

    module.eval()
    fwd_s = time_it(forward, iters, device)
    fwd_flops = count_flops(forward) if flops is None else flops[0]
    module.train()
    train_s = time_it(train_step, iters, device)
    train_flops = count_flops(train_step) if flops is None else flops[1]
    batch = x.shape[0]
    return {"name": name, "flops": (fwd_flops, train_flops), "fwd_ips": batch / fwd_s, "train_ips": batch / train_s,
            "fwd_flops": fwd_flops / fwd_s, "train_flops": train_flops / train_s,
            "fwd_gflop": fwd_flops / batch / 1e9, "train_gflop": train_flops / batch / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--skip-options", action="store_true", help="only the float32 comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    peak = matmul_rate(device, args.iters)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, {args.size}x{args.size}, "
          f"float32 matmul {peak / 1e9:.1f} GFLOP/s")

    results = []
    hf_call, hf = hf_dpt_base(args.size)
    hf.to(device)
    results.append(measure("transformers DPT-Base fp32", hf_call, hf, x, args.iters, device))
    del hf, hf_call
    ours = build_model("dpt_base").to(device)
    results.append(measure("ours dpt_base fp32", ours, ours, x, args.iters, device))
    flops = results[-1]["flops"]
    if not args.skip_options:
        if native_bf16(device):
            results.append(measure("ours + bf16 autocast", ours, ours, x, args.iters, device, True, flops))
        else:
            print("bf16 autocast skipped: this CPU has no native bf16 (avx512_bf16 / amx_bf16); it would be emulated")
        ours = ours.to(memory_format=torch.channels_last)  # in place: conv weights become NHWC
        x_cl = x.contiguous(memory_format=torch.channels_last)
        results.append(measure("ours + channels_last", ours, ours, x_cl, args.iters, device, flops=flops))
        ours = build_model("dpt_base", fused_attention=False).to(device)
        results.append(measure("ours, unfused attention", ours, ours, x, args.iters, device, flops=flops))

    base = results[0]
    print(f"\n{'setup':<28} {'fwd img/s':>10} {'ratio':>6} {'fwd %mm':>8} {'f+b img/s':>10} {'ratio':>6} "
          f"{'f+b %mm':>8}")
    for r in results:
        print(f"{r['name']:<28} {r['fwd_ips']:>10.3f} {r['fwd_ips'] / base['fwd_ips']:>6.2f} "
              f"{100 * r['fwd_flops'] / peak:>7.0f}% {r['train_ips']:>10.3f} "
              f"{r['train_ips'] / base['train_ips']:>6.2f} {100 * r['train_flops'] / peak:>7.0f}%")
    print(f"\nFLOPs per image: forward {results[1]['fwd_gflop']:.1f} G (transformers {base['fwd_gflop']:.1f} G), "
          f"forward+backward {results[1]['train_gflop']:.1f} G; ratio = vs transformers fp32; "
          "%mm = achieved FLOP/s / float32 matmul rate")


if __name__ == "__main__":
    main()
