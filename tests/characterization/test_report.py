"""``nvmlab report``: PNG plots and a self-contained HTML page from what the sweeps store."""

from __future__ import annotations

import argparse
import base64
import re
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benches import HARSH, characterization_bench

from nvmlab.characterization.report import (
    PLOTS,
    MissingDependencyError,
    ReportResult,
    _gather_run,
    register_report,
    write_report,
)
from nvmlab.characterization.sweep import (
    _SWEEPS,
    ProfileUpdate,
    Sweep,
    SweepUnit,
    register_sweep,
    run_sweep,
)
from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ReadSettings
from nvmlab.steps import Param, unregister_step
from nvmlab.storage import (
    RecordWriter,
    finish_run,
    open_database,
    register_chip,
    resume_run,
    save_profile,
    start_run,
)
from nvmlab.storage.database import Database
from nvmlab.storage.profile import ChipProfile

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MEMRISTOR_PLOTS = {
    "conductance_map", "defect_map", "threshold_histograms", "conductance_vs_temperature",
    "noise_vs_conductance", "iv_loops", "drift", "endurance", "disturb",
}  # fmt: skip
EFLASH_PLOTS = {"threshold_histograms", "idvg", "program_erase"}


# ------------------------------------------------------------------------------ data


def _run(db: Database, chip_id: int, kind: str, summary: dict[str, Any], **params: Any) -> int:
    config = {"kind": kind, "params": params, "summary": summary}
    return start_run(db, f"characterize-{kind}", config=config, chip_id=chip_id, seed=0)


