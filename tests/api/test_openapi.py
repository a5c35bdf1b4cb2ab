"""Every JSON route of the API documents its response schema in ``/docs`` (OpenAPI).

A 2xx JSON response must name a model with declared properties (or a list of one), not
``{}`` nor a bare ``dict[str, Any]`` object. The routes that answer with something other
than a JSON record are listed below with the reason.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

#: (method, path) -> why its 2xx response has no JSON schema
NOT_JSON: dict[tuple[str, str], str] = {
    ("get", "/api/v1/jobs/{job_id}/volume"): "file download (NIfTI)",
    ("get", "/api/v1/jobs/{job_id}/image"): "file download (a 2D job's picture, PNG)",
    ("get", "/api/v1/jobs/{job_id}/result"): "file download (nii.gz, png or DICOM-SEG)",
    ("get", "/api/v1/jobs/{job_id}/events"): "Server-Sent Events (text/event-stream)",
    ("delete", "/api/v1/jobs/{job_id}"): "204 No Content",
    ("get", "/api/v1/jobs/{job_id}/draft/mask"): "file download (a draft's labels, nii.gz)",
    ("delete", "/api/v1/jobs/{job_id}/draft"): "204 No Content",
}


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.rsplit("/", 1)[-1]
    out: dict[str, Any] = spec["components"]["schemas"][name]
    return out


def _described(spec: dict[str, Any], schema: dict[str, Any]) -> bool:
    """True when ``schema`` is a record with declared properties, or an array of one."""
    s = _resolve(spec, schema)
    if s.get("type") == "array":
        return _described(spec, s.get("items") or {})
    return bool(s.get("properties"))


def test_every_json_route_declares_its_response_schema(client: TestClient) -> None:
    spec = client.app.openapi()  # type: ignore[attr-defined]
    missing, checked = [], 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if (method, path) in NOT_JSON:
                continue
            for code, resp in op["responses"].items():
                if not code.startswith("2"):
                    continue
                schema = resp.get("content", {}).get("application/json", {}).get("schema")
                checked += 1
                if schema is None or not _described(spec, schema):
                    missing.append(f"{method.upper()} {path} {code}: {schema}")
    assert not missing, "routes without a response schema:\n" + "\n".join(missing)
    assert checked >= 20  # the jobs and system routes and /health
    for method, path in NOT_JSON:  # the exceptions are real routes, not stale names
        assert method in spec["paths"][path]


def test_response_models_keep_extra_keys_and_reduced_views(client: TestClient) -> None:
    """A response model passes through keys the store adds and leaves out unset ones."""
    st = client.get("/api/v1/system/status").json()
    assert {"version", "queue", "tasks", "default_engine", "host"} <= set(st)  # local admin
    assert "broker_error" not in st and "broker_queue_length" not in st  # embedded queue
    health = client.get("/health").json()
    assert set(health) == {"status", "version", "queue"}


def test_the_job_store_records_are_the_response_schemas(client: TestClient) -> None:
    """One definition per record: the routes answer with segloop.jobs.records' models."""
    spec = client.app.openapi()  # type: ignore[attr-defined]
    names = set(spec["components"]["schemas"])
    records = {"JobRecord", "TaskRecord", "ActiveTaskRecord", "JobStatus", "VersionRecord",
               "ObjectRecord", "ReviewRecord", "CleanupReport", "AuditRecord"}
    assert records <= names
    assert not names & {"JobOut", "TaskOut", "ActiveTaskOut", "JobStatusOut", "VersionOut",
                        "ObjectOut", "ReviewOut", "CleanupOut", "AuditEntryOut"}
    job = spec["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]["200"]
    assert job["content"]["application/json"]["schema"]["$ref"].endswith("/JobRecord")
    task = spec["components"]["schemas"]["TaskRecord"]["properties"]
    assert "$ref" in str(task["state"]) or "enum" in str(task["state"])  # TaskState, not str
