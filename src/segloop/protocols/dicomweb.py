"""A DICOMweb server (Orthanc's plugin, a PACS) as the MONAI Label datastore's image source.

With ``dicomweb_url`` set, a MONAI Label image id that segloop does not know is looked up as a
SeriesInstanceUID on that server (QIDO-RS), as MONAI Label's own DICOMweb datastore does for
OHIF: the series is fetched (WADO-RS, as stored: no transcoding is asked of the server) into
one ``.zip`` that segloop ingests as a job. A ``final`` label is written as DICOM-SEG
referencing the series and stored back (STOW-RS), where OHIF shows it. The series offered as
images are those of ``dicomweb_modalities``; a series some SEG on the server references counts
as labeled. Talks HTTP through the real ``dicomweb-client`` package (imported when first
used). Imports segloop.config and segloop.errors only; never FastAPI, engines or torch.
Must not import segloop.cli (the layer contract, pyproject.toml).
"""

from __future__ import annotations

import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segloop.config import Settings
from segloop.errors import SegloopError

__all__ = ["DicomWeb", "DicomWebError", "RemoteSeries"]

_STUDY, _SERIES, _MODALITY = "0020000D", "0020000E", "00080060"
_PATIENT, _DESC, _DATE, _NUMBER = "00100020", "0008103E", "00080020", "00201209"
_REF_SERIES_SEQ = "00081115"


class DicomWebError(SegloopError):
    """The DICOMweb server could not be reached or refused a request."""

    http_status = 502


@dataclass(frozen=True)
class RemoteSeries:
    """One series as QIDO-RS describes it."""

    series_uid: str
    study_uid: str
    modality: str
    patient_id: str
    description: str
    study_date: str
    instances: int | None

    def info(self) -> dict[str, Any]:
        """MONAI Label's image info fields of a DICOMweb image."""
        return {"SeriesInstanceUID": self.series_uid, "StudyInstanceUID": self.study_uid,
                "Modality": self.modality, "PatientID": self.patient_id,
                "SeriesDescription": self.description, "StudyDate": self.study_date}


def _value(ds: dict[str, Any], tag: str) -> str:
    v = (ds.get(tag) or {}).get("Value") or [""]
    first = v[0]
    if isinstance(first, dict):  # a person name
        return str(first.get("Alphabetic", ""))
    return str(first)


def _series(ds: dict[str, Any]) -> RemoteSeries:
    n = _value(ds, _NUMBER)
    return RemoteSeries(_value(ds, _SERIES), _value(ds, _STUDY), _value(ds, _MODALITY),
                        _value(ds, _PATIENT), _value(ds, _DESC), _value(ds, _DATE),
                        int(n) if n.isdigit() else None)


class DicomWeb:
    """The configured DICOMweb server: find, fetch and store series."""

    def __init__(self, settings: Settings) -> None:
        if not settings.dicomweb_url:
            raise ValueError("dicomweb_url is not set")
        self.url = settings.dicomweb_url.rstrip("/")
        self.modalities = list(settings.dicomweb_modalities)
        self._auth = ((settings.dicomweb_user, settings.dicomweb_password or "")
                      if settings.dicomweb_user else None)
        self._local = threading.local()  # a requests session is not shared between threads

    def _client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            import requests
            from dicomweb_client.api import DICOMwebClient

            session = requests.Session()
            if self._auth is not None:
                session.auth = self._auth
            c = DICOMwebClient(self.url, session=session)
            # its default (5 tries, 1 s x 2^n back-off, also on refused connections) holds a
            # client's request for 30 s when the server is down: 3 quick tries instead
            c.set_http_retry_params(max_attempts=3, wait_exponential_multiplier=200)
            self._local.client = c
        return c

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with the server's failures as one-line DicomWebErrors."""
        import requests

        try:
            return fn(*args, **kwargs)
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            raise DicomWebError(f"the DICOMweb server {self.url} answered {code} to {what}"
                                ) from None
        except requests.RequestException as exc:
            raise DicomWebError(f"cannot reach the DICOMweb server {self.url} ({what}): "
                                f"{type(exc).__name__}; check SEGLOOP_DICOMWEB_URL") from None

    # ------------------------------------------------------------------ QIDO
    def find(self, series_uid: str) -> RemoteSeries | None:
        """The series with this SeriesInstanceUID, or None."""
        found = self._call(f"a search for series {series_uid}", self._client().search_for_series,
                           search_filters={"SeriesInstanceUID": series_uid})
        for ds in found or []:
            s = _series(ds)
            if s.series_uid == series_uid:  # some servers ignore unknown filters
                return s
        return None

    def list_series(self) -> list[RemoteSeries]:
        """The series of the offered modalities, in the server's order."""
        out: dict[str, RemoteSeries] = {}
        for m in self.modalities:
            for ds in self._call(f"a search for {m} series", self._client().search_for_series,
                                 search_filters={"Modality": m}) or []:
                s = _series(ds)
                if s.series_uid and s.modality in self.modalities:
                    out.setdefault(s.series_uid, s)
        return list(out.values())

    def labeled(self) -> set[str]:
        """SeriesInstanceUIDs some SEG series on the server refers to."""
        out: set[str] = set()
        c = self._client()
        for ds in self._call("a search for SEG series", c.search_for_series,
                             search_filters={"Modality": "SEG"}) or []:
            seg = _series(ds)
            meta = self._call(f"the metadata of SEG {seg.series_uid}",
                              c.retrieve_series_metadata, seg.study_uid, seg.series_uid)
            for inst in meta or []:
                for item in (inst.get(_REF_SERIES_SEQ) or {}).get("Value") or []:
                    ref = _value(item, _SERIES)
                    if ref:
                        out.add(ref)
        return out

    # ------------------------------------------------------------------ WADO, STOW
    def fetch(self, series: RemoteSeries, dest: Path) -> int:
        """Write every instance of ``series`` into the zip ``dest`` (as stored); returns the
        number of instances."""
        from pydicom.filebase import DicomBytesIO

        n = 0
        c = self._client()
        with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zf:
            it = self._call(f"retrieving series {series.series_uid}", c.iter_series,
                            series.study_uid, series.series_uid,
                            media_types=(("application/dicom", "*"),))
            while True:
                ds = self._call(f"retrieving series {series.series_uid}", next, it, None)
                if ds is None:
                    break
                buf = DicomBytesIO()
                ds.save_as(buf, enforce_file_format=True)
                n += 1
                zf.writestr(f"{n:06d}.dcm", buf.getvalue())
        if n == 0:
            raise DicomWebError(f"series {series.series_uid} on {self.url} has no instances")
        return n

    def store(self, path: Path) -> str:
        """STOW-RS one DICOM file; returns its SeriesInstanceUID."""
        import pydicom

        ds = pydicom.dcmread(str(path))
        result = self._call("storing the DICOM-SEG", self._client().store_instances, [ds])
        failed = getattr(result, "FailedSOPSequence", None) if result is not None else None
        if failed:
            reason = getattr(failed[0], "FailureReason", "?")
            raise DicomWebError(f"the DICOMweb server {self.url} refused the DICOM-SEG "
                                f"(failure reason {reason})")
        return str(ds.SeriesInstanceUID)
