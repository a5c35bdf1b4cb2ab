"""MONAI Label's datastore and sessions, mapped onto segloop jobs, versions and reviewed cases.

- An *image* (``PUT /datastore/image?image=ID``) is a segloop job; ``ID`` is the client's name
  for it (a :class:`~segloop.protocols.refs.Ref` of kind ``ml-image``).
- A *session* (``PUT /session/``) is a job too, named by a generated id; it expires after
  ``protocol_idle_seconds`` without use (or the client's ``expiry``), after which
  ``GET /session/{id}`` answers 404 so the client uploads again.
- A *label* (``PUT /datastore/label?image=ID&tag=T``) becomes a new mask version of the job
  (source ``edit``, author the caller). Tag ``final`` also marks that version reviewed, which
  copies it into segloop's datastore of reviewed cases (the path ``segloop train
  --from-datastore`` reads); that needs the reviewer or admin role, as in the web viewer.
  A label may also come as OHIF sends it: ``label.bin``, one uint8 per voxel of the image
  as the client loaded it (first index fastest).
- With ``dicomweb_url`` set (:mod:`segloop.protocols.dicomweb`), an unknown image id is
  looked up as a SeriesInstanceUID on that server and fetched into a job at first use; its
  ``final`` labels are stored back there as DICOM-SEG. Series not fetched yet are listed and
  offered by active learning like the other images.

Imports segloop.jobs, segloop.io and the refs table; never engines, torch or FastAPI.
Must not import segloop.cli (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segloop.api.app import Services
from segloop.errors import InputError
from segloop.jobs.errors import NotFoundError
from segloop.jobs.records import JobRecord
from segloop.jobs.store import Principal

from .dicomweb import DicomWeb, DicomWebError, RemoteSeries
from .ml_label import read_label
from .refs import Ref, RefKind, RefStore

__all__ = ["FINAL", "TOUCH_EVERY", "Candidate", "MlStore", "touch_after"]

log = logging.getLogger(__name__)

#: MONAI Label's tag of a finished label
FINAL = "final"

#: a session's last use is rewritten at most this often by ``/infer`` (seconds)
TOUCH_EVERY = 60.0


def touch_after(expiry: float) -> float:
    """Seconds after its last recorded use that an ``/infer`` records a session's use again:
    once a minute, or every tenth of the expiry when that is shorter (a session in use then
    expires at most that much earlier than one touched on every call)."""
    return min(TOUCH_EVERY, expiry / 10)


@dataclass(frozen=True)
class Candidate:
    """An image active learning may offer: its id, MONAI Label info, mask versions so far and
    upload time (empty for a DICOMweb series not fetched yet)."""

    key: str
    info: dict[str, Any]
    versions: int
    created: str


def _ts(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.UTC).timestamp())


class MlStore:
    """MONAI Label images, labels and sessions over a :class:`Services` and a :class:`RefStore`."""

    def __init__(self, svc: Services, refs: RefStore) -> None:
        self.svc, self.refs = svc, refs
        self.dicomweb = DicomWeb(svc.settings) if svc.settings.dicomweb_url else None
        self._fetching = threading.Lock()

    # ------------------------------------------------------------------ images
    def add_image(self, who: Principal, image_id: str, path: Path, filename: str,
                  info: dict[str, Any]) -> dict[str, Any]:
        """Ingest an uploaded file as a job named ``image_id`` (replacing an older one)."""
        if not image_id or len(image_id) > 200:
            raise InputError("image ids are 1-200 characters")
        old = self.refs.get(RefKind.ML_IMAGE, image_id)
        if old is not None and old.owner != who.name and not who.is_reviewer:
            from segloop.jobs.errors import ForbiddenError

            raise ForbiddenError(f"image id {image_id!r} is taken by another user; choose "
                                 "another id")
        job = self.svc.store.create_job(path, filename, who)
        self.refs.put(RefKind.ML_IMAGE, image_id, job.job_id, who.name,
                      {"info": {**info, "name": filename}, "labels": {}})
        return {"image": image_id}

    def image(self, image_id: str, who: Principal) -> tuple[Ref, JobRecord]:
        """The image's ref and its job (NotFoundError when unknown, deleted or not visible)."""
        ref = self.refs.get(RefKind.ML_IMAGE, image_id)
        if ref is None and self.dicomweb is not None:
            ref = self._fetch(image_id, who)
        if ref is None or ref.job_id is None:
            where = "" if self.dicomweb is None else \
                f" nor a series with that SeriesInstanceUID on {self.dicomweb.url}"
            raise NotFoundError(f"no image {image_id!r} in the datastore{where}")
        try:
            job = self.svc.store.get_job(ref.job_id, who)
        except NotFoundError:
            raise NotFoundError(f"image {image_id!r} was deleted (or belongs to another user)"
                                ) from None
        return ref, job

    def _fetch(self, series_uid: str, who: Principal) -> Ref | None:
        """The DICOMweb series ``series_uid`` fetched into a new job (None: no such series)."""
        assert self.dicomweb is not None
        with self._fetching:  # one fetch at a time: a second request finds the first's ref
            ref = self.refs.get(RefKind.ML_IMAGE, series_uid)
            if ref is not None:
                return ref
            series = self.dicomweb.find(series_uid)
            if series is None:
                return None
            self.svc.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.svc.settings.tmp_dir / f"dicomweb-{uuid.uuid4()}"
            try:
                n = self.dicomweb.fetch(series, tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            job = self.svc.store.create_job(tmp, f"{series_uid}.zip", who)  # removes tmp
            log.info("fetched DICOMweb series %s (%d instances) as job %s", series_uid, n,
                     job.job_id)
            return self.refs.put(RefKind.ML_IMAGE, series_uid, job.job_id, who.name,
                                 {"info": {**series.info(), "name": series_uid},
                                  "labels": {}, "dicomweb": True})

    def images(self, who: Principal) -> list[tuple[Ref, JobRecord]]:
        """Every image the caller may see, with its job."""
        out = []
        for ref in self.refs.list(RefKind.ML_IMAGE):
            if ref.job_id is None:
                continue
            try:
                out.append((ref, self.svc.store.get_job(ref.job_id, who)))
            except NotFoundError:
                continue
        return out

    def remove_image(self, image_id: str, who: Principal) -> None:
        """Delete the image's job (its reviewed datastore copies stay) and its name."""
        ref, _ = self.image(image_id, who)
        assert ref.job_id is not None
        self.svc.store.delete_job(ref.job_id, who)
        self.refs.delete(RefKind.ML_IMAGE, image_id)

    # ------------------------------------------------------------------ labels
    def save_label(self, who: Principal, image_id: str, tag: str, path: Path,
                   params: dict[str, Any]) -> dict[str, Any]:
        """Store an uploaded label map as a version of the image's job; ``final`` reviews it
        (the file is read and checked by :func:`~segloop.protocols.ml_label.read_label`)."""
        ref, job = self.image(image_id, who)
        assert ref.job_id is not None
        if tag == FINAL and not who.is_reviewer:
            from segloop.jobs.errors import ForbiddenError

            raise ForbiddenError("saving a 'final' label marks it reviewed, which needs the "
                                 "reviewer or admin role; save it with another tag (e.g. "
                                 "tag=draft) for a reviewer to finish")
        lab = read_label(self.svc, who, job, image_id, path, params.get("label_info"))
        n = self.svc.store.edit_mask(ref.job_id, who, lab.labels.astype(np.uint8))
        if lab.names:  # a DICOM-SEG's segment names
            self._name_objects(ref.job_id, who, [{"name": v, "idx": k}
                                                 for k, v in lab.names.items() if v])
        self._name_objects(ref.job_id, who, params.get("label_info"))
        out: dict[str, Any] = {"image": image_id, "label": image_id, "version": n}
        if tag == FINAL:
            rev = self.svc.store.review(ref.job_id, who, n)
            out["datastore_case"] = rev.datastore_case
        info = {k: v for k, v in params.items() if k != "client_id"}
        ref.data.setdefault("labels", {})[tag] = {
            "version": n, "info": {**info, "user": who.name, "ts": _ts(dt.datetime.now(dt.UTC)
                                                                       .replace(tzinfo=None))},
            "datastore_case": out.get("datastore_case")}
        self.refs.update(ref, touch=True)
        if tag == FINAL and ref.data.get("dicomweb") and self.dicomweb is not None:
            try:
                seg_uid = self._store_seg(job, who, n)
            except (DicomWebError, InputError) as exc:
                raise DicomWebError(f"label saved in segloop as version {n} (reviewed), but "
                                    f"not stored as DICOM-SEG: {exc}; save it again to retry"
                                    ) from None
            out["SeriesInstanceUID"] = seg_uid
            ref.data["labels"][tag]["info"]["SeriesInstanceUID"] = seg_uid
            self.refs.update(ref)
        return out

    def _store_seg(self, job: JobRecord, who: Principal, version: int) -> str:
        """Version ``version`` of a DICOMweb image's job as DICOM-SEG, stored back with
        STOW-RS; returns the SEG's SeriesInstanceUID."""
        from segloop.io import write_dicom_seg

        assert self.dicomweb is not None
        labels, _ = self.svc.store.labels(job.job_id, who, version)
        vol = self.svc.source_volume(job)
        segs = {o.label_value: o.name for o in self.svc.store.list_objects(job.job_id, who)}
        path = self.svc.settings.tmp_dir / f"seg-{uuid.uuid4()}.dcm"
        try:
            write_dicom_seg(labels, vol, path, segs)
            return self.dicomweb.store(path)
        finally:
            path.unlink(missing_ok=True)

    def _name_objects(self, job_id: str, who: Principal, label_info: Any) -> None:
        """Name the job's objects after MONAI Label's ``label_info`` [{name, idx}, ...]."""
        if not isinstance(label_info, list):
            return
        objs = {o.label_value: o.object_id
                for o in self.svc.store.list_objects(job_id, who)}
        for item in label_info:
            if not isinstance(item, dict) or "name" not in item:
                continue
            idx = item.get("idx", item.get("id"))
            if isinstance(idx, int) and idx in objs:
                self.svc.store.upsert_object(job_id, who, objs[idx], str(item["name"])[:100],
                                             None, None)

    def label(self, image_id: str, tag: str, who: Principal) -> tuple[Ref, int]:
        """The image's ref and the version number saved under ``tag``."""
        ref, _ = self.image(image_id, who)
        entry = ref.data.get("labels", {}).get(tag)
        if entry is None:
            raise NotFoundError(f"image {image_id!r} has no label tagged {tag!r}")
        return ref, int(entry["version"])

    def update_label_info(self, image_id: str, tag: str, info: dict[str, Any],
                          who: Principal) -> dict[str, Any]:
        """Merge ``info`` into a label's info."""
        ref, _ = self.label(image_id, tag, who)
        entry = ref.data["labels"][tag]
        entry["info"] = {**entry.get("info", {}), **info, "user": who.name}
        self.refs.update(ref, touch=True)
        return dict(entry["info"])

    def update_image_info(self, image_id: str, info: dict[str, Any], who: Principal
                          ) -> dict[str, Any]:
        """Merge ``info`` into an image's info."""
        ref, _ = self.image(image_id, who)
        ref.data["info"] = {**ref.data.get("info", {}), **info}
        self.refs.update(ref, touch=True)
        return dict(ref.data["info"])

    # ------------------------------------------------------------------ listings
    def image_info(self, ref: Ref, job: JobRecord) -> dict[str, Any]:
        """MONAI Label's image info record."""
        return {**ref.data.get("info", {}), "ts": _ts(ref.created),
                "segloop_job": job.job_id, "shape": job.source_shape}

    def remote(self) -> list[RemoteSeries]:
        """DICOMweb series not fetched yet (none without a DICOMweb server)."""
        if self.dicomweb is None:
            return []
        return [s for s in self.dicomweb.list_series()
                if self.refs.get(RefKind.ML_IMAGE, s.series_uid) is None]

    def status(self, who: Principal) -> dict[str, Any]:
        """``GET /datastore/?output=stats`` (a DICOMweb server that does not answer is left
        out, so ``/info/`` still works)."""
        tags: dict[str, int] = {}
        total = completed = 0
        try:
            total += len(self.remote())
        except DicomWebError as exc:
            log.warning("datastore stats without DICOMweb: %s", exc)
        for ref, _ in self.images(who):
            total += 1
            labels = ref.data.get("labels", {})
            completed += FINAL in labels
            for t in labels:
                tags[t] = tags.get(t, 0) + 1
        return {"total": total, "completed": completed, "label_tags": tags}

    def json(self, who: Principal) -> dict[str, Any]:
        """``GET /datastore/?output=all``: MONAI Label's datastore model."""
        objects = {}
        for ref, job in self.images(who):
            labels = {t: {"ext": ".nii.gz", "info": {**e.get("info", {}),
                                                     "version": e["version"]}}
                      for t, e in ref.data.get("labels", {}).items()}
            objects[ref.key] = {"image": {"ext": ".nii.gz", "info": self.image_info(ref, job)},
                                "labels": labels}
        for s in self.remote():
            objects[s.series_uid] = {"image": {"ext": ".dcm", "info": s.info()}, "labels": {}}
        return {"name": "segloop", "description": "segloop jobs and reviewed cases",
                "images_dir": "images", "labels_dir": "labels", "objects": objects}

    def datalist(self, who: Principal) -> list[dict[str, str]]:
        """``GET /datastore/?output=train``: image/label pairs of the reviewed cases."""
        root = self.svc.settings.datastore_dir
        out = []
        for ref, _ in self.images(who):
            case = ref.data.get("labels", {}).get(FINAL, {}).get("datastore_case")
            if case:
                out.append({"image": str(root / case / "image.nii.gz"),
                            "label": str(root / case / "label.nii.gz")})
        return out

    def unlabeled(self, who: Principal) -> list[Candidate]:
        """Images without a final label: segloop's in upload order, then the DICOMweb
        server's series not fetched yet and not referenced by a SEG there."""
        done = self.dicomweb.labeled() if self.dicomweb is not None else set()
        out = [Candidate(r.key, self.image_info(r, j), j.current_version,
                         j.created)
               for r, j in self.images(who)
               if FINAL not in r.data.get("labels", {}) and r.key not in done]
        out += [Candidate(s.series_uid, s.info(), 0, "") for s in self.remote()
                if s.series_uid not in done]
        return out

    # ------------------------------------------------------------------ sessions
    def create_session(self, who: Principal, path: Path, filename: str, expiry: int
                       ) -> dict[str, Any]:
        """Ingest an upload as a session job."""
        import uuid

        for old in self.refs.list(RefKind.ML_SESSION):  # forget expired sessions (jobs stay)
            if old.idle_seconds() > float(old.data.get("expiry", 3600)):
                self.refs.delete(RefKind.ML_SESSION, old.key)
        job = self.svc.store.create_job(path, filename, who)
        sid = str(uuid.uuid4())
        exp = expiry if expiry > 0 else int(self.svc.settings.protocol_idle_seconds)
        ref = self.refs.put(RefKind.ML_SESSION, sid, job.job_id, who.name,
                            {"expiry": exp, "image": filename})
        return {"session_id": sid, "session_info": self.session_info(ref)}

    def session(self, sid: str, who: Principal, touch: bool = False) -> Ref:
        """A live session; NotFoundError when unknown, expired or its job is gone. ``touch``
        records this use (its last access time) now."""
        ref, _ = self.session_job(sid, who, touch)
        return ref

    def session_job(self, sid: str, who: Principal, touch: bool | None = None
                    ) -> tuple[Ref, JobRecord]:
        """A live session and its job (read once); NotFoundError when unknown, expired or
        its job is gone. ``touch`` True records this use now, False never, None (an
        ``/infer``) only when the last recorded use is older than :func:`touch_after` of
        the session's expiry: a session in use is not rewritten on every click."""
        ref = self.refs.get(RefKind.ML_SESSION, sid)
        if ref is None or ref.job_id is None or (ref.owner != who.name and not who.is_reviewer):
            raise NotFoundError(f"session {sid} not found: create a new one")
        expiry = float(ref.data.get("expiry", 3600))
        idle = ref.idle_seconds()
        if idle > expiry:
            raise NotFoundError(f"session {sid} expired: upload the image again")
        job = self.svc.store.get_job(ref.job_id, who)
        if touch or (touch is None and idle > touch_after(expiry)):
            self.refs.update(ref, touch=True)
        return ref, job

    def session_info(self, ref: Ref) -> dict[str, Any]:
        """MONAI Label's session record."""
        return {"name": ref.key, "path": "", "image": ref.data.get("image", ""),
                "meta": {"segloop_job": ref.job_id}, "create_ts": _ts(ref.created),
                "last_access_ts": _ts(ref.touched), "expiry": ref.data.get("expiry", 3600)}

    def remove_session(self, sid: str, who: Principal) -> dict[str, Any]:
        """Forget a session (its job stays, like every segloop job, until cleanup)."""
        ref = self.session(sid, who)
        self.refs.delete(RefKind.ML_SESSION, sid)
        return self.session_info(ref)
