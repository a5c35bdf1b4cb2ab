"""How the contract test prepares engines that need weights.

``PROVISIONERS`` maps an engine name to a function that writes tiny test weights (random,
small config) into the given SEGLOOP_HOME so that ``unavailable_reason()`` becomes None.
Engines that are available without it (``classic``) need no entry. An engine that is neither
available nor provisioned here FAILS tests/engines/test_contract.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["PROVISIONERS"]

PROVISIONERS: dict[str, Callable[[Path], None]] = {}


def _sam2(model: str) -> Callable[[Path], None]:
    def provision(home: Path) -> None:  # SEGLOOP_HOME is already set to ``home``
        from segloop.engines.sam2.testing import install_tiny_weights

        install_tiny_weights(model)

    return provision


for _engine, _model in (("medsam2", "medsam2"), ("sam2.1-tiny", "sam2.1-tiny"),
                        ("sam2.1-small", "sam2.1-small"), ("sam2.1-base-plus", "sam2.1-base-plus"),
                        ("sam2.1-large", "sam2.1-large")):
    PROVISIONERS[_engine] = _sam2(_model)


def _sammed3d(home: Path) -> None:  # SEGLOOP_HOME is already set to ``home``
    from segloop.engines.sammed3d.testing import install_tiny_weights

    install_tiny_weights("sam-med3d-turbo")


PROVISIONERS["sammed3d"] = _sammed3d


def _medsam(home: Path) -> None:  # a tiny random-weight checkpoint in MedSAM's own layout
    from segloop.engines.medsam.testing import install_tiny_medsam

    install_tiny_medsam("medsam")


PROVISIONERS["medsam"] = _medsam
