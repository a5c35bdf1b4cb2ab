"""``segloop train --model medsam``: fine-tune MedSAM (v1) on its npy layout (``--npy-dir``) or
on segloop's own data: 2D folders (``--images DIR --masks DIR``, as ``segloop eval`` reads
them), a 3D manifest (``--manifest``) or the server's reviewed masks (``--from-datastore``).

The latter are written once in MedSAM's npy layout under ``OUT/npy`` (what ``segloop export
npy`` writes, at the model's input size) with segloop's own train/validation split (by patient;
2D ``train/`` and ``val/`` sub-folders are used as given), then trained exactly as
``--npy-dir``. Owns the terminal for this case (one line per epoch); the work is
segloop.train.medsam_train's. The run registers as ``medsam@RUN`` unless ``--no-register``.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segloop.errors import InputError, SegloopError

__all__ = ["run_medsam_train"]


def _npy_from_sources(args: argparse.Namespace, size: int) -> tuple[Path, tuple[str, ...]]:
    """Write ``--images/--masks``, ``--manifest`` or ``--from-datastore`` data in MedSAM's npy
    layout under ``OUT/npy``; returns that folder and the held-out case names."""
    from segloop.io.windowing import check_window
    from segloop.train.medsam_npy import export_npy
    from segloop.train.sources import (
        datastore_manifest,
        load_folders,
        load_manifest_records,
        split_records,
    )

    given = [n for n, v in (("--images/--masks", args.images or args.masks),
                            ("--manifest", args.manifest),
                            ("--from-datastore", args.from_datastore is not None)) if v]
    if len(given) != 1:
        raise InputError("segloop train --model medsam needs one data source: --npy-dir DIR,"
                         " --images DIR --masks DIR, --manifest CSV or --from-datastore"
                         + (f" (got {' and '.join(given)})" if given else ""))
    if given[0] == "--images/--masks":
        if args.images is None or args.masks is None:
            raise InputError("2D training takes both --images DIR and --masks DIR")
        train, val = load_folders(args.images, args.masks, val_fraction=args.val_fraction,
                                  seed=args.seed, patient_pattern=args.patient_pattern)
    else:
        if args.manifest is not None:
            manifest = args.manifest
        else:
            from segloop.config import load_settings

            ds = Path(args.from_datastore) if args.from_datastore else load_settings().datastore_dir
            manifest = datastore_manifest(ds)
        window = None if args.window == "none" else check_window(args.window)
        train, val = split_records(load_manifest_records(manifest, args.root, window),
                                   args.val_fraction, args.seed)
    names = [r.name for r in [*train, *val]]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"two images or cases share the name {twice[0]!r} (in train/ and val/?);"
                         " rename one")
    out = args.out / "npy"
    for sub in ("imgs", "gts"):  # a previous run's conversion of other data must not linger
        for old in (out / sub).glob("*.npy") if (out / sub).is_dir() else []:
            old.unlink()
    n = export_npy([*train, *val], out, size=size)
    if n == 0:
        raise InputError("no image or slice holds a non-empty mask; nothing to train on")
    if not args.quiet:
        print(f"segloop: {n} image(s)/slice(s) in MedSAM's npy layout in {out}"
              f" ({len(val)} case(s) held out)", file=sys.stderr)
    return out, tuple(r.name for r in val)


def run_medsam_train(args: argparse.Namespace) -> int:
    """Handler of ``segloop train --model medsam`` (``--npy-dir`` or segloop's data sources)."""
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
    npy_dir, val_cases = args.npy_dir, None
    if npy_dir is None:
        npy_dir, val_cases = _npy_from_sources(args, int(model.config.vision_config.image_size))
    cfg = MedSAMTrainConfig(npy_dir=npy_dir, val_cases=val_cases, out=args.out, epochs=args.epochs,
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
