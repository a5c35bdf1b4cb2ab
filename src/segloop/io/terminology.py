"""The structures a DICOM-SEG segment can be coded as: SNOMED CT codes from pydicom's code
dictionary (the codes highdicom uses), a short list annotators pick from, and a search over all.

A structure is named by its SNOMED meaning ("Liver", "Brain Stem"); naming an object so makes
its DICOM-SEG segment carry exactly that code (:func:`find_structure`), with the category
Anatomical Structure, or Morphologically Abnormal Structure for lesions, tumours and the like.
Codes are read from pydicom, never typed here. Must not import jobs, api, engines or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = ["Structure", "common_structures", "find_structure", "search_structures"]

#: pydicom ``codes.SCT`` keywords offered first (abnormal ones coded as such)
_COMMON = (
    "Liver", "Spleen", "Kidney", "Pancreas", "Gallbladder", "Stomach", "Esophagus", "Duodenum",
    "SmallIntestine", "Colon", "Rectum", "Bladder", "Prostate", "Uterus", "Ovary",
    "AdrenalGland", "Aorta", "InferiorVenaCava", "PortalVein", "Heart", "Lung", "Trachea",
    "Breast", "Brain", "BrainStem", "Cerebellum", "WhiteMatter", "GrayMatter", "Hippocampus",
    "Thalamus", "Ventricle", "CerebrospinalFluid", "SpinalCord", "Vertebra", "Rib", "Femur",
    "Pelvis", "Skull", "Bone", "Muscle", "Fat", "LymphNode", "Artery", "Vein", "Tissue",
    "Lesion", "Neoplasm", "Mass", "Nodule", "Cyst", "Metastasis", "Edema", "Necrosis",
    "Hemorrhage",
)
_ABNORMAL = {"Lesion", "Neoplasm", "Tumor", "Mass", "Nodule", "Cyst", "Metastasis", "Edema",
             "Necrosis", "Hemorrhage"}


@dataclass(frozen=True)
class Structure:
    """One codable structure: its SNOMED CT type code and the category it goes under."""

    keyword: str  # pydicom codes.SCT keyword
    meaning: str  # the code's meaning: the name shown and matched
    code: str  # SNOMED CT concept id
    category: str  # "Anatomical Structure" | "Morphologically Abnormal Structure" | "Tissue"

    def codes(self) -> tuple[Any, Any]:
        """(category, type) as pydicom Codes for highdicom."""
        from pydicom.sr.codedict import codes

        cat = {"Anatomical Structure": codes.SCT.AnatomicalStructure,
               "Morphologically Abnormal Structure": codes.SCT.MorphologicallyAbnormalStructure,
               "Tissue": codes.SCT.Tissue}[self.category]
        return cat, getattr(codes.SCT, self.keyword)


def _structure(keyword: str) -> Structure | None:
    from pydicom.sr.codedict import codes

    try:
        c = getattr(codes.SCT, keyword)
    except AttributeError:
        return None
    cat = ("Morphologically Abnormal Structure" if keyword in _ABNORMAL
           else "Tissue" if keyword == "Tissue" else "Anatomical Structure")
    return Structure(keyword, str(c.meaning), str(c.value), cat)


@cache
def common_structures() -> tuple[Structure, ...]:
    """The short list, in the order above."""
    return tuple(s for k in _COMMON if (s := _structure(k)) is not None)


@cache
def _all_keywords() -> tuple[str, ...]:
    from pydicom.sr.codedict import codes

    return tuple(codes.SCT.dir(""))


def find_structure(name: str) -> Structure | None:
    """The structure a name means exactly (SNOMED meaning or keyword, any case), or None."""
    low = name.strip().lower()
    if not low:
        return None
    for s in common_structures():
        if low in (s.meaning.lower(), s.keyword.lower()):
            return s
    squashed = low.replace(" ", "")
    for k in _all_keywords():
        if k.lower() == squashed:
            hit = _structure(k)
            if hit is not None and hit.meaning.lower().replace(" ", "") == squashed:
                return hit
    return None


def search_structures(query: str, limit: int = 50) -> list[Structure]:
    """The common structures whose meaning contains ``query``, then other SNOMED keywords that
    do (at most ``limit``); the common list when ``query`` is empty."""
    q = query.strip().lower()
    common = [s for s in common_structures() if q in s.meaning.lower()]
    if not q or len(common) >= limit:
        return common[:limit]
    seen = {s.keyword for s in common}
    more: list[Structure] = []
    for k in _all_keywords():
        if k in seen or q.replace(" ", "") not in k.lower():
            continue
        s = _structure(k)
        if s is not None:
            more.append(s)
        if len(common) + len(more) >= limit:
            break
    return common + more
