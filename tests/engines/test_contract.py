"""Every registered engine passes the engine contract (engines needing weights get test weights)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segloop.engines import engine_class, engine_names

from .contract import check_engine_contract
from .provision import PROVISIONERS


def test_classic_is_registered() -> None:
    assert "classic" in engine_names()


@pytest.mark.parametrize("name", engine_names())
def test_engine_contract(name: str) -> None:
    cls = engine_class(name)
    provisioned = False
    if cls.unavailable_reason() is not None:
        prov = PROVISIONERS.get(name)
        assert prov is not None, (
            f"engine {name!r} is not available here ({cls.unavailable_reason()}) and has no test"
            " provisioner in tests/engines/provision.py"
        )
        prov(Path(os.environ["SEGLOOP_HOME"]))
        reason = cls.unavailable_reason()
        assert reason is None, f"engine {name!r} still unavailable after provisioning: {reason}"
        provisioned = True
    # random test weights cannot segment; their quality is not part of the contract
    check_engine_contract(cls(), quality=not provisioned)