def _memristor_db(db: Database, rng: np.random.Generator) -> dict[str, int]:
    """A 8 x 10 memristor chip characterized by hand-made (synthetic) sweeps, written
    through the storage API exactly as the sweeps store it; returns the run ids by kind."""
    chip, _ = register_chip(db, "M1", array_kind="memristor", n_rows=8, n_cols=10)
    shape = (8, 10)
    runs: dict[str, int] = {}
    summaries: dict[str, dict[str, Any]] = {}
    g = rng.uniform(5e-6, 90e-6, shape)
    defect = np.zeros(shape, dtype=np.int8)
    defect[1, 2], defect[5, 7] = 1, 2
    g[1, 2], g[5, 7] = 0.2e-6, 140e-6

    # map: conductance and defects; it stores the first profile
    summaries["map"] = {"median_s": float(np.median(g)), "stuck": 2}
    runs["map"] = _run(db, chip.id, "map", summaries["map"], read_v=0.2)
    finish_run(db, runs["map"], "completed")
    first = ChipProfile(
        chip="M1", kind="memristor", rows=8, cols=10, conductance_s=g, defect_class=defect,
        meta={"runs": {"map": runs["map"]}, "summary": {"map": summaries["map"]}},
    )  # fmt: skip
    save_profile(db, first, run_id=runs["map"])

    # I-V: loops on three devices (a hysteretic loop: set at +1 V, reset at -1 V)
    summaries["iv"] = {"devices": 3}
    runs["iv"] = _run(db, chip.id, "iv", summaries["iv"], max_v=1.5)
    up = np.linspace(0, 1.5, 31)
    v = np.concatenate([up, up[::-1], -up, -up[::-1]])
    with RecordWriter(db, runs["iv"], chip_id=chip.id) as w:
        for r, c in ((0, 0), (2, 3), (4, 9)):
            g_on, g_off = 80e-6, 8e-6
            state = np.where(np.arange(v.size) < 20, g_off, g_on)
            state[v.size // 2 + 20 :] = g_off
            w.add_trace(r, c, "iv-loop", v, v * state * (1 + 0.3 * v**2))
            w.add_trace(r, c, "iv-dc", up[1:6] * 0.2, up[1:6] * 0.2 * g[r, c])
    finish_run(db, runs["iv"], "completed")

    plots: dict[str, dict[str, Any]] = {
        "temperature": {
            "temperatures_c": [25.0, 45.0, 65.0, 85.0],
            "states_s": [10e-6, 30e-6, 60e-6, 90e-6],
            "mean_conductance_s": [[s * (1 + 0.002 * (t - 25)) for t in (25, 45, 65, 85)]
                                   for s in (10e-6, 30e-6, 60e-6, 90e-6)],
        },
        "noise": {
            "conductance_s": [10e-6, 30e-6, 60e-6, 90e-6] * 2,
            "sigma_s": [2e-8 + 0.002 * s / n for n in (1, 10) for s in (10e-6, 30e-6, 60e-6, 90e-6)],
            "nplc": [1.0] * 4 + [10.0] * 4,
        },
        "retention": {
            "time_s": [1.0, 10.0, 100.0, 1000.0, 1e4],
            "states_s": [10e-6, 90e-6],
            "mean_relative_change": [[-0.01 * k for k in range(5)], [-0.005 * k for k in range(5)]],
        },
        "endurance": {
            "cycles": [1, 10, 100, 1000, 10000],
            "g_on_s": [90e-6, 89e-6, 87e-6, 80e-6, 60e-6],
            "g_off_s": [5e-6, 5.2e-6, 6e-6, 9e-6, 20e-6],
        },
        "disturb": {
            "read_v": [0.1, 0.2, 0.3, 0.4],
            "read_drift_rel": [0.0, 0.0005, 0.003, 0.02],
            "amplitude_v": [0.8, 1.2, 1.6, 2.0],
            "disturb_v2_rel": [0.0, 0.001, 0.01, 0.06],
            "disturb_v3_rel": [0.0, 0.0, 0.001, 0.005],
        },
    }  # fmt: skip
    for kind, plot in plots.items():
        summaries[kind] = {"devices": 80, "plot": plot, "fit": {"slope": 1.5, "r2": 0.98}}
        runs[kind] = _run(db, chip.id, kind, summaries[kind])
        finish_run(db, runs[kind], "completed")

    # thresholds (stored last, with the temperature and drift arrays): the newest profile
    summaries["thresholds"] = {"set_median_v": 1.1, "reset_median_v": -0.9}
    runs["thresholds"] = _run(db, chip.id, "thresholds", summaries["thresholds"])
    finish_run(db, runs["thresholds"], "completed")
    set_v = rng.normal(1.1, 0.1, shape)
    reset_v = rng.normal(-0.9, 0.08, shape)
    set_v[defect > 0], reset_v[defect > 0] = np.nan, np.nan
    newest = ChipProfile(
        chip="M1", kind="memristor", rows=8, cols=10, conductance_s=g, defect_class=defect,
        set_threshold_v=set_v, reset_threshold_v=reset_v,
        temp_coeff_s_per_k=g * 0.002, read_noise_sigma_s=g * 0.002,
        drift_per_decade_rel=rng.normal(-0.01, 0.003, shape), safe_read_v=0.3,
        meta={"runs": dict(runs), "summary": summaries},
    )  # fmt: skip
    save_profile(db, newest, run_id=runs["thresholds"])
    return runs


def _eflash_db(db: Database, rng: np.random.Generator) -> dict[str, int]:
    chip, _ = register_chip(db, "E1", array_kind="eflash", n_rows=4, n_cols=4)
    shape = (4, 4)
    runs: dict[str, int] = {}
    idvg_summary = {"vth_median_v": 2.0}
    runs["idvg"] = _run(db, chip.id, "idvg", idvg_summary)
    vg = np.linspace(0, 4, 41)
    with RecordWriter(db, runs["idvg"], chip_id=chip.id) as w:
        for r, c in ((0, 0), (1, 2), (3, 3)):
            for temp in (25.0, 55.0, 85.0):
                vth = 2.0 - 0.002 * (temp - 25) + 0.1 * r
                current = 1e-6 * 10 ** ((vg - vth) / 0.09) / (1 + 10 ** ((vg - vth) / 0.09))
                w.add_trace(
                    r, c, "idvg", vg, current + 1e-12, x_name="control_gate_v",
                    temperature_c=temp,
                )  # fmt: skip
    finish_run(db, runs["idvg"], "completed")
    pe_summary = {
        "plot": {
            "program_v": [8.0, 9.0, 10.0, 11.0],
            "program_dvth_v": [0.1, 0.4, 1.0, 1.8],
            "erase_v": [-8.0, -9.0, -10.0, -11.0],
            "erase_dvth_v": [-0.1, -0.5, -1.1, -1.9],
        }
    }
    runs["program-erase"] = _run(db, chip.id, "program-erase", pe_summary)
    finish_run(db, runs["program-erase"], "completed")
    profile = ChipProfile(
        chip="E1", kind="eflash", rows=4, cols=4, vth_v=rng.normal(2.0, 0.1, shape),
        subthreshold_slope_v_per_decade=np.full(shape, 0.09),
        meta={"runs": dict(runs), "summary": {"idvg": idvg_summary, "program-erase": pe_summary}},
    )  # fmt: skip
    save_profile(db, profile, run_id=runs["program-erase"])
    return runs


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One database with the memristor chip M1, the eFlash chip E1 and a registered chip
    without profile (N1); yields (db, memristor runs, eFlash runs)."""
    folder = tmp_path_factory.mktemp("report-db")
    db = open_database(f"sqlite:///{folder / 'lab.sqlite'}", create=True)
    rng = np.random.default_rng(5)
    m_runs = _memristor_db(db, rng)
    e_runs = _eflash_db(db, rng)
    register_chip(db, "N1", array_kind="memristor", n_rows=2, n_cols=2)
    yield db, m_runs, e_runs
    db.close()


# ------------------------------------------------------------------------------ checks


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_pngs(result: ReportResult, expected: set[str]) -> None:
    from matplotlib.image import imread

    assert set(result.png_paths) == expected
    assert set(result.skipped) == set(PLOTS) - expected
    assert list(result.png_paths) == [n for n in PLOTS if n in expected]  # report order
    for name, path in result.png_paths.items():
        assert path.name == f"{name}.png" and path.parent == result.html_path.parent
        width, height = _png_size(path)
        assert 500 <= width <= 2500 and 350 <= height <= 1500, (name, width, height)
        assert path.stat().st_size > 15_000, name  # drawn, not an empty canvas
        pixels = imread(path)
        assert float(pixels[..., :3].std()) > 0.05, name


def _check_html(result: ReportResult) -> str:
    text = result.html_path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    for name, path in result.png_paths.items():
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        assert f'src="data:image/png;base64,{encoded}"' in text, name
    sources = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"' >]*)""", text, flags=re.I)
    assert len(sources) == len(result.png_paths)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"<(link|script|iframe|object|embed)\b|url\(|@import", text, flags=re.I)
    assert text.count("<img ") == len(result.png_paths)
    for name, reason in result.skipped.items():
        assert PLOTS[name][0] in text
        assert _escaped(reason) in text
    return text


