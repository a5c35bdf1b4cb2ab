"""nnInteractive's own remote client (nninteractive-client==2.6.0, what napari-nninteractive and
SlicerNNInteractive run in Remote mode) against a live `segloop serve` under /nninteractive."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from .conftest import Server, add_user, blob_volume, start_server

remote: Any = pytest.importorskip("nnInteractive.inference.remote",
                                  reason="nninteractive-client==2.6.0 is a [dev] test tool")
Session: Any = remote.nnInteractiveRemoteInferenceSession


def _truth(shape: tuple[int, int, int]) -> np.ndarray:
    i, j, k = np.indices(shape)
    return ((i - 24) / 9.0) ** 2 + ((j - 18) / 7.0) ** 2 + ((k - 8) / 5.0) ** 2 <= 1


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_bbox_points_initial_seg_undo(serve: Any) -> None:
    srv: Server = serve()
    s = Session(f"{srv.url}/nninteractive", api_key=None)
    try:
        assert s.supported_interactions["bbox2d"] and s.supported_interactions["points"]
        assert s.supports_undo is True
        vol = blob_volume().astype(np.float32)
        s.set_image(vol[None], {"spacing": [0.8, 0.8, 2.5]})
        assert s.original_image_shape == (1, *vol.shape)
        buf = np.zeros(vol.shape, np.uint8)
        s.set_target_buffer(buf)

        # a 2D box on slice k=8 (flat along axis 2) -> a 3D mask over several slices
        bb = s.add_bbox_interaction([[14, 35], [10, 27], [8, 9]], include_interaction=True)
        assert bb is not None
        truth = _truth(vol.shape)
        assert len(np.flatnonzero(buf.any(axis=(0, 1)))) >= 5
        assert _dice(buf > 0, truth) > 0.7, _dice(buf > 0, truth)
        full = int(buf.sum())

        # a negative click inside the mask shrinks it
        s.add_point_interaction((31, 18, 8), include_interaction=False)
        assert 0 < int(buf.sum()) < full
        # undo brings the mask back
        assert s.undo() is True
        assert int(buf.sum()) == full

        # an initial segmentation replaces the buffer (client side and server side)
        seg = np.zeros(vol.shape, np.uint8)
        seg[20:28, 14:22, 6:10] = 1
        s.add_initial_seg_interaction(seg)
        assert np.array_equal(buf, seg)
        # a positive click refines from it; the answer is consistent with the server's mask
        s.add_point_interaction((24, 18, 8), include_interaction=True)
        assert buf[24, 18, 8] == 1
        job = s.lease_status()["job_id"]
        versions = httpx.get(f"{srv.url}/api/v1/jobs/{job}/versions").json()
        assert {v["source"] for v in versions} >= {"segment", "refine", "edit"}
    finally:
        s.close()


def test_first_box_is_one_step(serve: Any) -> None:
    """The first box is one segment task (key slice + propagation): one version, so one undo
    takes all of it back (it used to leave the key slice's 2D mask: two versions)."""
    srv: Server = serve()
    vol = blob_volume().astype(np.float32)
    with Session(f"{srv.url}/nninteractive") as s:
        s.set_image(vol[None], {"spacing": [0.8, 0.8, 2.5]})
        buf = np.zeros(vol.shape, np.uint8)
        s.set_target_buffer(buf)
        s.add_bbox_interaction([[14, 35], [10, 27], [8, 9]], include_interaction=True)
        assert len(np.flatnonzero(buf.any(axis=(0, 1)))) >= 5
        assert s.undo() is True
        assert int(buf.sum()) == 0, "undo left part of the first box's mask"
        job = s.lease_status()["job_id"]
        versions = httpx.get(f"{srv.url}/api/v1/jobs/{job}/versions").json()
        assert [v["source"] for v in versions] == ["segment"], versions


def test_box_flat_along_axis_0(serve: Any) -> None:
    """napari stores (Z, Y, X): the box's one-slice axis is 0, and propagation follows it (with
    isotropic spacing the server's guess at set_image is axis 2: the first box corrects it)."""
    srv: Server = serve()
    vol = np.ascontiguousarray(blob_volume().astype(np.float32).transpose(2, 1, 0))  # (k, j, i)
    with Session(f"{srv.url}/nninteractive") as s:
        s.set_image(vol[None], {"spacing": [1.0, 1.0, 1.0]})
        guessed = s.lease_status()["job_id"]
        buf = np.zeros(vol.shape, np.uint8)
        s.set_target_buffer(buf)
        s.add_bbox_interaction([[8, 9], [10, 27], [14, 35]], include_interaction=True)
        truth = _truth((48, 40, 16)).transpose(2, 1, 0)
        assert len(np.flatnonzero(buf.any(axis=(1, 2)))) >= 5
        assert _dice(buf > 0, truth) > 0.7
        assert s.lease_status()["job_id"] != guessed
        assert httpx.get(f"{srv.url}/api/v1/jobs/{guessed}").status_code == 404
        # a box flat along another axis is refused until a reset
        with pytest.raises(httpx.HTTPStatusError) as e:
            s.add_bbox_interaction([[2, 12], [10, 27], [24, 25]], include_interaction=True)
        assert e.value.response.status_code == 409
        s.reset_interactions()
        assert buf.sum() == 0
        s.add_bbox_interaction([[3, 13], [10, 27], [24, 25]], include_interaction=True)
        assert buf.any()


def test_capacity_and_expiry(serve: Any) -> None:
    srv: Server = serve(SEGLOOP_PROTOCOL_MAX_LEASES="1", SEGLOOP_PROTOCOL_IDLE_SECONDS="2")
    url = f"{srv.url}/nninteractive"
    s1 = Session(url)
    with pytest.raises(remote.ServerAtCapacityError):
        Session(url)
    time.sleep(2.5)
    with pytest.raises(remote.SessionExpiredError):
        s1.set_image(np.zeros((1, 8, 8, 4), np.float32), {"spacing": [1, 1, 1]})
    s1.close()


@pytest.mark.slow
def test_lease_survives_restart(serve: Any) -> None:
    """A lease lives in the job store: the client goes on after the server restarts."""
    srv: Server = serve(SEGLOOP_PROTOCOL_MAX_LEASES="1")
    url = f"{srv.url}/nninteractive"
    s2 = Session(url)
    vol = blob_volume().astype(np.float32)
    s2.set_image(vol[None], {"spacing": [0.8, 0.8, 2.5]})
    buf = np.zeros(vol.shape, np.uint8)
    s2.set_target_buffer(buf)
    port = int(srv.url.rsplit(":", 1)[1])
    srv.stop()
    srv2 = start_server(srv.home, port, SEGLOOP_PROTOCOL_MAX_LEASES="1")
    try:
        s2.add_bbox_interaction([[14, 35], [10, 27], [8, 9]], include_interaction=True)
        assert buf.sum() > 100
        s2.close()
        # released: its slot is free again, and the old token is gone
        r = httpx.get(f"{url}/lease_status", headers={"X-Lease-Token": "nope"})
        assert r.status_code == 410
        Session(url).close()
    finally:
        srv2.stop()


def test_api_key_needed(serve: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = add_user(home, "nadia", "annotator")
    other = add_user(home, "otto", "annotator")
    srv: Server = serve(home, SEGLOOP_REQUIRE_API_KEYS="true")
    url = f"{srv.url}/nninteractive"
    with pytest.raises(httpx.HTTPStatusError) as e:
        Session(url, api_key=None)
    assert e.value.response.status_code == 401
    with Session(url, api_key=key) as s:
        assert s.lease_status()["remaining_seconds"] > 0
        # another user cannot use this lease
        r = httpx.get(f"{url}/lease_status", headers={
            "Authorization": f"Bearer {other}", "X-Lease-Token": s._lease_token})
        assert r.status_code == 410


def test_autozoom_off_changes_one_patch(serve: Any) -> None:
    # a bright bar 251 voxels long (x 5..255): longer than nnInteractive's 192-voxel patch
    shape = (260, 40, 16)
    vol = np.full(shape, 40, np.float32)
    vol[5:256, 15:26, 4:13] = 250
    vol += np.random.default_rng(0).normal(0, 8, shape).astype(np.float32)
    box = [[3, 258], [12, 29], [8, 9]]
    srv: Server = serve()
    s = Session(f"{srv.url}/nninteractive", api_key=None)
    try:
        assert s.do_autozoom is True  # the server's default, as nnInteractive's
        s.set_image(vol[None], {"spacing": [1.0, 1.0, 2.0]})
        buf = np.zeros(shape, np.uint8)
        s.set_target_buffer(buf)
        s.add_bbox_interaction(box, include_interaction=True)
        xs = np.flatnonzero(buf.any(axis=(1, 2)))
        assert xs.min() <= 10 and xs.max() >= 250  # the whole bar

        # auto-zoom off: the same box changes only the 192-voxel patch around its centre
        s.reset_interactions()
        s.set_do_autozoom(False)
        s.add_bbox_interaction(box, include_interaction=True)
        xs = np.flatnonzero(buf.any(axis=(1, 2)))
        centre = (3 + 257) // 2
        assert xs.min() == centre - 96 and xs.max() == centre + 95, (xs.min(), xs.max())
        # a click outside the patch grows the mask there; what was inside stays
        before = buf.copy()
        s.add_point_interaction((240, 20, 8), include_interaction=True)
        assert buf[240, 20, 8] == 1
        assert np.array_equal(buf[:240 - 96], before[:240 - 96])
        assert buf[240 - 96:].sum() > before[240 - 96:].sum()
    finally:
        s.close()
