"""``segloop models``: list, pull, verify, import and remove cached model weights.

Thin wrapper over :mod:`segloop.models`; the terminal output (tables, progress bar) lives here.
torch is imported only by ``import --convert`` (conversion check).
Part of the CLI, the top layer: library code must not import it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from segloop.errors import SegloopError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``models`` subcommand and its actions."""
    p: argparse.ArgumentParser = sub.add_parser(
        "models", help="manage model weights (list, pull, verify, import, remove)"
    )
    act = p.add_subparsers(dest="models_command", metavar="ACTION")
    ls = act.add_parser("list", help="known models and what is cached")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)
    pl = act.add_parser("pull", help="download a model's checkpoint (resumable, verified)")
    pl.add_argument("name")
    pl.add_argument("--force", action="store_true", help="download again even when cached")
    pl.add_argument("--quiet", action="store_true", help="no progress bar")
    pl.set_defaults(func=_pull)
    vf = act.add_parser("verify", help="re-hash a cached checkpoint against its SHA-256")
    vf.add_argument("name")
    vf.set_defaults(func=_verify)
    im = act.add_parser("import", help="cache a local checkpoint (.pt or transformers folder)")
    im.add_argument("path", type=Path)
    im.add_argument("--as", dest="name", required=True, help="registry name, e.g. medsam2")
    im.add_argument("--config", type=Path, default=None,
                    help="JSON file of Sam2VideoConfig fields (a custom architecture)")
    im.add_argument("--convert", action="store_true",
                    help="convert to transformers format now (checks every key and shape)")
    im.set_defaults(func=_import)
    rm = act.add_parser("remove", help="delete a cached model")
    rm.add_argument("name")
    rm.set_defaults(func=_remove)

    def _help(_args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)


def _list(args: argparse.Namespace) -> int:
    from segloop.models import model_names, status
    from segloop.models.versions import register_saved_runs

    register_saved_runs()  # fine-tuned ENGINE@RUN models cached by `segloop train`
    rows: list[dict[str, Any]] = []
    for name in model_names():
        st = status(name)
        rows.append({
            "name": st.spec.name,
            "aliases": list(st.spec.aliases),
            "cached": st.available,
            "converted": st.converted,
            "size": st.size if st.size is not None else st.spec.size,
            "licence": st.spec.licence,
            "source": st.spec.source_text(),
            "description": st.spec.description,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        alias = f" ({', '.join(r['aliases'])})" if r["aliases"] else ""
        size = f"{r['size'] / 1e6:.0f} MB" if r["size"] else "?"
        state = "cached" if r["cached"] else "-"
        print(f"{r['name']}{alias}\t{state}\t{size}\t{r['licence']}\t{r['source']}"
              f"\t{r['description']}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from segloop.models import pull

    path = pull(args.name, progress=not args.quiet, force=args.force)
    print(f"{args.name}: cached at {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from segloop.models import verify

    print(verify(args.name))
    return 0


def _import(args: argparse.Namespace) -> int:
    from segloop.models import get_spec, import_model

    config = None
    if args.config is not None:
        try:
            config = json.loads(args.config.read_text())
        except (OSError, ValueError) as exc:
            raise SegloopError(f"cannot read the config {args.config}: {exc}") from exc
        if not isinstance(config, dict):
            raise SegloopError(f"{args.config} must hold a JSON object of config fields")
    d = import_model(args.path, args.name, config=config)
    if args.convert and get_spec(args.name).engine == "sammed3d":
        # SAM-Med3D runs on segloop's own model: the check is a strict load, nothing to convert
        from segloop.engines.sammed3d.convert import load_model_file
        from segloop.engines.sammed3d.model import SamMed3DConfig
        from segloop.models.store import checkpoint_path, model_config

        load_model_file(checkpoint_path(args.name), SamMed3DConfig.from_dict(model_config(args.name)))
    elif args.convert and get_spec(args.name).engine == "ism":
        # the ISM backends convert an original-layout .pth on load: the check is a strict load
        from segloop.ism.sam_backend import load_named

        load_named(args.name)
    elif args.convert:
        from segloop.models.loader import ensure_converted

        ensure_converted(args.name)
    print(f"{args.name}: imported into {d}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from segloop.models import remove

    print(f"{args.name}: {'removed' if remove(args.name) else 'nothing cached'}")
    return 0