def _escaped(text: str) -> str:
    import html

    return html.escape(text)


# ------------------------------------------------------------------------------ tests


def test_chip_report_draws_every_plot_with_data_and_embeds_them(lab: Any, tmp_path: Path):
    db, runs, _ = lab
    result = write_report(db, out_dir=tmp_path / "m1", chip="M1")
    _check_pngs(result, MEMRISTOR_PLOTS)
    assert "no idvg traces" in result.skipped["idvg"]
    assert "program-erase sweep" in result.skipped["program_erase"]
    text = _check_html(result)
    # the chip, every run of the profile, statistics and the sweeps' scalar figures
    assert "<td>M1</td><td>memristor</td><td>8</td><td>10</td>" in text
    for kind, run_id in runs.items():
        assert f"<td>{run_id}</td><td>characterize-{kind}</td><td>completed</td>" in text
    assert "<td>set_threshold_v</td><td>V</td>" in text
    assert "<td>stuck-off</td><td>1</td>" in text and "<td>stuck-on</td><td>1</td>" in text
    assert "<td>fit.slope</td><td>1.5</td>" in text
    assert "<td>safe_read_v</td><td>300 mV</td>" in text


def test_eflash_chip_report_draws_idvg_program_erase_and_vth(lab: Any, tmp_path: Path):
    db, _, _ = lab
    result = write_report(db, out_dir=tmp_path / "e1", chip="E1")
    _check_pngs(result, EFLASH_PLOTS)
    assert "conductance map" in result.skipped["conductance_map"]
    assert "no I-V traces" in result.skipped["iv_loops"]
    _check_html(result)


