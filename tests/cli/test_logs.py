"""segloop.cli.logs: the JSON log lines of ``serve`` and ``worker``."""

from __future__ import annotations

import json
import logging

from segloop.cli.logs import JsonFormatter


def test_json_formatter_writes_one_object_with_extra_fields() -> None:
    rec = logging.LogRecord("segloop.jobs.runner", logging.WARNING, __file__, 1,
                            "task %s failed", ("t1",), None)
    rec.task_id = "t1"
    out = json.loads(JsonFormatter().format(rec))
    assert out["level"] == "warning" and out["logger"] == "segloop.jobs.runner"
    assert out["msg"] == "task t1 failed" and out["task_id"] == "t1"
    assert out["ts"].endswith("Z") and "args" not in out
