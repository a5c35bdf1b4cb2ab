"""Saving from the page never silently undoes a version made meanwhile (issue 15's viewer).

The page saves its whole drawing with the version it was painted on
(``PUT .../mask?base_version=N``). When another version became current meanwhile (here an API
edit clears a slice while the page holds an unsaved stroke), the server answers 409 and the
page rebases: it lays the voxels it changed over the current version and saves that. Before,
the save restored the cleared slice without telling anyone.
"""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import nibabel as nib
import numpy as np

from .conftest import LiveServer
from .test_tools import bitmap, labels, wait_version
from .test_viewer import TIMEOUT_MS
from .test_viewer_bugs import CT, js, open_job, stroke, upload


def _put_block(url: str, job: str) -> np.ndarray:
    """Version 1: object 1 as a block on axial slices 8..12 (canonical grid)."""
    r = httpx.get(f"{url}/api/v1/jobs/{job}/volume", timeout=60)
    img: Any = nib.Nifti1Image.from_bytes(r.content)
    lab = np.zeros(img.shape[:3], np.uint8)
    lab[40:60, 40:60, 8:13] = 1
    body = gzip.compress(nib.Nifti1Image(lab, img.affine).to_bytes())
    r = httpx.put(f"{url}/api/v1/jobs/{job}/mask", content=body, timeout=60)
    assert r.status_code == 200 and r.json()["version"] == 1, r.text
    return lab


def test_a_save_merges_the_stroke_onto_a_version_made_meanwhile(
        server: LiveServer, page: Any) -> None:
    url = server.url
    job = upload(server, CT)
    v1 = _put_block(url, job)
    open_job(page, server, job)
    wait_version(page, 1)
    page.keyboard.press("d")
    js(page, "window.segloop.setSlice(15)")
    stroke(page, 20)
    assert js(page, "window.segloop.state.dirty")
    mine = bitmap(page)
    painted = (mine != v1) & (mine == 1)
    assert painted[:, :, 15].sum() > 10 and not painted[:, :, :15].any()

    r = httpx.post(f"{url}/api/v1/jobs/{job}/edit", json={
        "op": "clear-slices", "object_id": 1, "first_slice": 10, "last_slice": 10}, timeout=60)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    page.keyboard.press("Control+s")
    wait_version(page, 3)

    saved = labels(url, job)
    assert not saved[:, :, 10].any(), "the save undid the clear made meanwhile"
    assert (saved[:, :, [8, 9, 11, 12]] == v1[:, :, [8, 9, 11, 12]]).all()
    assert (saved[painted] == 1).all(), "the stroke was not saved"
    assert np.array_equal(bitmap(page), saved), "the page does not show what it saved"
    page.wait_for_function(
        "() => /merged your edits onto version 2 made meanwhile/.test("
        "document.querySelector('#message').textContent)", timeout=TIMEOUT_MS)
    vs = httpx.get(f"{url}/api/v1/jobs/{job}/versions", timeout=30).json()
    assert [v["version"] for v in vs] == [1, 2, 3]
    assert page.errors == []


def test_where_both_changed_a_voxel_the_pages_edit_wins(server: LiveServer, page: Any) -> None:
    url = server.url
    job = upload(server, CT)
    v1 = _put_block(url, job)
    open_job(page, server, job)
    wait_version(page, 1)
    page.keyboard.press("e")
    js(page, "window.segloop.setSlice(11)")
    stroke(page, 50, 35, 65)  # erase a band across the block
    mine = bitmap(page)
    erased = (v1 == 1) & (mine == 0)
    assert erased[:, :, 11].sum() > 10 and erased.sum() == erased[:, :, 11].sum()

    # meanwhile an API client relabels the block on slice 11 as object 2 (no base_version)
    r = httpx.post(f"{url}/api/v1/jobs/{job}/objects", json={"name": "other", "label_value": 2},
                   timeout=30)
    assert r.status_code == 201, r.text
    r = httpx.get(f"{url}/api/v1/jobs/{job}/volume", timeout=60)
    img: Any = nib.Nifti1Image.from_bytes(r.content)
    theirs = v1.copy()
    theirs[:, :, 11][theirs[:, :, 11] == 1] = 2
    body = gzip.compress(nib.Nifti1Image(theirs, img.affine).to_bytes())
    assert httpx.put(f"{url}/api/v1/jobs/{job}/mask", content=body, timeout=60).json()[
        "version"] == 2
    page.keyboard.press("Control+s")
    wait_version(page, 3)

    saved = labels(url, job)
    assert (saved[erased] == 0).all(), "the page's erase did not win"
    kept = (v1[:, :, 11] == 1) & ~erased[:, :, 11]
    assert (saved[:, :, 11][kept] == 2).all(), "the other version's relabel was lost"
    assert np.array_equal(saved[:, :, [8, 9, 10, 12]], v1[:, :, [8, 9, 10, 12]])
    n = int(erased.sum())
    page.wait_for_function(
        f"() => /onto version 2 made meanwhile \\({n} voxels changed by both: yours kept\\)/"
        ".test(document.querySelector('#message').textContent)", timeout=TIMEOUT_MS)
    assert page.errors == []
