"""Hostile client files on the two ways OHIF / 3D Slicer files reach the server: a label (``PUT
/api/v1/jobs/{id}/mask`` with a DICOM-SEG, MONAI Label's ``PUT /datastore/label`` with a SEG
or NIfTI) and MONAI Label's multi-file session upload (``PUT /session/``).

Each bad file gets a 4xx with a one-line message, the server keeps serving, and the job's saved
versions are untouched. One live `segloop serve` for the module (small upload limits)."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicomseries import write_series

from .conftest import Server, start_server

UPLOAD_LIMIT = 3 << 20
TIMEOUT = 300  # generous: the machine may be busy; a hang still fails


def _get(url: str, **kw: Any) -> httpx.Response:
    return httpx.get(url, timeout=TIMEOUT, **kw)


def _put(url: str, **kw: Any) -> httpx.Response:
    return httpx.put(url, timeout=TIMEOUT, **kw)

MAX_FILES = 24


@dataclass
class Env:
    srv: Server
    tmp: Path
    series: list[Path]  # series A, 6 slices of 24 x 20
    job: str  # a session job of series A, with a saved mask (version 1)
    image: str  # the datastore image of series A ("ct-a"), with a saved draft label
    image_job: str
    seg: bytes  # a valid DICOM-SEG of the session job's mask

    def versions(self, job: str) -> list[Any]:
        r = _get(f"{self.srv.url}/api/v1/jobs/{job}/versions")
        assert r.status_code == 200, r.text
        return [(v["version"], v["current"], v["reviewed"]) for v in r.json()]

    def mask(self, job: str) -> np.ndarray:
        r = _get(f"{self.srv.url}/api/v1/jobs/{job}/result", params={"format": "nii.gz"})
        assert r.status_code == 200, r.text
        img: Any = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
        return np.asarray(img.dataobj)


def _put_files(url: str, path: str, files: list[tuple[str, bytes]], field: str = "files",
               **params: str) -> httpx.Response:
    parts = [(field, (name, data, "application/octet-stream")) for name, data in files]
    return _put(f"{url}{path}", files=parts, params=params)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("hostile")
    srv = start_server(tmp / "home", SEGLOOP_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
                       SEGLOOP_MAX_ZIP_ENTRIES=str(MAX_FILES))
    try:
        series = write_series(tmp / "a", n=6, rows=24, cols=20)
        ml = f"{srv.url}/monailabel"
        r = _put_files(ml, "/session/", [(p.name, p.read_bytes()) for p in series])
        assert r.status_code == 200, r.text
        job = r.json()["session_info"]["meta"]["segloop_job"]
        r = _put_files(ml, "/datastore/", [(p.name, p.read_bytes()) for p in series],
                       image="ct-a")
        assert r.status_code == 200, r.text
        image_job = _get(f"{ml}/datastore/image/info", params={"image": "ct-a"}
                              ).json()["segloop_job"]
        # a first mask for both: a box on the canonical grid of the session job
        shape = tuple(_get(f"{srv.url}/api/v1/jobs/{job}").json()["shape"])
        lab = np.zeros(shape, np.uint8)
        lab[5:15, 4:12, 1:5] = 1
        body = _nifti(lab, np.eye(4))
        for j in (job, image_job):
            r = _put(f"{srv.url}/api/v1/jobs/{j}/mask", content=body)
            assert r.status_code == 200, r.text
        r = _get(f"{srv.url}/api/v1/jobs/{job}/result", params={"format": "dicom-seg"})
        assert r.status_code == 200, r.text
        yield Env(srv, tmp, series, job, "ct-a", image_job, r.content)
    finally:
        srv.stop()


def _nifti(lab: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(lab, affine)
    return gzip.compress(img.to_bytes())


def _refused(env: Env, r: httpx.Response, *jobs: str, before: dict[str, Any]) -> str:
    """A 4xx with a one-line message; the server answers; the jobs' versions are as before."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, detail
    assert "Traceback" not in detail and "internal error" not in detail.lower(), detail
    assert _get(f"{env.srv.url}/health").status_code == 200
    for j in jobs:
        assert (env.versions(j), env.mask(j).tobytes()) == before[j], f"job {j} changed"
    return detail


def _state(env: Env, *jobs: str) -> dict[str, Any]:
    return {j: (env.versions(j), env.mask(j).tobytes()) for j in jobs}


