"""Where MedSAM's repeated-box decode spends its time (the < 50 ms goal of issue 11).

Builds SAM ViT-B at 1024 px with random weights (the decoder's cost does not depend on the
values), feeds a random ``(1, 256, 64, 64)`` image embedding and one box, as a second box on
an encoded image does, and prints the median wall and process-CPU milliseconds of the prompt
encoder + mask decoder (``SamModel(image_embeddings=..., input_boxes=...)``), then the
operators with the most CPU time (torch profiler). On a shared machine quote the CPU time.
Then segloop's cached decoder (:mod:`segloop.engines.medsam.fast_decode`, what the engine runs)
and ``SamModel``'s forward alternated call by call, with the decoder's and prompt encoder's
weights and biases perturbed (random init leaves biases at zero), and the largest logit
difference between them.

    PYTHONPATH=src python benchmarks/medsam_decoder_profile.py [--threads 1] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from segloop.models.sam_v1 import build_sam_model, sam_vit_b_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--top", type=int, default=10, help="operators to list")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_sam_model(sam_vit_b_config(1024)).eval()
    emb = torch.randn(1, 256, 64, 64)
    box = torch.tensor([[[256.0, 256.0, 768.0, 768.0]]])

    def decode() -> None:
        with torch.inference_mode():
            model(image_embeddings=emb, input_boxes=box, multimask_output=False)

    for _ in range(3):
        decode()
    wall, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        decode()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(f"decode (prompt encoder + mask decoder, 64x64 tokens), {args.threads} thread(s): "
          f"median {1000 * statistics.median(wall):.1f} ms wall, "
          f"{1000 * statistics.median(cpu):.1f} ms CPU")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            decode()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    compare(model, emb, box, args.repeats)


def compare(model: torch.nn.Module, emb: torch.Tensor, box: torch.Tensor, repeats: int) -> None:
    """segloop's cached decoder against SamModel's forward, alternated, perturbed weights."""
    from segloop.engines.medsam.fast_decode import decode, prepare

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in (model.mask_decoder, model.prompt_encoder):  # type: ignore[union-attr]
            for p in mod.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    with torch.inference_mode():
        cache = prepare(model, emb)

        def ours() -> torch.Tensor:
            sparse, _ = model.prompt_encoder(input_points=None, input_labels=None,  # type: ignore[operator]
                                             input_boxes=box, input_masks=None)
            return decode(model, cache, sparse)[0]

        def theirs() -> torch.Tensor:
            out = model(image_embeddings=emb, input_boxes=box, multimask_output=False)
            return out.pred_masks[:, 0, :1]  # type: ignore[no-any-return]

        diff = float((ours() - theirs()).abs().max())
        runs: dict[str, list[tuple[float, float]]] = {"cached decoder": [], "SamModel": []}
        for _ in range(repeats):
            for name, fn in (("cached decoder", ours), ("SamModel", theirs)):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                runs[name].append((time.perf_counter() - t0, time.process_time() - c0))
    for name, r in runs.items():
        print(f"{name}: median {1000 * statistics.median(w for w, _ in r):.1f} ms wall,"
              f" {1000 * statistics.median(c for _, c in r):.1f} ms CPU (alternated)")
    print(f"max |delta logit| (perturbed decoder weights): {diff:.1e}")


if __name__ == "__main__":
    main()
