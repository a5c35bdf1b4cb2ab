"""The state the nnInteractive routes share, and the lease lookup every lease route depends on.

:class:`NniState` keeps, per app, the last mask answered to each lease and sweeps ended leases
(their ref rows and folders); :data:`St` and :data:`L` are the FastAPI dependencies that give
a route the state and the caller's live lease (410 when it is unknown, released, expired or
another user's). Used by :mod:`segloop.protocols.nninteractive`; imports segloop.api's
dependencies and jobs, never engines or torch. Must not import segloop.cli.
"""

from __future__ import annotations

import shutil
from typing import Annotated

import numpy as np
import numpy.typing as npt
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from segloop.api.app import Services, Who
from segloop.errors import SegloopError
from segloop.jobs.store import Principal

from .nni_lease import Diff, Lease, lease_key
from .refs import Ref, RefKind, RefStore

__all__ = ["AtCapacityError", "L", "LeaseExpiredError", "NniState", "St"]

#: the header that carries the lease token
LEASE = "X-Lease-Token"


class LeaseExpiredError(SegloopError):
    """The lease is unknown, released or expired: the client must claim a new one."""

    http_status = 410


class AtCapacityError(SegloopError):
    """All leases are taken."""

    http_status = 503


class NniState:
    """What the nnInteractive routes share."""

    def __init__(self, svc: Services, refs: RefStore) -> None:
        self.svc, self.refs = svc, refs
        self._masks: dict[str, tuple[str, int, npt.NDArray[np.uint8]]] = {}

    def expired(self, ref: Ref) -> str | None:
        """Why a lease has ended, or None while it is alive."""
        s = self.svc.settings
        from segloop.jobs.db import utcnow

        now = utcnow()
        if ref.idle_seconds(now) > s.protocol_idle_seconds:
            return f"lease expired after {s.protocol_idle_seconds:g} s without an interaction"
        if (now - ref.beat).total_seconds() > s.protocol_liveness_seconds:
            return f"lease expired: no heartbeat for {s.protocol_liveness_seconds:g} s"
        return None

    def before(self, lease: Lease) -> npt.NDArray[np.uint8]:
        """The client's buffer as of our last answer (kept in memory per lease while the job
        is still at that version; all zeros while the job has no version, without reading
        labels; read from the store otherwise). One job read."""
        version = lease.current_version()
        if version == 0:
            return np.zeros(lease.shape(), np.uint8)
        got = self._masks.get(lease.ref.key)
        if got is not None and got[0] == lease.job_id and got[1] == version:
            return got[2]
        return lease.buffer_mask(version)

    def remember(self, lease: Lease, diff: Diff) -> None:
        """Keep the mask just sent (a few leases' worth)."""
        if diff.mask is None or lease.job_id is None:
            return
        self._masks[lease.ref.key] = (lease.job_id, diff.version, diff.mask)
        while len(self._masks) > self.svc.settings.protocol_max_leases:
            self._masks.pop(next(iter(self._masks)))

    def live(self) -> list[Ref]:
        """Leases still alive (ended ones are removed on the way)."""
        out = []
        for ref in self.refs.list(RefKind.NNI_LEASE):
            if self.expired(ref):
                self.refs.delete(RefKind.NNI_LEASE, ref.key)
                self._masks.pop(ref.key, None)
                folder = self.svc.settings.home / "protocols" / "nninteractive"
                shutil.rmtree(folder / str(ref.data.get("dir", "-")), ignore_errors=True)
            else:
                out.append(ref)
        return out


async def state_of(request: Request) -> NniState:
    st: NniState = request.app.state.nninteractive
    return st


St = Annotated[NniState, Depends(state_of)]


def lease_ref(st: NniState, token: str | None, who: Principal) -> Ref:
    if not token:
        raise LeaseExpiredError("no lease token (X-Lease-Token): claim a lease first")
    ref = st.refs.get(RefKind.NNI_LEASE, lease_key(token))
    if ref is None or ref.owner != who.name:
        raise LeaseExpiredError("lease expired or unknown: claim a new one")
    why = st.expired(ref)
    if why:
        st.refs.delete(RefKind.NNI_LEASE, ref.key)
        raise LeaseExpiredError(why)
    return ref


async def lease_of(request: Request, st: St, who: Who) -> Lease:
    ref = await run_in_threadpool(lease_ref, st, request.headers.get(LEASE.lower()), who)
    return Lease(st.svc, st.refs, ref, who)


L = Annotated[Lease, Depends(lease_of)]
