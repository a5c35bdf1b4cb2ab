"""Speed and peak memory of the ``sammed3d`` engine on one 128³ patch (random ViT-B weights).

Measures, on CPU (``--threads``, default 2) or ``--device cuda``:

- ``encode``: the image encoder on one z-normalised 128³ patch (once per patch);
- ``click``: one prompt-encoder + mask-decoder pass with low-res feedback, plus the
  trilinear upscale to 128³ (once per click; the official loop's per-click work);
- ``engine``: through segloop's session on a synthetic 1.5 mm volume: ``segment_slice`` from a
  box (patch sampling + encode + decode + paste-back) and one ``refine`` click (decode only);
- ``train``: one optimisation step (forward with 2 simulated clicks, BCE + Dice loss on the
  128³ logits, backward, AdamW) at ``--batch`` (default 2), in bf16 autocast on CUDA
  (``--precision``) -- the real ViT-B unless ``--tiny``; with ``--visual-tokens N`` the same
  step is timed again with the visual-token head (``--visual-token-count`` tokens of width N,
  trained on the detached embedding) and the ratio printed.

Peak memory: the process's peak resident set (CPU; ``ru_maxrss`` minus the RSS before the model
was built) or ``torch.cuda.max_memory_allocated`` (CUDA), per phase on CUDA. Examples::

    PYTHONPATH=src python benchmarks/bench_sammed3d.py                    # CPU, 2 threads
    PYTHONPATH=src python benchmarks/bench_sammed3d.py --device cuda      # + bf16 train step, batch 2
    PYTHONPATH=src python benchmarks/bench_sammed3d.py --tiny --train     # CPU train step, tiny config
    PYTHONPATH=src python benchmarks/bench_sammed3d.py --tiny --train --visual-tokens 256  # head cost
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segloop.engines.sammed3d.model import SamMed3D, SamMed3DConfig
from segloop.engines.sammed3d.session import Runtime, SamMed3DSession
from segloop.engines.sammed3d.testing import random_model
from segloop.engines.sammed3d.tokens import VisualTokenConfig, VisualTokenHead
from segloop.io.volume import Volume
from segloop.types import Prompts


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any], dev: torch.device, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def fmt(ts: list[float]) -> str:
    return f"{statistics.median(ts):.3f} s (min {min(ts):.3f}, n={len(ts)})"


def train_step(model: SamMed3D, batch: int, dev: torch.device, bf16: bool, steps: int,
               head: VisualTokenHead | None = None) -> list[float]:
    cfg = model.config
    s, n = cfg.image_size, cfg.low_res
    model.train()
    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(batch, 1, s, s, s, device=dev)
    target = torch.zeros(batch, 1, s, s, s, device=dev)
    target[:, :, s // 4: 3 * s // 4, s // 4: 3 * s // 4, s // 4: 3 * s // 4] = 1
    ac = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with ac:
            emb = model.encode(x)
            low = torch.zeros(batch, 1, n, n, n, device=dev)
            pts = torch.full((batch, 1, 3), s // 2, device=dev, dtype=torch.float32)
            lab = torch.ones(batch, 1, dtype=torch.int64, device=dev)
            loss = torch.zeros((), device=dev)
            for k in range(2):  # two simulated clicks with feedback, as the official trainer
                low, _ = model.decode(emb, pts, lab, low.detach())
                logits = model.upscale(low).float()
                prob = torch.sigmoid(logits)
                dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
                loss = loss + F.binary_cross_entropy_with_logits(logits, target) + dice
                pts = torch.cat([pts, torch.full((batch, 1, 3), s // 4 + k, device=dev,
                                                 dtype=torch.float32)], 1)
                lab = torch.cat([lab, torch.zeros(batch, 1, dtype=torch.int64, device=dev)], 1)
            if head is not None:
                loss = loss + head.occupancy_loss(head(emb.detach()), target)
        loss.backward()
        opt.step()

    step()  # warm-up
    return timed(step, dev, steps)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto",
                    help="auto: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--tiny", action="store_true", help="the tiny test config instead of ViT-B")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train", action="store_true", help="also time a training step (always on CUDA)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--visual-tokens", type=int, default=0, metavar="N",
                    help="also time the train step with a visual-token head of width N")
    ap.add_argument("--visual-token-count", type=int, default=32, metavar="K")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and dev.type == "cuda")
    cfg = SamMed3DConfig.tiny() if args.tiny else SamMed3DConfig()
    base = rss_mb()
    model = random_model(cfg).to(dev)
    s = cfg.image_size
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{args.threads} threads"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"device {dev} ({where}), config {'tiny' if args.tiny else 'ViT-B'} ({params:.1f} M params)"
          f", {'bf16 autocast' if bf16 else 'fp32'}, torch {torch.__version__}")
    ac: Callable[[], Any] = ((lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16
                             else contextlib.nullcontext)
    x = torch.randn(1, 1, s, s, s, device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with torch.no_grad(), ac():
        emb = model.encode(x).float()
        t_enc = timed(lambda: model.encode(x), dev, args.repeat)
        low = torch.zeros(1, 1, cfg.low_res, cfg.low_res, cfg.low_res, device=dev)
        pts = torch.zeros(1, 0, 3, device=dev)
        lab = torch.zeros(1, 0, dtype=torch.int64, device=dev)
        t_click = []
        for k in range(args.clicks):
            pts = torch.cat([pts, torch.tensor([[[s // 2 + k, s // 2, s // 2]]], device=dev,
                                               dtype=torch.float32)], 1)
            lab = torch.cat([lab, torch.tensor([[k % 2 == 0]], device=dev).long()], 1)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            low, _ = model.decode(emb, pts, lab, low)
            (model.upscale(low.float()) > 0).cpu()
            t_click.append(time.perf_counter() - t0)
    print(f"encode {s}³ patch: {fmt(t_enc)}")
    print(f"one click (decode + upscale, feedback): {fmt(t_click)}")
    if dev.type == "cuda":
        print(f"peak GPU memory, inference: {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB")
    else:
        print(f"peak RSS over baseline, inference: {peak_mb() - base:.0f} MiB")

    # through the session: a 1.5 mm synthetic volume, box -> click, then one refine click
    shape = (160, 160, 96)
    rng = np.random.default_rng(0)
    data = rng.normal(100, 10, shape).astype(np.float32)
    data[60:100, 60:100, 30:60] += 100
    vol = Volume(data=data, affine=np.diag([1.5, 1.5, 1.5, 1.0]), source_format="npz", modality="CT")
    rt = Runtime(model=model.eval(), device=dev, use_bf16=bf16, max_tiles=1, lock=threading.RLock())
    sess = SamMed3DSession(rt, vol)
    t = time.perf_counter()
    sess.segment_slice(45, Prompts.make(box=(62, 62, 98, 98)))
    t_seg = time.perf_counter() - t
    t = time.perf_counter()
    for _ in sess.refine(45, Prompts.make(points=[(70, 70)], labels=[0])):
        pass
    t_ref = time.perf_counter() - t
    print(f"engine: segment_slice (sample+encode+decode+paste) {t_seg:.3f} s; refine click {t_ref:.3f} s")

    if args.train or dev.type == "cuda":
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        ts = train_step(model, args.batch, dev, bf16, args.repeat)
        mem = (f"peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB"
               if dev.type == "cuda" else f"peak RSS over baseline {peak_mb() - base:.0f} MiB")
        print(f"train step, batch {args.batch}, {'bf16' if bf16 else 'fp32'}: {fmt(ts)}; {mem}")
        if args.visual_tokens:
            cfg = model.config
            head = VisualTokenHead(VisualTokenConfig(
                dim=args.visual_tokens, count=args.visual_token_count, in_dim=cfg.prompt_dim,
                grid=cfg.grid, patch=cfg.patch_size)).to(dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            th = train_step(model, args.batch, dev, bf16, args.repeat, head)
            mem = (f"peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB"
                   if dev.type == "cuda" else f"peak RSS over baseline {peak_mb() - base:.0f} MiB")
            n_head = sum(p.numel() for p in head.parameters())
            print(f"train step + visual-token head ({args.visual_token_count} x {args.visual_tokens},"
                  f" {n_head / 1e6:.2f} M parameters): {fmt(th)}; {mem}; median ratio"
                  f" {statistics.median(th) / statistics.median(ts):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
