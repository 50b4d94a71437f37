"""The checks a GPU day needs, in one command of a few minutes (issue 10): ``make gpu-check``.

1. The matching loss on CUDA equals the CPU loss: value and gradient, float32, relative 1e-5.
2. AMP training steps of HRNet-W32 (256x192, batch 8) in fp16 (with a grad scaler) and bf16: finite
   loss and gradients, the loss computed in float32.
3. A one-process NCCL DistributedDataParallel step (init, forward, backward, all-reduce, destroy).
4. HRNet-W32 at 384x288, batch 32: training-step time with each loss (the MSE baseline on Gaussian
   targets, the matching loss on dots), and the loss's share of the step (its forward + backward on
   the same heatmaps over the whole step). Target: <= 2%.

Without CUDA it prints one SKIP line and exits 0: tests never depend on a GPU. ``--device cpu``
runs the same code on the CPU at small sizes (gloo instead of NCCL): a dry run of the script
itself. Exit 1 when a check fails; the share target is reported, not enforced. ``--out FILE``
also writes the numbers as JSON.

Usage: python scripts/gpu_check.py [--device cuda|cpu] [--out results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as torch_dist

from posematch.codecs.dots import DotCodec
from posematch.codecs.gaussian import GaussianHeatmapCodec
from posematch.losses.mse import JointsMSELoss
from posematch.losses.sinkhorn import SinkhornMatchingLoss
from posematch.models.backbones.hrnet import HRNet
from posematch.models.heads.conv1x1 import Conv1x1Head
from posematch.models.pose_model import TopDownModel

K = 17


def hrnet_w32() -> TopDownModel:
    return TopDownModel(HRNet(width=32), Conv1x1Head(32, K))


def problem(b: int, input_wh: tuple[int, int], device: torch.device, seed: int = 0):
    """Images (B, 3, H, W) uint8-valued floats and ground truth for both codecs."""
    g = torch.Generator().manual_seed(seed)
    w, h = input_wh
    images = torch.randint(0, 256, (b, 3, h, w), generator=g).float()
    keypoints = torch.rand(b, K, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    visible = torch.ones(b, K)
    heatmap_wh = (w // 4, h // 4)
    dots = DotCodec(input_wh, heatmap_wh).encode(keypoints, visible)
    gauss = [GaussianHeatmapCodec(input_wh, heatmap_wh, sigma=2.0 * w / 192).encode(k, v)
             for k, v in zip(keypoints.numpy(), visible.numpy(), strict=True)]  # fmt: skip
    targets = {
        "matching": (dots.keypoints.to(device), dots.weights.to(device)),
        "mse": (
            torch.stack([torch.as_tensor(t.heatmaps) for t in gauss]).to(device),
            torch.stack([torch.as_tensor(t.weights) for t in gauss]).to(device),
        ),
    }
    return images.to(device), targets


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], None], device: torch.device, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def check_loss_equal(device: torch.device) -> dict:
    """1. CUDA (or the chosen device) against CPU, float32."""
    g = torch.Generator().manual_seed(1)
    heat = torch.nn.functional.softplus(torch.randn(8, K, 64, 48, generator=g))
    dots = torch.rand(8, K, 2, generator=g) * torch.tensor([47.0, 63.0])
    weights = (torch.rand(8, K, generator=g) > 0.2).float()
    loss_fn = SinkhornMatchingLoss(pixel_size=4.0)
    out = {}
    for where in ("cpu", device.type):
        x = heat.clone().to(where).requires_grad_(True)
        value = loss_fn(x, dots.to(where), weights.to(where))
        value.backward()
        out[where] = (value.detach().cpu(), x.grad.cpu())
    rel_value = ((out[device.type][0] - out["cpu"][0]).abs() / out["cpu"][0].abs()).item()
    rel_grad = ((out[device.type][1] - out["cpu"][1]).abs().max()
                / out["cpu"][1].abs().max()).item()  # fmt: skip
    ok = rel_value <= 1e-5 and rel_grad <= 1e-5
    print(f"[{'PASS' if ok else 'FAIL'}] loss on {device.type} = cpu: value rel {rel_value:.2e}, "
          f"gradient rel {rel_grad:.2e} (<= 1e-5)")  # fmt: skip
    return {"ok": ok, "value_rel": rel_value, "grad_rel": rel_grad}


def check_amp(device: torch.device, input_wh: tuple[int, int], batch: int) -> dict:
    """2. fp16 (grad scaler) and bf16 steps: finite, the loss in float32."""
    results = {}
    images, targets = problem(batch, input_wh, device)
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        model = hrnet_w32().to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
        loss_fn = SinkhornMatchingLoss(pixel_size=4.0)
        # fp16: the scaler starts at 2**16 and halves at every overflowing step, which it skips.
        # At HRNet's initialisation the backbone's fp16 gradients overflow until the scale is
        # well below 1 (the CPU dry run: the loss's own gradient is ~850, fine in fp16, but the
        # backward through the tiny-initialised convs and their BatchNorms amplifies it); up to
        # 40 steps are allowed before the gradients must be finite, and the scale is reported.
        steps = 0
        while steps < 40:
            steps += 1
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype):
                heatmaps = model(images)
            loss = loss_fn(heatmaps, *targets["matching"])
            (scaler.scale(loss) if scaler is not None else loss).backward()
            if scaler is not None:
                scaler.unscale_(opt)  # true gradients, to check them
            grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters()
                               if p.grad is not None)  # fmt: skip
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if grads_finite:
                break
        ok = (heatmaps.dtype == dtype and loss.dtype == torch.float32
              and bool(torch.isfinite(loss)) and grads_finite)  # fmt: skip
        scale = scaler.get_scale() if scaler is not None else 1.0
        print(f"[{'PASS' if ok else 'FAIL'}] AMP {name}: heatmaps {heatmaps.dtype}, loss "
              f"{loss.dtype} = {loss.item():.4f}, gradients finite after {steps} step(s)"
              + (f" (grad scale now {scale:g})" if scaler is not None else ""))  # fmt: skip
        results[name] = {"ok": ok, "loss": loss.item(), "steps": steps, "scale": scale}
    return results


def check_ddp(device: torch.device) -> dict:
    """3. One process, one DDP training step over NCCL (gloo on CPU)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch_dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0,
                                  world_size=1)  # fmt: skip
    try:
        model = torch.nn.parallel.DistributedDataParallel(
            hrnet_w32().to(device),
            device_ids=[device.index or 0] if device.type == "cuda" else None,
        )
        images, targets = problem(2, (96, 128), device)
        loss = SinkhornMatchingLoss(pixel_size=4.0)(model(images), *targets["matching"])
        loss.backward()
        ok = bool(torch.isfinite(loss)) and all(
            p.grad is not None for p in model.parameters() if p.requires_grad
        )
    finally:
        torch_dist.destroy_process_group()
    print(
        f"[{'PASS' if ok else 'FAIL'}] DDP step over {backend}, 1 process: loss {loss.item():.4f}"
    )
    return {"ok": ok, "backend": backend}


