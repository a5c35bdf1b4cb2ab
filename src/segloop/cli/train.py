"""``segloop train``: fine-tune a SAM 2-family model on 2D folders, a 3D manifest or the datastore.

Owns the terminal for this command (tqdm bars with ETA, the final table); the work is done by
:func:`segloop.train.trainer.train`. torch is imported only when the command runs.
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from segloop.errors import SegloopError

__all__ = ["build_config", "register", "run", "run_eval2d"]


def register(sub: Any) -> None:
    """Add the ``train`` subcommand to an argparse subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "train",
        help="fine-tune medsam2 / sam2.1-* on 2D folders, a 3D manifest or reviewed masks",
        description=(
            "Fine-tune a SAM 2-family model. Data: --images DIR --masks DIR (2D; train/ and val/ "
            "sub-folders or --val-fraction), --manifest CSV [--root DIR] (3D volumes, the "
            "`segloop eval` manifest format) or --from-datastore (masks reviewed in the server). "
            "Train/validation are split by patient. Writes checkpoints, curves, TensorBoard logs "
            "and a summary to --out, and registers the result as the model ENGINE@RUN."
        ),
    )
    d = p.add_argument_group("data")
    d.add_argument("--images", type=Path, help="2D image folder (png/jpg/tif)")
    d.add_argument("--masks", type=Path, help="2D mask folder (same file names as --images)")
    d.add_argument("--manifest", type=Path, help="3D manifest CSV (case_id,image,label,...)")
    d.add_argument("--npy-dir", type=Path, help="MedSAM's npy layout (imgs/, gts/): trains MedSAM")
    d.add_argument("--pretrained", type=Path, help="--npy-dir: start from this MedSAM .pth")
    d.add_argument("--batch-size", type=int, default=2, help="--npy-dir: images per step")
    d.add_argument("--root", type=Path, help="folder the manifest's paths are relative to")
    d.add_argument("--from-datastore", nargs="?", const="", default=None, metavar="DIR",
                   help="train on the server's reviewed masks (default: $SEGLOOP_HOME/datastore)")
    d.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of patients held out for validation (default 0.2)")
    d.add_argument("--patient-pattern", metavar="REGEX",
                   help="2D: regex whose first group in a file name is the patient id")
    d.add_argument("--clip-length", type=int, default=3,
                   help="3D: consecutive slices per sample (default 3; 1 = no memory)")
    d.add_argument("--window", default="auto", help="CT window: preset, 'L,W' or auto")
    d.add_argument("--box-jitter", type=float, default=0.1,
                   help="box sides move by up to this fraction of the box size (default 0.1)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None,
                   help="starting weights: a registry name (default medsam2) or 'tiny' (random)")
    m.add_argument("--image-size", type=int, default=64,
                   help="input size of a tiny random model (registry models use their own)")
    m.add_argument("--train", dest="parts", default=None, metavar="PARTS",
                   help="comma list of mask-decoder,prompt-encoder,memory,image-encoder (default:"
                        " mask-decoder,prompt-encoder, plus memory for 3D)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=10)
    o.add_argument("--samples-per-epoch", type=int, default=0,
                   help="cap on samples per epoch (default: every slice with the target)")
    o.add_argument("--val-samples", type=int, default=0, help="cap on validation samples")
    o.add_argument("--accumulate", type=int, default=1, help="samples per optimiser step")
    o.add_argument("--lr", type=float, default=1e-4)
    o.add_argument("--weight-decay", type=float, default=0.01)
    o.add_argument("--dice-weight", type=float, default=1.0, help="weight of the Dice term")
    o.add_argument("--clip-grad", type=float, default=1.0, help="max gradient norm (0: off)")
    o.add_argument("--scheduler", choices=["plateau", "cosine", "step", "none"], default="plateau")
    o.add_argument("--step-size", type=int, default=5, help="step scheduler: epochs per decay")
    o.add_argument("--gamma", type=float, default=0.5, help="step/plateau decay factor")
    o.add_argument("--patience", type=int, default=0,
                   help="early stop after N epochs without a better val IoU (0: never)")
    o.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    o.add_argument("--grad-checkpointing", action="store_true",
                   help="recompute transformer activations in backward (less memory)")
    o.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda:0, ...")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    r = p.add_argument_group("run")
    r.add_argument("--out", type=Path, required=True, help="run folder")
    r.add_argument("--name", default=None, help="run name (default: the --out folder name)")
    r.add_argument("--resume", action="store_true", help="continue from --out/latest.pt")
    r.add_argument("--smoke", action="store_true",
                   help="a quick check of the whole path (2 short epochs; a tiny random model"
                        " when no weights are cached)")
    r.add_argument("--no-register", action="store_true", help="do not register the result")
    r.add_argument("--wandb", action="store_true", help="log to Weights & Biases (if installed)")
    r.add_argument("--mlflow", action="store_true", help="log to MLflow (if installed)")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=run)

    e: argparse.ArgumentParser = sub.add_parser(
        "eval2d",
        help="mean IoU per model on 2D image/mask folders (box prompts), side by side",
        description=(
            "Prompt every image of --images (its val/ sub-folder when present) with the box of "
            "its mask in --masks and report mean IoU and Dice per model, with deltas against "
            "the first. Models: registry names (medsam2, sam2.1-tiny, medsam2@RUN), run folders "
            "or run checkpoints."
        ),
    )
    e.add_argument("--images", type=Path, required=True)
    e.add_argument("--masks", type=Path, required=True)
    e.add_argument("--engine", "--model", action="append", dest="models", required=True,
                   metavar="MODEL", help="model to evaluate; repeat to compare")
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--csv", type=Path, default=None, help="write per-image scores here")
    e.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    e.set_defaults(func=run_eval2d)


