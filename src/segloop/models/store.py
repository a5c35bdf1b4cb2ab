"""The local model cache under ``$SEGLOOP_HOME/models`` (default ``~/.segloop/models``).

Layout of one model ``<name>/``: ``checkpoint.pt`` (the original-format file, as downloaded or
imported), ``meta.json`` (where it came from, its size and SHA-256, an optional config), and
``hf/`` (``config.json`` + ``model.safetensors``: the converted ``transformers`` weights, written
on first load so later loads are instant). A model imported in ``transformers`` format has only
``hf/``. Writes go to a temporary name first and are renamed into place durably
(:mod:`segloop.fsio`). ``models_home`` (:mod:`segloop.models.paths`) is re-exported here.

Must not import torch (conversion and loading live in :mod:`segloop.models.loader`, imported
lazily) nor :mod:`segloop.models.versions` (it imports this one).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segloop.errors import ModelNotAvailableError, SegloopError
from segloop.fsio import atomic_write_text, replace_dir, replace_file
from segloop.models.download import download, sha256_file
from segloop.models.paths import CHECKPOINT, HF_DIR, META, models_home
from segloop.models.registry import ModelSpec, get_spec

__all__ = [
    "ModelStatus",
    "checkpoint_path",
    "hf_dir",
    "import_model",
    "is_available",
    "model_config",
    "model_dir",
    "models_home",
    "not_cached_message",
    "pull",
    "read_meta",
    "remove",
    "status",
    "verify",
]

log = logging.getLogger(__name__)

def model_dir(name: str) -> Path:
    """The cache folder of a registry entry (by name or alias)."""
    return models_home() / get_spec(name).name


def checkpoint_path(name: str) -> Path:
    """Where the original-format checkpoint of ``name`` is kept."""
    return model_dir(name) / CHECKPOINT


def hf_dir(name: str) -> Path:
    """Where the converted ``transformers`` weights of ``name`` are kept."""
    return model_dir(name) / HF_DIR


def read_meta(name: str) -> dict[str, Any]:
    """The recorded metadata of a cached model ({} when none)."""
    p = model_dir(name) / META
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_meta(name: str, meta: dict[str, Any]) -> None:
    d = model_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / META, json.dumps(meta, indent=2, sort_keys=True))


def model_config(name: str) -> dict[str, Any]:
    """The ``Sam2VideoConfig`` kwargs for ``name``: the one recorded at import, else the registry's."""
    cfg = read_meta(name).get("config")
    return dict(cfg) if isinstance(cfg, dict) else dict(get_spec(name).config)


def _hf_complete(d: Path) -> bool:
    return (d / "config.json").is_file() and (d / "model.safetensors").is_file()


def is_available(name: str) -> bool:
    """True when weights for ``name`` are cached (original checkpoint or converted). Cheap."""
    try:
        return checkpoint_path(name).is_file() or _hf_complete(hf_dir(name))
    except SegloopError:
        return False


def not_cached_message(name: str) -> str:
    """The error text telling a person how to get the weights of ``name``."""
    return (f"weights not cached: run `segloop models pull {name}` or"
            f" `segloop models import FILE --as {name}`")


@dataclass(frozen=True)
class ModelStatus:
    """What the cache holds for one registry entry."""

    spec: ModelSpec
    available: bool
    checkpoint: Path | None
    converted: bool
    size: int | None
    sha256: str | None
    origin: str | None


def status(name: str) -> ModelStatus:
    """The cache status of ``name`` (no hashing: reads the recorded metadata)."""
    spec = get_spec(name)
    ck = checkpoint_path(name)
    meta = read_meta(name)
    return ModelStatus(
        spec=spec,
        available=is_available(name),
        checkpoint=ck if ck.is_file() else None,
        converted=_hf_complete(hf_dir(name)),
        size=ck.stat().st_size if ck.is_file() else meta.get("size"),
        sha256=meta.get("sha256"),
        origin=meta.get("origin"),
    )


def pull(name: str, *, progress: bool = False, force: bool = False, retries: int = 3) -> Path:
    """Download the checkpoint of ``name`` into the cache (resuming); return its path.

    Verified against the registry's size and SHA-256 when published, otherwise the digest is
    recorded for later ``verify``. Does nothing when already cached unless ``force``.
    """
    spec = get_spec(name)
    dest = checkpoint_path(name)
    if dest.is_file() and not force:
        log.info("%s already cached at %s", spec.name, dest)
        return dest
    url = spec.source_url()
    digest = download(url, dest, expected_size=spec.size, expected_sha256=spec.sha256,
                      progress=progress, retries=retries)
    shutil.rmtree(hf_dir(name), ignore_errors=True)  # stale conversion of an older file
    _write_meta(name, {"origin": url, "sha256": digest, "size": dest.stat().st_size})
    return dest


