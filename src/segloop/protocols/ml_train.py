"""MONAI Label's ``/train`` routes as a ``segloop train --from-datastore`` child process.

One training run at a time per API process: ``POST /train/{model}`` starts ``segloop train``
on the reviewed cases in a child process (the API process itself never imports torch),
``GET /train/?check_if_running=true`` answers 200 while it runs and 404 otherwise (3D Slicer
enables its Train button from that), ``DELETE /train/`` stops it. The run's output folder is
``<home>/runs/<name>`` with the child's log in ``train.log``; a finished run registers the
model ``ENGINE@RUN`` as ``segloop train`` always does. Imports only the standard library and
segloop.config; never torch.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from segloop.config import Settings
from segloop.errors import InputError
from segloop.jobs.errors import ConflictError

__all__ = ["TrainState", "Trainer"]

_CMD = "import sys; from segloop.cli import main; sys.exit(main(sys.argv[1:]))"
#: engines with trainable weights (``segloop train --model``)
_TRAINABLE = ("medsam2", "sam2.1")


class TrainState(StrEnum):
    """MONAI Label's training states."""

    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    NONE = "NOT_STARTED"


@dataclass
class _Run:
    name: str
    model: str
    out: Path
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float
    stopped: bool = False


class Trainer:
    """The training child process of this API process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._run: _Run | None = None
        self._lock = threading.Lock()

    def start(self, model: str, params: dict[str, Any], user: str) -> dict[str, Any]:
        """Start ``segloop train`` for ``model`` (a SAM 2-family engine) on the reviewed cases.

        params: ``max_epochs``/``epochs``, ``name``, ``device``, ``smoke`` (a quick check run).
        ConflictError while a run is going or for an engine without weights to train."""
        base = model.partition("@")[0]
        if not base.startswith(_TRAINABLE):
            raise ConflictError(f"model {model!r} has no weights to fine-tune; train one of the "
                                "SAM 2-family engines (medsam2, sam2.1-*)")
        if not (self.settings.datastore_dir / "manifest.csv").exists():
            raise ConflictError("no reviewed cases yet: save a label with tag 'final' first")
        with self._lock:
            if self._run is not None and self._run.proc.poll() is None:
                raise ConflictError(f"training run {self._run.name!r} is still running; "
                                    "stop it first (DELETE /train/)")
            name = str(params.get("name") or f"ml-{time.strftime('%Y%m%d-%H%M%S')}")
            if not name.replace("-", "").replace("_", "").isalnum():
                raise InputError("a run name uses letters, digits, '-' and '_'")
            out = self.settings.home / "runs" / name
            out.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-c", _CMD, "train", "--from-datastore",
                    str(self.settings.datastore_dir), "--out", str(out), "--name", name,
                    "--model", base, "--quiet"]
            epochs = params.get("max_epochs", params.get("epochs"))
            if epochs is not None:
                argv += ["--epochs", str(int(epochs))]
            if params.get("device"):
                argv += ["--device", str(params["device"])]
            if params.get("smoke"):
                argv.append("--smoke")
            log = open(out / "train.log", "ab")  # noqa: SIM115 - closed when the run ends
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    env={**_env(), "SEGLOOP_HOME": str(self.settings.home)})
            self._run = _Run(name, model, out, proc, log, time.time())
        return {"name": name, "model": model, "status": TrainState.RUNNING.value, "user": user}

    def running(self) -> bool:
        """Whether a run is going."""
        run = self._run
        return run is not None and run.proc.poll() is None

    def status(self) -> dict[str, Any]:
        """The last run's state."""
        run = self._run
        if run is None:
            return {"status": TrainState.NONE.value}
        rc = run.proc.poll()
        if rc is None:
            state = TrainState.RUNNING
        elif run.stopped:
            state = TrainState.STOPPED
        else:
            state = TrainState.DONE if rc == 0 else TrainState.FAILED
        if rc is not None:
            run.log.close()
        return {"status": state.value, "name": run.name, "model": run.model,
                "start_ts": int(run.started), "returncode": rc, "log": str(run.out / "train.log")}

    def stop(self) -> dict[str, Any]:
        """Stop the running run (TERM, then KILL after 10 s)."""
        run = self._run
        if run is None or run.proc.poll() is not None:
            return {**self.status(), "stopped": False}
        run.stopped = True
        run.proc.terminate()
        try:
            run.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait(timeout=10)
        return {**self.status(), "stopped": True}

    def close(self) -> None:
        """Stop a running child when the server shuts down."""
        if self.running():
            self.stop()


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
