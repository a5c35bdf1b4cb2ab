"""SNOMED CT structures from pydicom's code dictionary: the short list, exact names, search."""

from __future__ import annotations

from segloop.io.dicomseg import segment_codes
from segloop.io.terminology import common_structures, find_structure, search_structures


def test_common_list_has_real_codes() -> None:
    common = common_structures()
    assert len(common) > 40
    liver = next(s for s in common if s.keyword == "Liver")
    assert (liver.meaning, liver.code) == ("Liver", "10200004")
    cat, typ = liver.codes()
    assert cat.meaning == "Anatomical Structure" and typ.value == "10200004"


def test_find_by_meaning_or_keyword_any_case() -> None:
    assert find_structure("brain stem").keyword == "BrainStem"  # type: ignore[union-attr]
    assert find_structure("SmallIntestine").meaning == "Small intestine"  # type: ignore[union-attr]
    assert find_structure("my favourite blob") is None
    assert find_structure("  ") is None


def test_search_puts_the_common_list_first_then_all_snomed() -> None:
    hits = search_structures("kidney", 10)
    assert hits[0].keyword == "Kidney" and len(hits) > 1
    assert all("kidney" in h.keyword.lower() or "kidney" in h.meaning.lower() for h in hits)
    assert len(search_structures("", 5)) == 5


def test_segment_codes_prefer_the_exact_structure() -> None:
    cat, typ = segment_codes("Neoplasm")
    assert cat.meaning == "Morphologically Abnormal Structure" and typ.value == "108369006"
    cat, typ = segment_codes("left kidney upper pole")  # no exact name: the words decide
    assert typ.meaning == "Kidney"