def import_model(path: Path, name: str, *, config: dict[str, Any] | None = None,
                 copy: bool = True) -> Path:
    """Put a local checkpoint into the cache as ``name``; return the cached path.

    ``path`` is an original-format ``.pt`` (``{"model": state_dict}``) or a folder in
    ``transformers`` format (``config.json`` + ``model.safetensors``). ``config`` overrides the
    registry's ``Sam2VideoConfig`` kwargs (e.g. a custom or fine-tuned architecture). When the
    registry publishes a SHA-256 and the file differs, it is still imported (a fine-tuned
    model) and a warning is logged; the file's own digest is recorded for ``verify``.
    """
    spec = get_spec(name)
    path = Path(path)
    d = model_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        if not _hf_complete(path):
            raise ModelNotAvailableError(
                f"{path} is a folder but not a transformers model: it needs config.json and"
                " model.safetensors"
            )
        tmp = Path(tempfile.mkdtemp(dir=d, prefix=".import-"))
        for f in ("config.json", "model.safetensors"):
            shutil.copy2(path / f, tmp / f)
        checkpoint_path(name).unlink(missing_ok=True)
        replace_dir(tmp, hf_dir(name), overwrite=True)
        meta: dict[str, Any] = {"origin": f"import:{path.resolve()}", "format": "transformers",
                                "sha256": sha256_file(hf_dir(name) / "model.safetensors")}
    elif path.is_file():
        _check_checkpoint_file(path)
        digest = sha256_file(path)
        if spec.sha256 and digest != spec.sha256:
            log.warning("%s differs from the published %s (SHA-256 %s): imported anyway",
                        path, spec.name, digest)
        dest = checkpoint_path(name)
        tmpf = dest.with_name(dest.name + ".import")
        if copy:
            shutil.copyfile(path, tmpf)
        else:
            shutil.move(str(path), tmpf)
        replace_file(tmpf, dest)
        shutil.rmtree(hf_dir(name), ignore_errors=True)
        meta = {"origin": f"import:{path.resolve()}", "sha256": digest,
                "size": dest.stat().st_size}
    else:
        raise ModelNotAvailableError(f"{path} does not exist: give a checkpoint file or folder")
    if config is not None:
        meta["config"] = config
    _write_meta(name, meta)
    return d


def _check_checkpoint_file(path: Path) -> None:
    """Refuse a file that cannot be a PyTorch checkpoint (``torch.save``'s zip with a
    ``data.pkl`` member, or a legacy pickle), before it is copied into the cache."""
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                if any(n.endswith("data.pkl") for n in zf.namelist()):
                    return
        except zipfile.BadZipFile:
            pass
    elif head[:1] == b"\x80":  # a pickle (protocol 2+): torch's legacy format
        return
    raise ModelNotAvailableError(
        f"{path} is not a PyTorch checkpoint (no torch.save zip or pickle inside): give the"
        " .pt/.pth file the model was published as, or a transformers folder"
    )


def verify(name: str) -> str:
    """Re-hash the cached checkpoint and compare with the expected size/SHA-256; return a summary.

    Raises ModelNotAvailableError when nothing is cached or the file does not match.
    """
    spec = get_spec(name)
    if not is_available(name):
        raise ModelNotAvailableError(f"{spec.name}: {not_cached_message(name)}")
    meta = read_meta(name)
    ck = checkpoint_path(name)
    target = ck if ck.is_file() else hf_dir(name) / "model.safetensors"
    digest = sha256_file(target)
    size = target.stat().st_size
    imported = str(meta.get("origin", "")).startswith("import:")
    expected = meta.get("sha256") if imported or not spec.sha256 else spec.sha256
    if ck.is_file() and spec.size is not None and not imported and size != spec.size:
        raise ModelNotAvailableError(
            f"{spec.name}: {target} has {size} bytes, expected {spec.size}: run"
            f" `segloop models pull {name} --force`"
        )
    if expected and digest != expected:
        raise ModelNotAvailableError(
            f"{spec.name}: {target} is corrupted (SHA-256 {digest}, expected {expected}): run"
            f" `segloop models pull {name} --force` or import the file again"
        )
    return f"{spec.name}: OK ({size} bytes, sha256 {digest})"


def remove(name: str) -> bool:
    """Delete everything cached for ``name``; True when something was removed."""
    d = model_dir(name)
    if not d.exists():
        return False
    shutil.rmtree(d)
    return True
