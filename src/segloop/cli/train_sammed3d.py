"""``segloop train --model sammed3d``: fine-tune SAM-Med3D with the seed project's options.

The seed's ``train.py`` option names are accepted as they are (``--train_csv``,
``--use_mixed_precision``, ...) and with dashes (``--train-csv``); ``--output_dir`` is also
``--out`` as in ``segloop train``. Data: the seed's CSVs and mask folder, or segloop's own 3D
manifest (``--manifest CSV [--root DIR]``) or the datastore of reviewed masks
(``--from-datastore [DIR]``), split by patient with ``--val-fraction``.
``--test`` is the seed's quick system check: it writes three
synthetic volumes (``.pkl`` arrays) with ``{n}.nii`` masks and CSVs in the seed's format into a
temporary folder (or checks the given CSVs), reports every bad row at once, then trains a tiny
model for one epoch end to end. Dispatched from :mod:`segloop.cli` before the generic ``train``
parser. torch is imported only when the command runs.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["is_sammed3d_train", "main"]


def is_sammed3d_train(argv: Sequence[str]) -> bool:
    """True for ``train ... --model sammed3d`` (or ``--model=sammed3d...``)."""
    if not argv or argv[0] != "train":
        return False
    names = ("sammed3d", "sam-med3d-turbo")
    for i, a in enumerate(argv):
        if a == "--model" and i + 1 < len(argv) and argv[i + 1].split("@")[0] in names:
            return True
        if a.startswith("--model=") and a.split("=", 1)[1].split("@")[0] in names:
            return True
    return False


def _both(g: argparse._ArgumentGroup, name: str, *extra: str, **kw: object) -> None:
    g.add_argument(f"--{name}", f"--{name.replace('_', '-')}", *extra, dest=name, **kw)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``segloop train --model sammed3d``."""
    p = argparse.ArgumentParser(prog="segloop train --model sammed3d",
                                description="Fine-tune SAM-Med3D (the seed project's options).")
    p.add_argument("--model", default="sammed3d",
                   help="starting weights: sammed3d (the turbo checkpoint, cached) or tiny (random)")
    d = p.add_argument_group("data")
    _both(d, "train_csv", type=Path, help="CSV path,ich,patient_id")
    _both(d, "val_csv", type=Path)
    _both(d, "mask_dir", type=Path, help="folder of {file number}.nii masks")
    d.add_argument("--manifest", type=Path, help="segloop 3D manifest CSV (case_id,image,label,...)")
    d.add_argument("--root", type=Path, help="folder the manifest's paths are relative to")
    d.add_argument("--from-datastore", "--from_datastore", dest="from_datastore", nargs="?", const="",
                   default=None, metavar="DIR",
                   help="train on the server's reviewed masks (default: $SEGLOOP_HOME/datastore)")
    _both(d, "val_fraction", type=float, default=0.2,
          help="--manifest / --from-datastore: share of patients held out for validation")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=200)
    _both(o, "batch_size", type=int, default=2)
    o.add_argument("--lr", type=float, default=1e-4)
    _both(o, "weight_decay", type=float, default=0.01)
    _both(o, "use_mixed_precision", action="store_true")
    _both(o, "gradient_accumulation_steps", type=int, default=1)
    _both(o, "scheduler_type", choices=["cosine", "step", "reduce_on_plateau"], default="cosine")
    o.add_argument("--patience", type=int, default=0, help="early stop (0: never)")
    _both(o, "max_grad_norm", type=float, default=1.0)
    _both(o, "freeze_encoder", action="store_true")
    _both(o, "use_gradient_checkpointing", action="store_true")
    o.add_argument("--clicks", type=int, default=5, help="simulated clicks per sample")
    o.add_argument("--device", default="auto")
    o.add_argument("--seed", type=int, default=0)
    _both(o, "num_workers", type=int, default=0,
          help="processes preparing patches (default 0: in the training process)")
    _both(o, "visual_tokens", type=int, default=0, metavar="N",
          help="also train a visual-token head: tokens of width N for a BLIP-2-style model,"
               " saved in sam_encoder.pth (default 0: none)")
    _both(o, "visual_token_count", type=int, default=32, metavar="K",
          help="number of visual tokens (learned queries; default 32)")
    r = p.add_argument_group("run")
    _both(r, "output_dir", "--out", type=Path, default=Path("outputs"))
    r.add_argument("--resume", action="store_true", help="continue from latest_model.pth")
    r.add_argument("--name", default=None,
                   help="register the result as sammed3d@NAME (default: the output folder's name)")
    _both(r, "use_wandb", action="store_true")
    _both(r, "wandb_project", default="my-sam-med3d")
    _both(r, "log_images", action="store_true")
    _both(r, "log_freq", type=int, default=10)
    r.add_argument("--test", action="store_true", help="quick end-to-end system check")
    return p


