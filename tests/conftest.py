from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

VECTORS_PATH = pathlib.Path(__file__).resolve().parents[2] / "shared" / "vectors" / "vectors.json"


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    with VECTORS_PATH.open() as f:
        data: dict[str, Any] = json.load(f)
    return data
