"""Ingest on the way to a fast first image: the reader process is started before the first
upload, the canonical volume is stored uncompressed beside an uncompressed preview, each file
of the job is flushed to disk once, and the data of both are the upload's (real CT from
../shared/data, a real spawned ingest process)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient

from realdata import need_shared_data
from segloop.api import create_app
from segloop.config import load_settings
from segloop.jobs import files
from segloop.jobs.ingest import IngestPool

CT = ("totalseg", "example_ct_sm.nii.gz")


def test_the_api_starts_its_ingest_process_before_any_upload(tmp_path: Path) -> None:
    settings = load_settings(None, home=tmp_path / "home", json_logs=False)
    app = create_app(settings)
    svc = app.state.services
    assert not svc.ingest.started
    with TestClient(app):
        assert svc.ingest.started, "the first upload would wait for a Python start"
    assert not svc.ingest.started  # closed with the app


def test_the_canonical_volume_is_stored_uncompressed_with_a_preview(
        tmp_path: Path, monkeypatch: Any) -> None:
    src = need_shared_data().joinpath(*CT)
    up = tmp_path / "upload"
    shutil.copy(src, up)
    # the real CT is small: lower the preview threshold so this one gets a preview too
    monkeypatch.setattr(files, "PREVIEW_MIN_VOXELS", 1000)
    monkeypatch.setattr(files, "PREVIEW_VOXELS", 20_000)
    lim = files.UploadLimits(max_voxels=1 << 28, max_volume_bytes=1 << 31,
                             max_zip_entries=100)
    pool = IngestPool(0)  # in this process, so the patched threshold applies
    info = pool(up, tmp_path / "job", lim)
    path = files.canonical_path(tmp_path / "job")
    assert path.name == "canonical.nii"
    with open(path, "rb") as fh:
        assert fh.read(2) != b"\x1f\x8b", "the canonical volume is gzip: ingest deflated it"
    img: Any = nib.load(str(path))
    ref: Any = nib.as_closest_canonical(nib.load(str(src)))
    assert list(img.shape) == info.shape
    assert np.array_equal(np.asarray(img.dataobj), np.asarray(ref.dataobj))
    prev_path = files.preview_path(tmp_path / "job")
    assert prev_path.name == "preview.nii"
    with open(prev_path, "rb") as fh:
        assert fh.read(2) != b"\x1f\x8b", "the preview is gzip: ingest deflated it"
    prev: Any = nib.load(str(prev_path))
    assert prev.shape[0] < img.shape[0]
    assert files.preview_path(tmp_path / "job").stat().st_mtime_ns <= path.stat().st_mtime_ns


def test_a_job_from_before_keeps_its_gzip_canonical(tmp_path: Path) -> None:
    jd = tmp_path / "old-job"
    jd.mkdir()
    (jd / "canonical.nii.gz").write_bytes(b"")
    assert files.canonical_path(jd).name == "canonical.nii.gz"
    (jd / "canonical.nii").write_bytes(b"")
    assert files.canonical_path(jd).name == "canonical.nii"


def test_a_new_job_flushes_each_of_its_files_to_disk_once(tmp_path: Path,
                                                          monkeypatch: Any) -> None:
    """Ingest writes the job folder unflushed and commits it with one flush of the whole tree
    (fsio.replace_dir) before the rename that makes it visible: the canonical volume and the
    preview are not flushed twice (once as temporaries, once in the tree), and none is missed."""
    import os

    from segloop import fsio
    from segloop.jobs.store import LOCAL_ADMIN, JobStore

    src = need_shared_data().joinpath(*CT)
    monkeypatch.setattr(files, "PREVIEW_MIN_VOXELS", 1000)
    monkeypatch.setattr(files, "PREVIEW_VOXELS", 20_000)
    flushed: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isfile(target):
            flushed.append(os.path.basename(target))
        real_fsync(fd)

    monkeypatch.setattr(fsio.os, "fsync", fsync)
    store = JobStore(load_settings(None, home=tmp_path / "home", json_logs=False))
    try:
        store.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        up = store.settings.tmp_dir / "upload"
        shutil.copy(src, up)
        flushed.clear()
        job = store.create_job(up, "ct.nii.gz", LOCAL_ADMIN)  # ingest in this process
        jd = store.job_dir(job.job_id)
        on_disk = sorted(p.name for p in jd.rglob("*") if p.is_file())
        assert "preview.nii" in on_disk and "canonical.nii" in on_disk
        assert sorted(flushed) == on_disk, "a file flushed twice, or not at all"
    finally:
        store.close()


def test_ingest_streams_the_volumes_to_their_files(tmp_path: Path, monkeypatch: Any) -> None:
    """The canonical volume and the preview go from the array to the file, never through a
    whole in-memory ``bytes`` copy (Nifti1Image.to_bytes: ~0.2 s of CPU for a 150 MB CT), and
    the files still hold the upload's voxels and grid."""
    src = need_shared_data().joinpath(*CT)
    up = tmp_path / "upload"
    shutil.copy(src, up)
    monkeypatch.setattr(files, "PREVIEW_MIN_VOXELS", 1000)
    monkeypatch.setattr(files, "PREVIEW_VOXELS", 20_000)

    def no_bytes(self: Any) -> bytes:
        raise AssertionError("ingest built the whole NIfTI in memory")

    monkeypatch.setattr(nib.Nifti1Image, "to_bytes", no_bytes)
    lim = files.UploadLimits(max_voxels=1 << 28, max_volume_bytes=1 << 31, max_zip_entries=100)
    IngestPool(0)(up, tmp_path / "job", lim)
    ref: Any = nib.as_closest_canonical(nib.load(str(src)))
    img: Any = nib.load(str(files.canonical_path(tmp_path / "job")))
    assert np.array_equal(np.asarray(img.dataobj), np.asarray(ref.dataobj))
    assert np.allclose(img.affine, ref.affine) and int(img.header["sform_code"]) == 1
    prev: Any = nib.load(str(files.preview_path(tmp_path / "job")))
    fx, fy, fz = files.preview_steps(img.shape) or (0, 0, 0)
    assert fz == 2 * fx and fy == fx > 1  # every 2f-th slice: half NiiVue's render passes
    assert np.array_equal(np.asarray(prev.dataobj), np.asarray(ref.dataobj)[::fx, ::fy, ::fz])
