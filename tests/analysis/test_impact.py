"""``nvmlab impact`` on a characterized, tuned chip that measured products: every
figure printed is in the JSON under its documented name, the plots are drawn, the run
stores its figures, and the products measured through the array agree with the model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from chips import CHIP

from nvmlab.cli import main
from nvmlab.storage import open_database
from nvmlab.storage.query import chain_tuning_outcomes, get_run

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"


def _documented(heading_after: str, stop: str) -> set[str]:
    text = DOC.read_text()
    part = text[text.index(heading_after) : text.index(stop, text.index(heading_after))]
    names = set()
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2:
            names.update(re.findall(r"`([a-z0-9_]+)`", cells[0]))
    return names


@pytest.mark.timeout(600)
def test_nvmlab_impact_prints_and_stores_every_documented_figure(
    chip_db: tuple[str, int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, run_id, _ = chip_db
    out = tmp_path / "impact"
    code = main(["impact", "--chip", CHIP, "--db", url, "--products-run", str(run_id),
                 "--draws", "8", "--out", str(out), "--json", str(tmp_path / "i.json"),
                 "--model-out", str(tmp_path / "model.json")])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    figures = json.loads((tmp_path / "i.json").read_text())
    top = _documented("## The figures (JSON names)", "`in_the_loop` (products")
    assert set(figures) == top
    loop = _documented("`in_the_loop` (products", "## Speed")
    assert set(figures["in_the_loop"]) == loop
    for name in re.findall(r"\b([a-z]+(?:_[a-z0-9]+)+) [-0-9]", printed):
        assert name in figures or name in figures["in_the_loop"], name
    for plot in ("impact_temperature", "impact_energy", "impact_defects"):
        assert (out / f"{plot}.png").stat().st_size > 1000
    impact_run = int(printed.splitlines()[0].split()[1].rstrip(":"))
    with open_database(url) as db:
        stored = get_run(db, impact_run)
    assert stored["status"] == "completed"
    assert stored["config"]["summary"]["energy_ratio"] == figures["energy_ratio"]
    # the model's own account of the products measured through the array
    assert loop and figures["in_the_loop"]["vectors"] == 12
    loop_figures = figures["in_the_loop"]
    # the devices' own reads and the cubic I-V explain the products to within 2 %; the
    # targets (what the network expects) to within the tuning error: a column current
    # averages its devices' errors, so its median error stays under the devices' p90
    assert loop_figures["relative_error_reads_median"] < 0.02
    with open_database(url) as db:
        outcomes = chain_tuning_outcomes(db, run_id)
    done = outcomes["status"] != "skipped"
    device_err = np.abs(outcomes["final_s"][done].astype(float) / outcomes["target_s"][done] - 1)
    assert loop_figures["relative_error_target_median"] < np.quantile(device_err, 0.9)
    assert 0.0 < loop_figures["within_95pct_share"] <= 1.0
    assert figures["seconds_per_evaluation"] < 1.0