def run_eval2d(args: argparse.Namespace) -> int:
    """Handler of ``segloop eval2d``: prints the table (and writes the CSV when asked)."""
    import csv

    from tqdm import tqdm

    from segloop.train.eval2d import evaluate_folders, format_table

    bars: dict[str, Any] = {}

    def on_progress(model: str, done: int, total: int) -> None:
        if args.quiet:
            return
        bar = bars.get(model)
        if bar is None:
            for b in bars.values():
                b.close()
            bar = bars[model] = tqdm(total=total, desc=model, unit="image", file=sys.stderr,
                                     leave=False)
        bar.update(done - bar.n)

    try:
        result = evaluate_folders(args.images, args.masks, args.models, device=args.device,
                                  threads=args.threads, on_progress=on_progress,
                                  figures=getattr(args, "figures", None))
    finally:
        for b in bars.values():
            b.close()
    print(format_table(result))
    if getattr(args, "compare", False) and len(result.models) == 2:
        from segloop.train.eval2d_figures import format_comparison

        print()
        print(format_comparison(result.summary, *result.models))
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["model", "image", "iou", "dice"])
            w.writeheader()
            w.writerows(result.rows)
    return 0


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~segloop.train.config.TrainConfig` of parsed arguments."""
    from segloop.io.windowing import check_window
    from segloop.train.config import DEFAULT_PARTS_2D, TrainConfig, parse_parts

    datastore = None
    if args.from_datastore is not None:
        if args.from_datastore:
            datastore = str(args.from_datastore)
        else:
            from segloop.config import load_settings

            datastore = str(load_settings().datastore_dir)
    parts = ([p.value for p in parse_parts(args.parts, DEFAULT_PARTS_2D)] if args.parts
             else None)
    return TrainConfig(
        out=str(args.out), images=str(args.images) if args.images else None,
        masks=str(args.masks) if args.masks else None,
        manifest=str(args.manifest) if args.manifest else None,
        root=str(args.root) if args.root else None, datastore=datastore,
        val_fraction=args.val_fraction, patient_pattern=args.patient_pattern,
        clip_length=args.clip_length,
        window=None if args.window == "none" else check_window(args.window),
        model=args.model or "medsam2", image_size=args.image_size, parts=parts,
        epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
        val_samples=args.val_samples, accumulate=args.accumulate, lr=args.lr,
        weight_decay=args.weight_decay, clip_grad=args.clip_grad, scheduler=args.scheduler,
        step_size=args.step_size, gamma=args.gamma, patience=args.patience,
        precision=args.precision, grad_checkpointing=args.grad_checkpointing,
        device=args.device, seed=args.seed, threads=args.threads, smoke=args.smoke,
        box_jitter=args.box_jitter, dice_weight=args.dice_weight,
        run_name=args.name, register=not args.no_register, wandb=args.wandb, mlflow=args.mlflow,
    )


def _is_medsam(model: str | None) -> bool:
    """Whether ``--model`` names a MedSAM (v1) model: ``medsam``, ``medsam@RUN``, ..."""
    if not model or model == "tiny":
        return False
    from segloop.models.registry import get_spec

    try:
        return get_spec(model).engine == "medsam"
    except SegloopError:
        return False  # the SAM 2 path gives the unknown-model error


def run(args: argparse.Namespace) -> int:
    """Handler of ``segloop train``; prints the before/after table and the run folder."""
    if args.npy_dir is not None or _is_medsam(args.model):
        from segloop.cli.train_medsam import run_medsam_train

        return run_medsam_train(args)
    from tqdm import tqdm

    from segloop.train.trainer import Progress, train

    cfg = build_config(args)
    bars: dict[str, Any] = {}

    def on_progress(p: Progress) -> None:
        if args.quiet:
            return
        if p.phase == "epoch":
            for b in bars.values():
                b.close()
            bars.clear()
            s = p.metrics
            tqdm.write(f"epoch {p.epoch}/{p.epochs}: train loss {p.loss:.4f}  val loss"
                       f" {s.get('val_loss', 0):.4f}  val IoU {s.get('val_iou', 0):.4f}",
                       file=sys.stderr)
            return
        key = f"{p.phase}{p.epoch}"
        bar = bars.get(key)
        if bar is None:
            for k in list(bars):
                bars.pop(k).close()
            desc = "validate base" if p.epoch == 0 else f"{p.phase} {p.epoch}/{p.epochs}"
            bar = bars[key] = tqdm(total=p.total, desc=desc, unit="clip", file=sys.stderr,
                                   dynamic_ncols=True, leave=False)
        if p.loss is not None:
            bar.set_postfix_str(f"loss {p.loss:.4f}", refresh=False)
        bar.update(max(p.done - bar.n, 0))

    try:
        result = train(cfg, resume=args.resume, on_progress=on_progress)
    finally:
        for b in bars.values():
            b.close()
    s = result.summary
    before, best = s["before"], s["best"]
    print(f"{'model':<28} {'val IoU':>8} {'val Dice':>9}")
    print(f"{s['base_model'] + ' (before)':<28} {before['val_iou']:>8.4f} {before['val_dice']:>9.4f}")
    name = result.model_name or f"run {s['run']}"
    print(f"{name + ' (best epoch ' + str(best['epoch']) + ')':<28} {best['val_iou']:>8.4f}"
          f" {best['val_dice']:>9.4f}")
    print(f"delta{'':<23} {best['val_iou'] - before['val_iou']:>+8.4f}"
          f" {best['val_dice'] - before['val_dice']:>+9.4f}")
    if best["val_iou"] <= before["val_iou"]:
        print("note: the fine-tuned model is not better than the base model on validation",
              file=sys.stderr)
    if s.get("val_is_train"):
        print("note: one patient only, validated on the training data", file=sys.stderr)
    print(f"run folder: {result.run_dir} (summary.json, curves.png, best.pt, tensorboard/)")
    if result.model_name:
        print(f"registered as model {result.model_name} (see `segloop models list`)")
    return 0