def test_run_report_uses_the_profile_as_of_that_run_and_its_own_data(lab: Any, tmp_path: Path):
    db, runs, _ = lab
    # the map run stored the first profile: no thresholds yet, and only its own summary
    early = write_report(db, out_dir=tmp_path / "map", run_id=runs["map"])
    _check_pngs(early, {"conductance_map", "defect_map"})
    assert "no set / reset thresholds" in early.skipped["threshold_histograms"]
    assert f"summary of run {runs['map']} (map)" in early.skipped["conductance_vs_temperature"]
    text = _check_html(early)
    assert f"stored by run {runs['map']}" in text
    # the I-V run stored no profile: the one stored before it ended, plus its own traces
    iv = write_report(db, out_dir=tmp_path / "iv", run_id=str(runs["iv"]))
    _check_pngs(iv, {"conductance_map", "defect_map", "iv_loops"})
    # the temperature run: its own plot data
    temp = write_report(db, out_dir=tmp_path / "temp", run_id=runs["temperature"])
    _check_pngs(temp, {"conductance_map", "defect_map", "conductance_vs_temperature"})
    _check_html(temp)


def test_a_resumed_run_reports_the_traces_of_its_whole_chain(tmp_path: Path):
    db = open_database(f"sqlite:///{tmp_path / 'chain.sqlite'}", create=True)
    with db:
        chip, _ = register_chip(db, "R1", array_kind="memristor", n_rows=2, n_cols=2)
        first = _run(db, chip.id, "iv", {})
        v = np.linspace(-0.3, 0.3, 7)
        with RecordWriter(db, first, chip_id=chip.id) as w:
            w.add_trace(0, 0, "iv-dc", v, v * 1e-5)
        finish_run(db, first, "aborted")
        second = resume_run(db, first)
        with RecordWriter(db, second, chip_id=chip.id) as w:
            w.add_trace(1, 1, "iv-dc", v, v * 3e-5)
        finish_run(db, second, "completed")
        result = write_report(db, out_dir=tmp_path / "out", run_id=second)
    assert set(result.png_paths) == {"iv_loops"}
    assert "chip 'R1' had no stored profile as of run 2" in result.skipped["conductance_map"]
    text = _check_html(result)
    assert f"<td>{second}</td><td>characterize-iv</td><td>completed</td>" in text
    # the traces drawn are those of both runs of the chain; the first run alone has one
    with open_database(f"sqlite:///{tmp_path / 'chain.sqlite'}") as again:
        chain = _gather_run(again, second).traces["iv-dc"]
        alone = _gather_run(again, first).traces["iv-dc"]
    assert [(t["run_id"], t["row"], t["col"]) for t in chain] == [(first, 0, 0), (second, 1, 1)]
    assert [(t["run_id"], t["row"], t["col"]) for t in alone] == [(first, 0, 0)]
    assert np.allclose(chain[1]["y"], v * 3e-5)