def _seg(env: Env, edit: Any) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(env.seg))
    edit(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# --------------------------------------------------------------------- labels: SEG and NIfTI

@pytest.fixture(scope="module")
def bad_labels(env: Env) -> dict[str, tuple[bytes, str]]:
    return _bad_labels(env)


@pytest.fixture(scope="module")
def nifti_cases(env: Env) -> dict[str, bytes]:
    return _nifti_cases(env)


def _bad_labels(env: Env) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, the file name a client sends)."""
    other = write_series(env.tmp / "far", n=3, rows=24, cols=20,
                         positions=[(500.0, 500.0, 900.0 + 2.5 * k) for k in range(3)])

    def other_frame(ds: Any) -> None:  # the same positions, another patient's frame of reference
        ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
        ds.ReferencedSeriesSequence[0].SeriesInstanceUID = pydicom.uid.generate_uid()

    def frames(ds: Any) -> None:
        ds.NumberOfFrames = 2_000_000_000

    def big_frames(ds: Any) -> None:  # honest header, far more pixels than any volume here
        ds.Rows, ds.Columns = 60_000, 60_000

    def seg_no(ds: Any) -> None:  # one segment: its number is in the shared groups
        ds.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence[0] \
            .ReferencedSegmentNumber = 300
        ds.SegmentSequence[0].SegmentNumber = 300

    def seg_missing(ds: Any) -> None:
        ds.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence[0] \
            .ReferencedSegmentNumber = 7

    def no_groups(ds: Any) -> None:
        del ds.PerFrameFunctionalGroupsSequence

    far_seg = _far_seg(env, other)
    return {
        "truncated SEG": (env.seg[: len(env.seg) * 2 // 3], "label.dcm"),
        "not a SEG (a CT slice)": (env.series[0].read_bytes(), "label.dcm"),
        "SEG of a series elsewhere": (far_seg, "label.dcm"),
        "SEG in another frame of reference": (_seg(env, other_frame), "label.dcm"),
        "SEG claiming 2e9 frames": (_seg(env, frames), "label.dcm"),
        "SEG of 60000 x 60000 frames": (_seg(env, big_frames), "label.dcm"),
        "segment number 300": (_seg(env, seg_no), "label.dcm"),
        "segment number not in SegmentSequence": (_seg(env, seg_missing), "label.dcm"),
        "SEG without per-frame groups": (_seg(env, no_groups), "label.dcm"),
        "deflate bomb SEG": (_deflate_bomb(env), "label.dcm"),
        "not a file at all": (b"hello, I am not a label\n" * 10, "label.dcm"),
    }


def _far_seg(env: Env, series: list[Path]) -> bytes:
    """A valid SEG of another series 500 mm away (made by segloop from its own job)."""
    url = env.srv.url
    r = _put_files(f"{url}/monailabel", "/session/", [(p.name, p.read_bytes()) for p in series])
    assert r.status_code == 200, r.text
    job = r.json()["session_info"]["meta"]["segloop_job"]
    shape = tuple(_get(f"{url}/api/v1/jobs/{job}").json()["shape"])
    lab = np.zeros(shape, np.uint8)
    lab[2:10, 2:10, :] = 1
    assert _put(f"{url}/api/v1/jobs/{job}/mask", content=_nifti(lab, np.eye(4))
                     ).status_code == 200
    r = _get(f"{url}/api/v1/jobs/{job}/result", params={"format": "dicom-seg"})
    assert r.status_code == 200, r.text
    return r.content


def _deflate_bomb(env: Env) -> bytes:
    """The valid SEG in Deflated Explicit VR Little Endian, its pixel data replaced by 1 GiB of
    zeros: about 1 MB on the wire, 1 GiB once inflated."""
    import struct
    import zlib

    ds = pydicom.dcmread(io.BytesIO(env.seg))
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    head = io.BytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(head, ds.file_meta, enforce_standard=True)
    plain = io.BytesIO()
    fp = pydicom.filebase.DicomFileLike(plain)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(fp, ds)
    size = 1 << 30
    plain.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, size))
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = comp.compress(plain.getvalue())
    zero = bytes(1 << 20)
    for _ in range(size >> 20):
        body += comp.compress(zero)
    return head.getvalue() + body + comp.flush()


@pytest.mark.parametrize("case", [
    "truncated SEG", "not a SEG (a CT slice)", "SEG of a series elsewhere",
    "SEG in another frame of reference", "SEG claiming 2e9 frames",
    "SEG of 60000 x 60000 frames", "segment number 300",
    "segment number not in SegmentSequence", "SEG without per-frame groups",
    "deflate bomb SEG", "not a file at all"])
def test_put_mask_refuses_a_bad_seg(env: Env, bad_labels: dict[str, Any], case: str) -> None:
    data, _ = bad_labels[case]
    before = _state(env, env.job)
    r = _put(f"{env.srv.url}/api/v1/jobs/{env.job}/mask", content=data)
    _refused(env, r, env.job, before=before)


@pytest.mark.parametrize("case", [
    "truncated SEG", "not a SEG (a CT slice)", "SEG of a series elsewhere",
    "SEG in another frame of reference", "SEG claiming 2e9 frames",
    "SEG of 60000 x 60000 frames", "segment number 300",
    "segment number not in SegmentSequence", "SEG without per-frame groups",
    "deflate bomb SEG", "not a file at all"])
def test_datastore_label_refuses_a_bad_seg(env: Env, bad_labels: dict[str, Any], case: str
                                           ) -> None:
    data, name = bad_labels[case]
    before = _state(env, env.image_job)
    r = _put_files(f"{env.srv.url}/monailabel", "/datastore/label", [(name, data)],
                   field="label", image=env.image, tag="draft")
    _refused(env, r, env.image_job, before=before)


def test_a_good_seg_is_still_accepted(env: Env) -> None:
    """The checks refuse what is bad only: the valid SEG is a new version on both routes."""
    n0 = len(env.versions(env.job))
    r = _put(f"{env.srv.url}/api/v1/jobs/{env.job}/mask", content=env.seg)
    assert r.status_code == 200, r.text
    assert len(env.versions(env.job)) == n0 + 1
    n1 = len(env.versions(env.image_job))
    r = _put_files(f"{env.srv.url}/monailabel", "/datastore/label", [("label.dcm", env.seg)],
                   field="label", image=env.image, tag="draft")
    assert r.status_code == 200, r.text
    assert len(env.versions(env.image_job)) == n1 + 1
    assert np.array_equal(env.mask(env.image_job) > 0, env.mask(env.job) > 0)


def _nifti_cases(env: Env) -> dict[str, bytes]:
    shape = tuple(_get(f"{env.srv.url}/api/v1/jobs/{env.image_job}").json()["source_shape"])
    src_affine = _source_affine(env)
    lab = np.zeros(shape, np.uint8)
    lab[2:6, 2:6, 1:3] = 1
    shifted = src_affine.copy()
    shifted[:3, 3] += [40.0, 0.0, 0.0]  # the same grid 40 mm to the side
    # a header of 1000^3 voxels (under the server's voxel limit) and 1 GB of zeros: ~1 MB sent
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1000, 1000, 1000))
    hdr.set_data_dtype(np.uint8)
    hdr.set_qform(src_affine, 1)
    hdr.set_sform(src_affine, 1)
    z = gzip.GzipFile(fileobj=(bomb_io := io.BytesIO()), mode="wb", compresslevel=9)
    z.write(hdr.binaryblock + b"\x00" * 4)
    for _ in range(1000):
        z.write(bytes(1_000_000))
    z.close()
    bomb = bomb_io.getvalue()
    many = lab.copy()
    many[8:10, 8:10, 4] = 7  # object 7: the image has one object, label_info names none
    return {
        "wrong shape": _nifti(np.zeros((shape[0] + 1, shape[1], shape[2]), np.uint8),
                              src_affine),
        "wrong geometry": _nifti(lab, shifted),
        "gzip bomb": bomb,
        "truncated NIfTI": (full := _nifti(lab, src_affine))[: len(full) // 2],
        "label value 7 of 1 object": _nifti(many, src_affine),
        "label value 300 (int16)": _nifti(np.where(lab > 0, 300, 0).astype(np.int16),
                                          src_affine),
        "negative label values": _nifti(np.where(lab > 0, -1, 0).astype(np.int16), src_affine),
        "fractional label values": _nifti(lab.astype(np.float32) * 0.5, src_affine),
    }


def _source_affine(env: Env) -> np.ndarray:
    r = _get(f"{env.srv.url}/monailabel/datastore/label",
                  params={"label": env.image, "tag": "draft"})
    if r.status_code != 200:  # no draft yet: the job's label on the image grid via REST
        r = _get(f"{env.srv.url}/api/v1/jobs/{env.image_job}/result",
                      params={"format": "nii.gz"})
    assert r.status_code == 200, r.text
    img: Any = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    return np.asarray(img.affine)


@pytest.mark.parametrize("case", [
    "wrong shape", "wrong geometry", "gzip bomb", "truncated NIfTI", "label value 7 of 1 object",
    "label value 300 (int16)", "negative label values", "fractional label values"])
def test_datastore_label_refuses_a_bad_nifti(env: Env, nifti_cases: dict[str, bytes], case: str
                                             ) -> None:
    data = nifti_cases[case]
    before = _state(env, env.image_job)
    r = _put_files(f"{env.srv.url}/monailabel", "/datastore/label", [("label.nii.gz", data)],
                   field="label", image=env.image, tag="draft")
    _refused(env, r, env.image_job, before=before)


def test_label_values_named_in_label_info_are_new_objects(env: Env) -> None:
    """Values beyond the image's objects are fine when ``label_info`` names them (Slicer sends
    one entry per segment): they become named objects."""
    aff = _source_affine(env)
    shape = tuple(_get(f"{env.srv.url}/api/v1/jobs/{env.image_job}").json()["source_shape"])
    lab = np.zeros(shape, np.uint8)
    lab[2:6, 2:6, 1:3] = 1
    lab[8:10, 8:10, 4] = 3
    info = {"label_info": [{"name": "liver", "idx": 1}, {"name": "lesion", "idx": 3}]}
    r = _put(f"{env.srv.url}/monailabel/datastore/label",
                  params={"image": env.image, "tag": "draft"},
                  files=[("label", ("label.nii.gz", _nifti(lab, aff), "application/gzip"))],
                  data={"params": json.dumps(info)})
    assert r.status_code == 200, r.text
    objs = _get(f"{env.srv.url}/api/v1/jobs/{env.image_job}/objects").json()
    assert {o["label_value"]: o["name"] for o in objs}.get(3) == "lesion"


# --------------------------------------------------------------------- multi-file sessions

def _session_cases(env: Env) -> dict[str, list[tuple[str, bytes]]]:
    a = [(p.name, p.read_bytes()) for p in env.series]
    b = [(f"b-{p.name}", p.read_bytes())
         for p in write_series(env.tmp / "b", n=4, rows=24, cols=20, seed=3)]
    mhd = (b"ObjectType = Image\nNDims = 3\nDimSize = 8 8 4\nElementType = MET_SHORT\n"
           b"ElementDataFile = blob.raw\n")
    raw = bytes(8 * 8 * 4 * 2)
    many = [(f"f{i:03d}.dcm", env.series[i % len(env.series)].read_bytes())
            for i in range(MAX_FILES + 5)]
    big = [(f"big{i}.dcm", bytes(1 << 20)) for i in range(4)]  # 4 MiB over 3 MiB, each < limit
    return {
        "two series mixed": a + b,
        "header without its data file": [("blob.mhd", mhd)],
        "data file without its header": [("blob.raw", raw), ("blob2.raw", raw)],
        "a file named ../x": [("../x.mhd", mhd), ("../../blob.raw", raw)],
        "header naming ../ data": [("blob.mhd", mhd.replace(b"blob.raw", b"../blob.raw")),
                                   ("blob.raw", raw)],
        "duplicate names (header + two data files)": [("blob.mhd", mhd), ("blob.raw", raw),
                                                      ("blob.raw", raw[:-2])],
        "too many files": many,
        "total bytes over the limit": big,
    }


@pytest.mark.parametrize("case", [
    "two series mixed", "header without its data file", "data file without its header",
    "a file named ../x", "header naming ../ data",
    "duplicate names (header + two data files)", "too many files",
    "total bytes over the limit"])
def test_session_upload_refuses_bad_file_sets(env: Env, case: str) -> None:
    files = _session_cases(env)[case]
    before = _state(env, env.job, env.image_job)
    jobs_before = {j["job_id"] for j in _get(f"{env.srv.url}/api/v1/jobs").json()}
    r = _put_files(f"{env.srv.url}/monailabel", "/session/", files)
    _refused(env, r, env.job, env.image_job, before=before)
    jobs_after = {j["job_id"] for j in _get(f"{env.srv.url}/api/v1/jobs").json()}
    assert jobs_after == jobs_before, "a refused upload left a job behind"
    home = env.srv.home
    assert not (home.parent / "x.mhd").exists() and not (home / "x.mhd").exists()
    assert not list((home / "tmp").glob("form-*")), "the upload's parts were left in tmp"