def _synthetic(folder: Path) -> tuple[Path, Path, Path]:
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    masks = folder / "masks"
    masks.mkdir(parents=True)
    rows = []
    for i in range(3):
        img = rng.normal(30, 5, (40, 40, 24)).astype(np.float32)
        m = np.zeros(img.shape, np.uint8)
        m[12 + i:24 + i, 14:26, 8:16] = 1
        img[m > 0] += 40
        with (folder / f"scan_{i + 1}.pkl").open("wb") as f:
            pickle.dump(img, f)
        nib.save(nib.Nifti1Image(m, np.diag([1.5, 1.5, 1.5, 1.0])), masks / f"{i + 1}.nii")
        rows.append(f"scan_{i + 1}.pkl,1,p{i + 1}")
    (folder / "train.csv").write_text("path,ich,patient_id\n" + "\n".join(rows[:2]) + "\n")
    (folder / "val.csv").write_text("path,ich,patient_id\n" + rows[2] + "\n")
    return folder / "train.csv", folder / "val.csv", masks


def main(argv: Sequence[str]) -> int:
    """Run ``train --model sammed3d`` with ``argv`` after ``train``; returns the exit status."""
    from segloop.errors import SegloopError

    args = build_parser().parse_args(list(argv))
    try:
        return _run(args)
    except SegloopError as exc:
        print(f"segloop: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    from segloop.errors import InputError
    from segloop.train.sammed3d.data import check_rows

    if args.visual_tokens < 0 or args.visual_token_count < 1:
        raise InputError("--visual_tokens must be >= 0 and --visual_token_count >= 1")
    if args.num_workers < 0:
        raise InputError(f"--num_workers must be >= 0, got {args.num_workers}")
    sources = [n for n, v in (("--train_csv", args.train_csv), ("--manifest", args.manifest),
                              ("--from-datastore", args.from_datastore)) if v is not None]
    if len(sources) > 1:
        raise InputError(f"give one data source, not {' and '.join(sources)}")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model.split("@")[0]
        model = "sam-med3d-turbo" if model == "sammed3d" else model
        if args.test:
            if not sources:
                args.train_csv, args.val_csv, args.mask_dir = _synthetic(Path(tmp) / "data")
            if args.output_dir == Path("outputs"):  # a system check leaves nothing behind
                args.output_dir = Path(tmp) / "outputs"
                args.name = args.name or ""
            from segloop.models.store import is_available

            if not is_available(model):
                print(f"--test: {model} is not cached; using a tiny random model")
                model = "tiny"
        train, val = _rows(args)
        problems = check_rows(train, val)
        if problems:
            for line in problems:
                print(f"segloop: bad row: {line}", file=sys.stderr)
            raise InputError(f"{len(problems)} problem(s) in the data (listed above); fix them first")
        print(f"data OK: {len(train)} training and {len(val)} validation rows")
        from segloop.train.sammed3d.loop import SamMed3DTrainOptions, SchedulerType, train_sammed3d

        opts = SamMed3DTrainOptions(
            output_dir=args.output_dir, model=model, epochs=1 if args.test else args.epochs,
            batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
            use_mixed_precision=args.use_mixed_precision,
            gradient_accumulation_steps=max(1, args.gradient_accumulation_steps),
            scheduler_type=SchedulerType(args.scheduler_type), patience=args.patience,
            max_grad_norm=args.max_grad_norm, freeze_encoder=args.freeze_encoder,
            use_gradient_checkpointing=args.use_gradient_checkpointing,
            clicks=2 if args.test else args.clicks, use_wandb=args.use_wandb,
            wandb_project=args.wandb_project, log_images=args.log_images, log_freq=args.log_freq,
            device=args.device, seed=args.seed, resume=args.resume, num_workers=args.num_workers,
            visual_tokens=args.visual_tokens, visual_token_count=args.visual_token_count,
            run_name=(Path(args.output_dir).resolve().name if args.name is None else args.name) or None)
        for w in opts.warnings():
            print(f"warning: {w}")
        summary = train_sammed3d(opts, train, val, on_log=print)
        outs = sorted(p.name for p in Path(args.output_dir).iterdir())
        print(f"done: {summary['epochs_run']} epoch(s), best val Dice {summary['best_val_dice']:.4f};"
              f" {args.output_dir}: {', '.join(outs)}")
    return 0


def _rows(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    """Training and validation rows of the chosen source (seed CSVs, a manifest, the datastore)."""
    from segloop.errors import InputError
    from segloop.train.sammed3d.data import manifest_rows, read_seed_csv

    if args.manifest is not None or args.from_datastore is not None:
        if args.manifest is not None:
            manifest, root = args.manifest, args.root
        else:
            from segloop.train.data import datastore_manifest

            if args.from_datastore:
                store = Path(args.from_datastore)
            else:
                from segloop.config import load_settings

                store = Path(load_settings().datastore_dir)
            manifest, root = datastore_manifest(store), store
        train, val = manifest_rows(manifest, root, args.val_fraction, args.seed)
        if not val:
            print("warning: one patient only (or --val-fraction 0): no validation rows")
        return train, val
    if args.train_csv is None or args.mask_dir is None:
        raise InputError("give --train_csv and --mask_dir, --manifest CSV or --from-datastore"
                         " (or --test for a synthetic check)")
    train = read_seed_csv(args.train_csv, args.mask_dir)
    val = read_seed_csv(args.val_csv, args.mask_dir) if args.val_csv else []
    return train, val