def test_plots_with_malformed_data_are_skipped_with_the_reason(tmp_path: Path):
    db = open_database(f"sqlite:///{tmp_path / 'bad.sqlite'}", create=True)
    with db:
        chip, _ = register_chip(db, "B1", array_kind="memristor", n_rows=3, n_cols=3)
        bad = {"plot": {"temperatures_c": [25, 85], "states_s": [1e-5],
                        "mean_conductance_s": [[1e-5, 2e-5, 3e-5]]}}  # fmt: skip
        run = _run(db, chip.id, "temperature", bad)
        finish_run(db, run, "completed")
        profile = ChipProfile(
            chip="B1", kind="memristor", rows=3, cols=3,
            conductance_s=np.full((3, 3), np.nan),
            meta={"runs": {"temperature": run}, "summary": {"temperature": bad}},
        )  # fmt: skip
        save_profile(db, profile, run_id=run)
        result = write_report(db, out_dir=tmp_path / "out", chip="B1")
    assert result.png_paths == {}
    assert "shape (1, 3); expected (1, 2)" in result.skipped["conductance_vs_temperature"]
    assert "no conductance map" in result.skipped["conductance_map"]
    text = _check_html(result)
    assert "no plot could be drawn" in text


def test_bad_options_fail_clearly_naming_the_option(lab: Any, tmp_path: Path):
    db, runs, _ = lab
    with pytest.raises(ConfigError, match=r"^--run: no run 9999 in database .*nvmlab runs"):
        write_report(db, out_dir=tmp_path, run_id=9999)
    with pytest.raises(ConfigError, match=r"^--run: run id 'abc' is not a number"):
        write_report(db, out_dir=tmp_path, run_id="abc")
    with pytest.raises(ConfigError, match=r"^--run: .*> 0"):
        write_report(db, out_dir=tmp_path, run_id=0)
    with pytest.raises(ConfigError, match=r"^--chip: chip 'nope' is not registered.*chip add"):
        write_report(db, out_dir=tmp_path, chip="nope")
    with pytest.raises(ConfigError, match=r"^--chip: chip 'N1' has no stored profile"):
        write_report(db, out_dir=tmp_path, chip="N1")
    with pytest.raises(ConfigError, match=r"exactly one of --run RUN .* or --chip NAME"):
        write_report(db, out_dir=tmp_path, run_id=runs["map"], chip="M1")
    with pytest.raises(ConfigError, match=r"exactly one of --run RUN"):
        write_report(db, out_dir=tmp_path)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"^--out: .*file.txt' exists and is not a folder"):
        write_report(db, out_dir=a_file, chip="M1")
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "report.html").exists()


def test_without_matplotlib_the_error_says_how_to_install_it(lab: Any, tmp_path: Path, monkeypatch):
    db, _, _ = lab
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'nvmlab\[report\]'"):
        write_report(db, out_dir=tmp_path / "x", chip="M1")
    assert not (tmp_path / "x").exists()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvmlab")
    register_report(parser.add_subparsers(dest="command"))
    return parser


def test_the_command_line_teaches_refuses_bad_options_and_writes_the_report(
    lab: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
):
    db, runs, _ = lab
    monkeypatch.delenv("NVMLAB_DB", raising=False)
    with pytest.raises(SystemExit) as exit_help:
        _parser().parse_args(["report", "--help"])
    assert exit_help.value.code == 0
    shown = capsys.readouterr().out
    for text in ("--run RUN", "--chip NAME", "--out DIR", "--db URL", "--station FILE",
                 "conductance_map", "as of the run", "pip install 'nvmlab[report]'"):  # fmt: skip
        assert text in shown, text
    for argv, message in (
        (["report", "--out", "x"], "one of the arguments --run --chip is required"),
        (["report", "--run", "1", "--chip", "M1", "--out", "x"], "--chip: not allowed with"),
        (["report", "--chip", "M1"], "the following arguments are required: --out"),
    ):
        with pytest.raises(SystemExit) as exit_bad:
            _parser().parse_args(argv)
        assert exit_bad.value.code == 2
        assert message in capsys.readouterr().err
    url = str(db.url.render_as_string(hide_password=False))
    args = _parser().parse_args(
        ["report", "--run", str(runs["iv"]), "--out", str(tmp_path / "cli"), "--db", url]
    )
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert f"report written: {tmp_path / 'cli' / 'report.html'} (3 plots)" in out
    assert "skipped idvg: no idvg traces" in out
    assert (tmp_path / "cli" / "iv_loops.png").is_file()
    args = _parser().parse_args(["report", "--run", "777", "--out", str(tmp_path), "--db", url])
    with pytest.raises(ConfigError, match="^--run: no run 777"):
        args.handler(args)