def _timed_loss(name: str, loss_fn, images, target, device, repeats) -> dict:
    """Step time and loss time (forward + backward on the step's heatmaps) for one loss."""
    torch.manual_seed(0)
    model = hrnet_w32().to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(images), *target).backward()
        opt.step()

    step_ms = median_ms(step, device, repeats)
    with torch.no_grad():
        heat = model(images)

    def loss_only() -> None:
        x = heat.detach().requires_grad_(True)
        loss_fn(x, *target).backward()

    loss_ms = median_ms(loss_only, device, repeats)
    return {"step_ms": step_ms, "loss_ms": loss_ms, "share": loss_ms / step_ms}


def step_times(device: torch.device, input_wh: tuple[int, int], batch: int, repeats: int) -> dict:
    """4. Step time with each loss and the loss's share (forward + backward on fixed heatmaps)."""
    images, targets = problem(batch, input_wh, device)
    losses = {"mse": JointsMSELoss(), "matching": SinkhornMatchingLoss(pixel_size=4.0)}
    out = {}
    for name, loss_fn in losses.items():
        out[name] = r = _timed_loss(name, loss_fn, images, targets[name], device, repeats)
        print(f"       HRNet-W32 {input_wh[1]}x{input_wh[0]} batch {batch}, {name}: step "
              f"{r['step_ms']:.1f} ms, loss forward+backward {r['loss_ms']:.2f} ms = "
              f"{r['share']:.1%} of the step")  # fmt: skip
    extra = out["matching"]["step_ms"] / out["mse"]["step_ms"] - 1
    target = out["matching"]["share"] <= 0.02
    print(f"[{'PASS' if target else 'FAIL'}] matching loss share {out['matching']['share']:.1%} "
          f"(<= 2%); matching step over MSE step {extra:+.1%}")  # fmt: skip
    return {**out, "matching_over_mse": extra, "share_target": target}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu-check: SKIP: no CUDA device here (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda}); nothing was run")  # fmt: skip
        return 0
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"gpu-check on {name}: torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{os.cpu_count()} cores")  # fmt: skip
    big = device.type == "cuda"
    report = {
        "device": name,
        "loss_equal": check_loss_equal(device),
        "amp": check_amp(device, (192, 256) if big else (96, 128), 8 if big else 2),
        "ddp": check_ddp(device),
        "speed": step_times(
            device, (288, 384) if big else (96, 128), 32 if big else 2, 10 if big else 2
        ),
    }
    failed = not (report["loss_equal"]["ok"] and all(v["ok"] for v in report["amp"].values())
                  and report["ddp"]["ok"])  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    print(f"gpu-check: {'FAIL' if failed else 'all checks PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
