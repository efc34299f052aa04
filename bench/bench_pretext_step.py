"""Training-step throughput of each pretext on the shared U-Net, next to its target cost.

How many loader workers does a GPU need? A step of ``unet_bai`` + head on a batch of 128x128
slices runs at S samples/s; each sample costs T seconds of CPU to make its target (measured here on
the same machine's CPU). Workers needed ~= S * (T + read time). Run on a GPU machine:

    python bench/bench_pretext_step.py [--batch 64] [--size 128] [--steps 30] [--device cuda]

Prints samples/s for fp32 (TF32 allowed) and bf16 autocast, and the per-sample target CPU time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--backbone", default="unet_bai")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    from torch.utils.data import default_collate

    from cardiossl.backbones import build_backbone
    from cardiossl.pretexts import PRETEXTS
    from cardiossl.pretexts.base import sample_meta
    from cardiossl.pretexts.testing import example_subject

    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    shape = (args.size, args.size)
    pool = example_subject(n_slices=12, shape=shape)
    name_dev = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {name_dev}; backbone {args.backbone}; batch {args.batch} x {shape}; torch {torch.__version__}")
    print(f"{'pretext':34s} {'target ms':>9s} {'fp32 smp/s':>11s} {'bf16 smp/s':>11s} {'workers@bf16':>12s}")
    for name in PRETEXTS.names():
        cls = PRETEXTS.get(name)
        for cfg in cls.variants():
            pretext = cls(cfg)
            ok = [s for s in pool if pretext.accepts(sample_meta(s))]
            samples = [ok[i % len(ok)] for i in range(args.batch)]
            # Target CPU cost, cold caches (a different slice geometry every call is the worst case).
            t0 = time.process_time()
            made = []
            for i, s in enumerate(samples):
                if hasattr(pretext, "_cache"):
                    pretext.__dict__.update(pretext.__getstate__())
                made.append(pretext.make_target(s, np.random.default_rng(i)))
            target_s = (time.process_time() - t0) / len(samples)
            keys = [k for k in ("input", "target", "target_mask") if k in made[0]]
            batch = default_collate([{k: m[k] for k in keys} for m in made])
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            rates = []
            for amp in (False, True):
                torch.manual_seed(0)
                net = build_backbone(args.backbone).to(dev).to(memory_format=torch.channels_last)
                head = pretext.build_head(net).to(dev)
                opt = torch.optim.AdamW(list(net.parameters()) + list(head.parameters()), lr=1e-3)
                x = batch["input"].contiguous(memory_format=torch.channels_last)

                def step():
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                        out = pretext.forward(net, head, x)
                        loss = pretext.loss(out.float(), batch)["loss"]
                    loss.backward()
                    opt.step()

                for _ in range(5):
                    step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                rates.append(args.batch * args.steps / (time.perf_counter() - t0))
            label = name + ("" if not cfg else " " + ",".join(f"{k}={v}" for k, v in cfg.items()))
            print(f"{label:34s} {1e3 * target_s:9.3f} {rates[0]:11.0f} {rates[1]:11.0f} {rates[1] * target_s:12.1f}")


if __name__ == "__main__":
    main()