# ------------------------------------------------------------------------------ bench


class ReadAndTraceRows(Sweep):
    """A tiny real sweep on the emulated bench: reads every device at 0.2 V (the profile's
    conductance map) and, on row 0, a DC I-V of low-voltage reads (-0.3 .. 0.3 V)."""

    kind = "test-report-rows"
    summary = "test sweep for the report"
    params = (Param("sample", int, 0, low=0, high=1 << 24),)

    def plan(self, params, chip, rng, profile):
        return [
            SweepUnit(f"row-{r}", tuple((r, c) for c in range(chip.cols))) for r in range(chip.rows)
        ]

    def run_unit(self, ctx, unit):
        for r, c in unit.devices:
            read = ctx.read(r, c, ReadSettings())  # 0.2 V (not the last I-V voltage)
            ctx.parameter(r, c, "conductance_s", read.conductance_s, "S")
            if r == 0 and c < 4:
                volts = [v for v in np.linspace(-0.3, 0.3, 13) if abs(v) > 1e-9]
                amps = [ctx.read(r, c, ReadSettings(read_v=float(v))).current_a for v in volts]
                ctx.writer.add_trace(r, c, "iv-dc", volts, amps)

    def finish(self, ctx):
        g = ctx.chain_parameters(["conductance_s"])["conductance_s"]
        return ProfileUpdate(
            arrays={"conductance_s": g}, summary={"median_s": float(np.nanmedian(g))}
        )


@pytest.fixture
def bench_sweep() -> Any:
    register_sweep(ReadAndTraceRows)
    yield _SWEEPS["test-report-rows"]
    _SWEEPS.pop("test-report-rows", None)
    unregister_step("test-report-rows")


def _html_median_s(text: str, name: str) -> float:
    row = re.search(rf"<tr><td>{name}</td>(.*?)</tr>", text)
    assert row is not None, name
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    value, unit = cells[7].split()
    scale = {"µS": 1e-6, "nS": 1e-9, "mS": 1e-3, "S": 1.0}[unit]
    return float(value) * scale


@pytest.mark.parametrize(
    ("physics", "seed", "size", "tcp"),
    [(None, 1, 6, False), (HARSH, 2, 16, True)],
    ids=["default-6x6", "harsh-16x16-tcp"],
)
def test_report_of_a_real_sweep_on_the_emulated_bench(
    bench_sweep: Any, tmp_path: Path, physics: Any, seed: int, size: int, tcp: bool
):
    with characterization_bench(
        tmp_path, rows=size, cols=size, seed=seed, physics=physics, tcp=tcp
    ) as cb:
        sweep = run_sweep("test-report-rows", station=cb.station, db=cb.db, chip=cb.chip)
        assert sweep.status == "completed"
        truth = cb.truth()
        by_chip = write_report(cb.db, out_dir=tmp_path / "chip", chip=cb.chip)
        by_run = write_report(cb.db, out_dir=tmp_path / "run", run_id=sweep.run_id)
    for result in (by_chip, by_run):
        _check_pngs(result, {"conductance_map", "iv_loops"})
        text = _check_html(result)
        # the report's statistics are the chip's: median conductance against the truth
        median = _html_median_s(text, "conductance_s")
        assert median == pytest.approx(float(np.median(truth["conductance_s"])), rel=0.03)
        assert f"<td>{sweep.run_id}</td><td>characterize-test-report-rows</td>" in text
        assert "<td>median_s</td>" in text
        assert "defects sweep" in result.skipped["defect_map"]
