"""What the protocol adapters remember between requests: names that point at segloop jobs.

MONAI Label clients name images by their own ids and open sessions; nnInteractive clients hold
a lease token. Each such name is a :class:`Ref` row (kind, key) -> job id, owner, times and a
small JSON ``data`` record, in one table of the job store's database (SQLite or PostgreSQL), so
it survives a server restart and is shared by every API process. The table is created by
:meth:`RefStore.create` when the app is built, never at import time. Arrays never go here.

Imports SQLAlchemy and segloop.jobs.db only; never FastAPI, engines or torch.
Must not import segloop.cli (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from segloop.jobs.db import utcnow

__all__ = ["Ref", "RefKind", "RefStore"]

_META = MetaData()
_REFS = Table(
    "segloop_protocol_refs", _META,
    Column("id", Integer, primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("key", String(200), nullable=False),
    Column("job_id", String(36), nullable=True, index=True),
    Column("owner", String(100), nullable=False),
    Column("created", DateTime, nullable=False),
    Column("touched", DateTime, nullable=False),
    Column("beat", DateTime, nullable=False),
    Column("data", JSON, nullable=False),
    UniqueConstraint("kind", "key"),
)


class RefKind(StrEnum):
    """What a ref names."""

    ML_IMAGE = "ml-image"  #: a MONAI Label datastore image id
    ML_SESSION = "ml-session"  #: a MONAI Label session id
    ML_PROMPTS = "ml-prompts"  #: the prompts of the last MONAI Label infer of (job, object)
    NNI_LEASE = "nni-lease"  #: an nnInteractive lease token
    TRAINING = "training"  #: a training run started through MONAI Label's /train


@dataclass
class Ref:
    """One name: ``kind``/``key`` -> ``job_id`` (None until known), who made it, when it was
    created, last used (``touched``) and last proved alive (``beat``), plus ``data``."""

    kind: RefKind
    key: str
    job_id: str | None
    owner: str
    created: dt.datetime
    touched: dt.datetime
    beat: dt.datetime
    data: dict[str, Any] = field(default_factory=dict)

    def idle_seconds(self, now: dt.datetime | None = None) -> float:
        """Seconds since the last use."""
        return ((now or utcnow()) - self.touched).total_seconds()


def _ref(row: Any) -> Ref:
    return Ref(RefKind(row.kind), row.key, row.job_id, row.owner, row.created, row.touched,
               row.beat, dict(row.data or {}))


class RefStore:
    """The refs table on the job store's database engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self) -> None:
        """Create the table when missing."""
        _META.create_all(self.engine)

    def get(self, kind: RefKind, key: str) -> Ref | None:
        """The ref, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_REFS).where(_REFS.c.kind == kind.value,
                                                   _REFS.c.key == key)).first()
        return None if row is None else _ref(row)

    def put(self, kind: RefKind, key: str, job_id: str | None, owner: str,
            data: dict[str, Any] | None = None) -> Ref:
        """Create or replace a ref (now as created, touched and beat)."""
        now = utcnow()
        values = {"kind": kind.value, "key": key, "job_id": job_id, "owner": owner,
                  "created": now, "touched": now, "beat": now,
                  "data": json.loads(json.dumps(data or {}))}
        with self.engine.begin() as conn:
            conn.execute(delete(_REFS).where(_REFS.c.kind == kind.value, _REFS.c.key == key))
            conn.execute(insert(_REFS), values)
        return Ref(kind, key, job_id, owner, now, now, now, dict(values["data"]))

    def update(self, ref: Ref, *, touch: bool = False, beat: bool = False) -> None:
        """Store ``ref.job_id`` and ``ref.data``; ``touch``/``beat`` set those times to now."""
        now = utcnow()
        values: dict[str, Any] = {"job_id": ref.job_id, "data": json.loads(json.dumps(ref.data))}
        if touch:
            values["touched"] = ref.touched = now
        if beat:
            values["beat"] = ref.beat = now
        with self.engine.begin() as conn:
            conn.execute(update(_REFS).where(_REFS.c.kind == ref.kind.value,
                                             _REFS.c.key == ref.key).values(**values))

    def delete(self, kind: RefKind, key: str) -> bool:
        """Remove a ref; True when it existed."""
        with self.engine.begin() as conn:
            n = conn.execute(delete(_REFS).where(_REFS.c.kind == kind.value,
                                                 _REFS.c.key == key)).rowcount
        return bool(n)

    def list(self, kind: RefKind) -> list[Ref]:
        """All refs of a kind, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_REFS).where(_REFS.c.kind == kind.value)
                                .order_by(_REFS.c.id)).all()
        return [_ref(r) for r in rows]
