"""Uploads are self-contained: a header naming a data file outside the upload is refused (4xx)
and the named file's bytes are never served; multi-file images come as one .zip (issue 9,
items 1 and 13). Each test drives a real ``segloop serve`` process over HTTP."""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from segloop.io import load_volume

from .live import Server, nifti_bytes

#: bytes a hostile header tries to read (48 = 4 x 3 x 2 voxels of int16)
SECRET = bytes(range(7, 55))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("selfcontained")
    with Server(root / "home") as s:
        yield s


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("victim") / "secret.bin"
    p.write_bytes(SECRET)
    link = p.parent / "innocent.raw"
    link.symlink_to(p)
    return p


def nrrd_header(target: str) -> bytes:
    return (f"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nencoding: raw\n"
            f"endian: little\ndata file: {target}\n").encode()


def mha_header(target: str) -> bytes:
    return (f"ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\n"
            f"ElementByteOrderMSB = False\nElementDataFile = {target}\n").encode()


def _targets(secret: Path, home: Path) -> list[str]:
    rel = os.path.relpath(secret, home / "jobs" / "x" / "source")
    return [str(secret), rel, "../" * 12 + str(secret).lstrip("/"),
            str(secret.parent / "innocent.raw"), "/proc/self/environ", "/etc/passwd",
            f"{secret.parent}/../{secret.parent.name}/secret.bin"]


def _assert_refused(server: Server, r: object, before: int) -> None:
    import httpx

    assert isinstance(r, httpx.Response)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert "self-contained" in body["detail"] or "data file" in body["detail"], body
    assert len(server.jobs()) == before  # no job: nothing of the target can be served
    assert server.leftovers() == []


@pytest.mark.parametrize("fmt", ["nrrd", "mha"])
def test_detached_header_refused(server: Server, secret: Path, fmt: str) -> None:
    before = len(server.jobs())
    for target in _targets(secret, server.home):
        head = nrrd_header(target) if fmt == "nrrd" else mha_header(target)
        for name in (f"scan.{'nhdr' if fmt == 'nrrd' else 'mhd'}", "scan.bin"):
            r = server.upload(head, name)
            _assert_refused(server, r, before)
            assert SECRET not in r.content


def test_other_jobs_file_refused(server: Server) -> None:
    """The attack of the issue: a header pointing at another user's uploaded volume."""
    vol = np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2) * 37
    r = server.upload(nifti_bytes(vol), "victim.nii")
    assert r.status_code == 201, r.text
    jid = r.json()["job_id"]
    before = len(server.jobs())
    for target in (f"../../../jobs/{jid}/source/upload.nii",
                   str(server.home / "jobs" / jid / "source" / "upload.nii"),
                   f"../../{jid}/source/upload.nii", str(server.home / "segloop.db")):
        for head in (mha_header(target), nrrd_header(target)):
            _assert_refused(server, server.upload(head, "x.mhd"), before)


def test_pair_header_without_data_refused(server: Server, tmp_path: Path) -> None:
    before = len(server.jobs())
    arr = np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    nib.save(nib.AnalyzeImage(arr, np.eye(4)), tmp_path / "a.hdr")
    nib.save(nib.Nifti1Pair(arr, np.eye(4)), tmp_path / "p.hdr")
    for name in ("a.hdr", "p.hdr"):
        r = server.upload((tmp_path / name).read_bytes(), name)
        assert 400 <= r.status_code < 500, r.text
        assert ".img" in r.json()["detail"]
    assert len(server.jobs()) == before


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _sitk_image() -> sitk.Image:
    arr = (np.arange(5 * 4 * 3, dtype=np.int16).reshape(3, 4, 5) * 11 - 300)  # (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((10.0, -4.0, 7.5))
    return img


@pytest.mark.parametrize("ext", ["mhd", "nhdr", "hdr"])
def test_multi_file_zip_accepted(server: Server, tmp_path: Path, ext: str) -> None:
    """A header and its data file inside one zip: read, geometry as the CLI reads the files."""
    sitk.WriteImage(_sitk_image(), str(tmp_path / f"scan.{ext}"))
    files = {f"case/{p.name}": p.read_bytes() for p in tmp_path.iterdir()}
    assert len(files) == 2, files.keys()
    r = server.upload(_zip(files), "case.zip")
    assert r.status_code == 201, r.text
    jid = r.json()["job_id"]
    got = nib.Nifti1Image.from_bytes(  # served uncompressed
        server.client.get(f"/api/v1/jobs/{jid}/volume").content)
    want = load_volume(tmp_path / f"scan.{ext}").canonical()
    np.testing.assert_array_equal(np.asarray(got.dataobj), want.data)
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-4)
    # the result on the source grid re-reads the header from the job folder (data_root)
    res = server.client.get(f"/api/v1/jobs/{jid}/result")
    assert res.status_code == 200, res.text
    assert nib.Nifti1Image.from_bytes(gzip.decompress(res.content)).shape == (5, 4, 3)
    # the job's files carry only generated names
    names = sorted(p.name for p in (server.home / "jobs" / jid / "source").rglob("*"))
    assert set(names) <= {"image", f"image.{ext}", "image.raw", "image.img"}, names


