"""A step submitted with ``Accept: text/event-stream`` answers with the task's event stream
itself: one request per step instead of submit + GET events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from livertask import liver_slice_box

from .conftest import upload

SSE = {"Accept": "text/event-stream"}


def _events(client: TestClient, url: str, body: dict[str, Any] | None) -> list[dict[str, Any]]:
    with client.stream("POST", url, json=body, headers=SSE) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def test_a_step_streams_its_own_events(client: TestClient, data: Path) -> None:
    jid = upload(client, data / "totalseg" / "example_ct_sm.nii.gz").json()["job_id"]
    z, box = liver_slice_box()
    ev = _events(client, f"/api/v1/jobs/{jid}/initial-mask", {"slice_index": z, "box": box})
    assert ev[0]["type"] == "status" and ev[0]["state"] == "queued"
    assert ev[-1]["type"] == "done" and ev[-1]["version"] == 1
    assert {e["task_id"] for e in ev} == {ev[0]["task_id"]}
    ev = _events(client, f"/api/v1/jobs/{jid}/propagate", None)
    assert ev[-1]["type"] == "done" and ev[-1]["version"] == 2
    assert client.get(f"/api/v1/jobs/{jid}").json()["current_version"] == 2
    # without the header: 202 and the task, as before
    r = client.post(f"/api/v1/jobs/{jid}/refine", json={"slice_index": z, "box": box})
    assert r.status_code == 202 and r.json()["events"].endswith(r.json()["task_id"])


def test_a_refused_step_is_a_plain_error_not_a_stream(client: TestClient, data: Path) -> None:
    jid = upload(client, data / "totalseg" / "example_ct_sm.nii.gz").json()["job_id"]
    r = client.post(f"/api/v1/jobs/{jid}/initial-mask",
                    json={"slice_index": 5, "box": [0, 0, 5000, 5000]}, headers=SSE)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/json")
    assert "box" in r.text
    r = client.post("/api/v1/jobs/00000000-0000-0000-0000-000000000000/propagate", headers=SSE)
    assert r.status_code == 404
