"""Every snippet of the README runs as written, in order.

The first block holds the two commands a fresh machine runs: ``make job`` is checked (its
job file valid, the command it runs; the five-minute job itself runs outside the suite),
``make demo`` (the tour's map) runs here for real; ``make test`` is the command that runs
this very test, so it is not run again. The
tour's shell and Python blocks then run as one bash script, in order, from a folder that
holds the checkout's ``.venv`` (as the checkout does after ``make demo``): shell blocks as
written, Python blocks through ``python`` (a block holding a pytest test through
``pytest``), so the background bench of the first block is still serving when the
Station snippet needs it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(?P<info>\w*)\n(?P<body>.*?)^```\n", re.MULTILINE | re.DOTALL)


def snippets() -> list[tuple[str, str]]:
    """(info string, body) of every fenced block of the README, in order."""
    return [(m["info"], m["body"]) for m in FENCE.finditer(README.read_text())]


def test_the_readme_begins_with_exactly_the_two_commands() -> None:
    text = README.read_text()
    first = FENCE.search(text)
    assert first is not None and text[: first.start()].strip() == "# nvmlab"
    assert first["body"].splitlines() == ["make job", "make test"]


def test_make_job_runs_the_main_job_which_is_valid() -> None:
    """``make job`` runs the overnight job of examples/jobs (about five minutes: it runs
    in full outside the suite; tests/jobs run the same runner on small chips), and that
    job file passes ``nvmlab run --check``."""
    plan = subprocess.run(
        ["make", "--no-print-directory", "-n", "job"], cwd=ROOT, capture_output=True, text=True
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert ".venv/bin/nvmlab run examples/jobs/overnight.toml" in plan.stdout.splitlines()
    check = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "nvmlab"), "run", "--check", "examples/jobs/overnight.toml"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "s3-tune" in check.stdout


def test_make_demo_runs_as_written(tmp_path: Path) -> None:
    """``make demo`` from the checkout (its database redirected through NVMLAB_DB, the
    documented precedence, so the test leaves the checkout's ./nvmlab.sqlite alone)."""
    db = tmp_path / "demo.sqlite"
    done = subprocess.run(
        ["make", "demo"],
        cwd=ROOT,
        env={**os.environ, "NVMLAB_DB": f"sqlite:///{db}"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "status completed" in done.stdout
    assert db.exists()


def tour_script(blocks: list[tuple[str, str]], folder: Path) -> str:
    lines = ["set -euo pipefail"]
    for number, (info, body) in enumerate(blocks):
        if info == "sh":
            lines.append(body)
        elif info == "python" and "def test_" in body:
            test_file = folder / f"test_readme_snippet_{number}.py"
            test_file.write_text(body)
            lines.append(f"python -m pytest -q -p no:cacheprovider {test_file.name}")
        elif info == "python":
            lines.append(f"python - <<'README_PY_{number}'\n{body}README_PY_{number}")
        else:
            raise AssertionError(f"README block {number} has no known language: {info!r}")
    return "\n".join(lines) + "\n"


@pytest.mark.tcp
# the tour's own subprocess may take up to 600 s; the suite's 120 s per test stopped it on
# a loaded machine (CI, 2026-12-02: the whole suite took 44 min instead of 23)
@pytest.mark.timeout(660)
def test_the_tour_runs_as_written_in_order(tmp_path: Path) -> None:
    blocks = snippets()[1:]  # after the two commands
    assert [info for info, _ in blocks].count("sh") >= 2
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if k not in ("NVMLAB_DB", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p)
    script = tour_script(blocks, tmp_path)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, f"exit {done.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    assert "Traceback" not in err, err
    # what each step says it did
    assert re.search(r"^smu TCPIP::127\.0\.0\.1::\d+::SOCKET", out, re.MULTILINE), out
    assert "W07-D12" in out  # chip add / chip list
    assert "status completed" in out  # the demo
    assert re.search(r"device \(3, 5\) at 85 C: \d+\.\d+ uS", out), out  # the Station snippet
    assert (tmp_path / "station.toml").exists() and (tmp_path / "exported").is_dir()
    assert (tmp_path / "nvmlab.sqlite").exists()
    assert "clock_s" in out  # nvmlab truth's summary of the saved chip
    assert "1 passed" in out  # the pytest-plugin snippet
