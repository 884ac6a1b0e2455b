from __future__ import annotations

from pathlib import Path

import pytest
from chips import characterized_chip


@pytest.fixture(scope="session")
def chip_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int, Path]:
    """(database URL, job run id, folder) of the characterized and tuned 8 x 8 chip."""
    folder = tmp_path_factory.mktemp("analysis-chip")
    url, run_id = characterized_chip(folder)
    return url, run_id, folder
