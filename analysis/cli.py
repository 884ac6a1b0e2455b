"""``nvmlab impact``: a chip's network impact from its stored measurements."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DESCRIPTION = """\
From the chip's stored measurements (the profile of its characterization: defects, read
noise, temperature coefficients, relaxation; and the outcomes of its tuning runs) build
the device-error model and run a network through 64 x 64 tiles with it: accuracy versus
temperature 25-100 C, naive and mitigated; the memory-state optimization (window and read
voltage of lowest array energy under a 1 point drop at every temperature); defect
tolerance; the error-multiplier margin; and, with --products-run, the vector-matrix
products that run measured through the array against the model's prediction. Reads the
database only. The figures go to a run of kind 'impact', the JSON and the plots to --out.
"""

EPILOG = """\
network: the built-in benchmark (a 64-32-10 network on scikit-learn's digits, trained
once, seeded, cached in ~/.cache/nvmlab) unless --network FILE.npz (W0, b0, W1, b1, ...,
inputs x outputs; a PyTorch state dict .pt when torch is installed) with --data FILE.npz
(x in [0, 1], y) or --data cifar-10-batches-py/ (a local CIFAR-10 copy).

every figure printed is in the JSON under the name it is printed with (docs/analysis.md).

exit status:
  0    computed; 1 the chip, a file or the database failed (one line says which)

examples:
  nvmlab impact --chip W07-D12
  nvmlab impact --chip W07-D12 --products-run 12 --json impact.json
  nvmlab impact --chip W07-D12 --network mlp.npz --data test.npz --draws 50
  nvmlab impact --chip W07-D12 --model-out W07.json --compare-model W08.json
"""


def _cmd_impact(args: argparse.Namespace) -> int:
    from nvmlab.analysis.errormodel import ErrorModel, build_error_model
    from nvmlab.analysis.impact import format_impact, run_impact, write_outputs
    from nvmlab.storage.cli import choose_database_url
    from nvmlab.storage.database import open_database
    from nvmlab.storage.runs import finish_run, parse_run_id, start_run

    products = parse_run_id(args.products_run) if args.products_run is not None else None
    db = open_database(choose_database_url(args), create=False)
    try:
        model = build_error_model(db, args.chip)
        if args.compare_model is not None:
            other = ErrorModel.from_json(args.compare_model)
            print(f"{'quantity':34s} {args.chip:>14s} {other.chip:>14s}")
            for name, a, b in model.compare(other):
                print(f"{name:34s} {a:14.4g} {b:14.4g}")
        from nvmlab.storage.inventory import require_chip

        chip = require_chip(db, args.chip)
        run_id = start_run(db, "impact", chip_id=chip.id, seed=args.seed,
                           config={"network": args.network, "data": args.data,
                                   "draws": args.draws, "products_run": products})  # fmt: skip
        status, message = "failed", None
        try:
            figures, model = run_impact(
                db, args.chip, network=args.network, data=args.data, draws=args.draws,
                seed=args.seed, products_run=products, model=model,
            )  # fmt: skip
            folder = Path(args.out) if args.out else Path("nvmlab-runs") / f"impact-{run_id}"
            paths = write_outputs(figures, model, folder)
            _store(db, run_id, paths["json"])
            status = "completed"
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            finish_run(db, run_id, status, message)
        print(f"run {run_id}: impact of chip {args.chip!r}")
        for line in format_impact(figures):
            print(line)
        print(f"json: {paths['json']}; error model: {paths['model']}; plots in {folder}")
        if args.json is not None:
            Path(args.json).write_text(paths["json"].read_text())
        if args.model_out is not None:
            model.to_json(args.model_out)
    finally:
        db.close()
    return 0


def _store(db: Any, run_id: int, json_path: Path) -> None:
    from sqlalchemy import select, update

    from nvmlab.storage.models import Run

    figures = json.loads(json_path.read_text())
    with db.engine.begin() as conn:
        config = conn.execute(select(Run.config).where(Run.id == run_id)).scalar_one()
        conn.execute(update(Run).where(Run.id == run_id).values(
            config={**(config or {}), "summary": figures, "json": str(json_path.resolve())}
        ))  # fmt: skip


def register(subparsers: Any) -> None:
    from nvmlab.storage.cli import add_database_options

    parser = subparsers.add_parser(
        "impact",
        help="network accuracy and array energy from a chip's measured errors",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--chip", required=True, metavar="NAME", help="registered chip")
    parser.add_argument("--network", metavar="FILE", default=None, help="network (NPZ or .pt)")
    parser.add_argument(
        "--data", metavar="FILE", default=None, help="test data (NPZ or CIFAR folder)"
    )
    parser.add_argument("--draws", type=int, default=25, metavar="N",
                        help="error-model draws per operating point (default 25)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed (default 0)")
    parser.add_argument("--products-run", metavar="RUN", default=None,
                        help="a run that tuned a layer and measured products through the array")  # fmt: skip
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="folder for impact.json, error_model.json and the plots "
                        "(default ./nvmlab-runs/impact-<run>)")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the JSON here")
    parser.add_argument("--model-out", metavar="FILE", default=None, help="write the error model")
    parser.add_argument("--compare-model", metavar="FILE", default=None,
                        help="print this chip's error model beside another chip's (JSON)")  # fmt: skip
    add_database_options(parser)
    parser.set_defaults(handler=_cmd_impact)
