"""Encoder fine-tuning throughput on a GPU: ``vit_base_patch16_224`` at 224 px, bf16 autocast vs fp32.

Usage (only meaningful on a CUDA machine)::

    python benchmarks/gpu_throughput.py [--batch-size 128] [--steps 30] [--peak-tflops 790]

Prints images/s of forward + MSE + backward + Adam for both precisions and the fraction of the GPU's dense bf16
peak they reach (one ViT-B/16 forward + backward at 224 px is about 53 GFLOP; the H200's dense bf16 peak is
about 790 TFLOP/s).
"""

from __future__ import annotations

import argparse
import time

import torch

from sepal_tl.tl._backbones import load_backbone
from sepal_tl.tl._encoder import LocalEncoder

GFLOP_PER_IMAGE = 53.0


def throughput(bf16: bool, batch_size: int, steps: int) -> float:
    model = LocalEncoder(load_backbone("vit_base_patch16_224", pretrained=False)[0], 256).cuda()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 3, 224, 224, device="cuda")
    y = torch.randn(batch_size, 256, device="cuda")
    for step in range(steps + 5):  # 5 warm-up steps
        if step == 5:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            pred, _ = model(x)
            loss = torch.nn.functional.mse_loss(pred.float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--peak-tflops", type=float, default=790.0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    print(torch.cuda.get_device_name(), f"torch {torch.__version__}")
    for bf16 in (False, True):
        images = throughput(bf16, args.batch_size, args.steps)
        fraction = images * GFLOP_PER_IMAGE / 1e3 / args.peak_tflops
        print(f"{'bf16' if bf16 else 'fp32'}: {images:.0f} images/s, {fraction:.1%} of the dense bf16 peak")


if __name__ == "__main__":
    main()
