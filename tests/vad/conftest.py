from __future__ import annotations

import pytest

from vad import SileroModel


@pytest.fixture(scope="session")
def silero_model() -> SileroModel:
    return SileroModel.load()
