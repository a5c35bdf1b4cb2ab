"""``segloop train --model medsam --npy-dir DIR``: fine-tune MedSAM (v1) on its npy layout.

Owns the terminal for this case (one line per epoch); the work is
segloop.train.medsam_train's. The run registers as ``medsam@RUN`` unless ``--no-register``.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import sys

from segloop.errors import SegloopError

__all__ = ["run_medsam_train"]


def run_medsam_train(args: argparse.Namespace) -> int:
    """Handler of ``segloop train --npy-dir``."""
    import torch

    from segloop.models.registry import get_spec
    from segloop.models.sam_v1 import load_sam_model, sam_model_from_file, sam_vit_b_config
    from segloop.models.versions import register_run, run_model_name
    from segloop.train.medsam_train import MedSAMTrainConfig, train_medsam

    base = args.model or "medsam"
    if get_spec(base).engine != "medsam":
        raise SegloopError(f"--npy-dir trains MedSAM; {base!r} is a {get_spec(base).engine} model")
    if args.pretrained is not None:
        model = sam_model_from_file(args.pretrained, sam_vit_b_config())
        base = str(args.pretrained)
    else:
        model = load_sam_model(get_spec(base).name)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = MedSAMTrainConfig(npy_dir=args.npy_dir, out=args.out, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                            steps_per_epoch=args.samples_per_epoch // max(args.batch_size, 1),
                            seed=args.seed, device=device, threads=args.threads,
                            val_fraction=args.val_fraction, resume=args.resume)

    def on_epoch(epoch: int, loss: float, dice: float | None) -> None:
        if not args.quiet:
            val = "" if dice is None else f", val Dice {dice:.4f}"
            print(f"segloop: epoch {epoch + 1}/{args.epochs}: loss {loss:.4f}{val}", file=sys.stderr)

    result = train_medsam(cfg, model, on_epoch)
    print(f"segloop: best checkpoint (MedSAM's layout) {result.best_checkpoint}; losses "
          + " ".join(f"{v:.4f}" for v in result.losses))
    print("segloop: validation Dice (" + ", ".join(result.val_cases) + ") "
          + " ".join(f"{v:.4f}" for v in result.val_dice) if result.val_dice
          else "segloop: no validation (a single case, or --val-fraction 0)")
    if not args.no_register:
        name = run_model_name("medsam", args.name or args.out.name)
        full = model.config.to_dict()
        config = {k: full[k] for k in ("vision_config", "prompt_encoder_config", "mask_decoder_config")}
        register_run(result.hf_dir, name, base_model=base, engine="medsam", config=config,
                     val_scores={"val_dice": max(result.val_dice)} if result.val_dice
                     else {"train_loss": min(result.losses)}, run_dir=args.out)
        print(f"segloop: registered {name} (use --engine {name})")
    return 0