def test_analyze_zip_accepted(server: Server, tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    nib.save(nib.AnalyzeImage(arr, np.diag([2.0, 3.0, 4.0, 1.0])), tmp_path / "a.hdr")
    r = server.upload(_zip({p.name: p.read_bytes() for p in tmp_path.iterdir()}), "a.zip")
    assert r.status_code == 201, r.text
    assert r.json()["source_format"] == "analyze"


@pytest.mark.parametrize("header", ["scan.mhd", "scan.nhdr"])
def test_zip_header_escaping_refused(server: Server, secret: Path, header: str) -> None:
    before = len(server.jobs())
    make = mha_header if header.endswith("mhd") else nrrd_header
    for target in [*_targets(secret, server.home), "../../scan.raw", "sub/../../../scan.raw",
                   "missing.raw", "LIST", "slice%03d.raw 1 2 1", header.split("/")[-1]]:
        data = _zip({f"d/{header}": make(target), "d/scan.raw": b"\0" * 48, "scan.raw": SECRET})
        r = server.upload(data, "case.zip")
        assert 400 <= r.status_code < 500, (target, r.text)
        assert SECRET not in r.content
        assert len(server.jobs()) == before
    assert server.leftovers() == []


def test_zip_pair_without_img_refused(server: Server, tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    nib.save(nib.AnalyzeImage(arr, np.eye(4)), tmp_path / "a.hdr")
    r = server.upload(_zip({"a.hdr": (tmp_path / "a.hdr").read_bytes(),
                            "b.img": (tmp_path / "a.img").read_bytes()}), "a.zip")
    assert 400 <= r.status_code < 500 and ".img" in r.json()["detail"], r.text


@pytest.mark.parametrize("ext", ["gipl", "gipl.gz", "vtk"])
def test_single_file_formats_accepted(server: Server, tmp_path: Path, ext: str) -> None:
    """ITK-SNAP GIPL and VTK uploads (issue 9 item 13); the file's name plays no part."""
    sitk.WriteImage(_sitk_image(), str(tmp_path / f"scan.{ext}"))
    r = server.upload((tmp_path / f"scan.{ext}").read_bytes(), "noname")
    assert r.status_code == 201, r.text
    assert r.json()["shape"] == [5, 4, 3]


def test_header_tricks_refused(server: Server, secret: Path) -> None:
    """Spellings a reader still understands: long comment padding, ':' separators, tabs,
    repeated fields, an HDF5 or zip file posing as a member of a multi-file upload."""
    before = len(server.jobs())
    pad = "".join(f"# {'x' * 70}\n" for _ in range(1200))  # > 64 KiB of comments
    heads = [
        nrrd_header(str(secret)).replace(b"type:", pad.encode() + b"type:"),
        nrrd_header(str(secret)).replace(b"data file:", b"\tdata   file :"),
        nrrd_header("LOCAL").replace(b"data file: LOCAL\n", b"datafile: " + str(secret).encode()
                                     + b"\n"),
        mha_header(str(secret)).replace(b"ElementDataFile =", b"ElementDataFile:"),
        mha_header("LOCAL") + b"ElementDataFile = " + str(secret).encode() + b"\n",
        mha_header(str(secret)).replace(b"ElementDataFile", b"elementdatafile"),
    ]
    for head in heads:
        r = server.upload(head, "x.nhdr")
        assert 400 <= r.status_code < 500, (head[:60], r.text)
        assert SECRET not in r.content
        data = _zip({"x.nhdr" if head.startswith(b"NRRD") else "x.mhd": head, "x.raw": SECRET})
        r = server.upload(data, "x.zip")
        assert r.status_code in (201, 413, 415, 422), r.text
        if r.status_code == 201:  # read from the zip's own member, never the server's file
            jid = r.json()["job_id"]
            assert (server.home / "jobs" / jid / "source" / "image" / "image.raw").read_bytes() \
                == SECRET
            server.client.delete(f"/api/v1/jobs/{jid}")
    inner = _zip({"a.dcm": b"\0" * 100})
    r = server.upload(_zip({"x.nii": inner}), "x.zip")
    assert 400 <= r.status_code < 500, r.text
    assert len(server.jobs()) == before
