"""`mvseg sweep local SWEEP.yaml --count N`: a W&B sweep run here, without a W&B server (W&B's
sweep engine picks each run's configuration; the run's val metric goes back to it)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="W&B sweeps without a W&B server")
    psub = p.add_subparsers(dest="sweep_command", required=True)
    loc = psub.add_parser(
        "local",
        help="run a W&B sweep file here: W&B's sweep engine picks each run's "
        "configuration, the run's val metric goes back to it (pip install 'mvseg[sweep]')",
        epilog="Arguments after `--` are appended to every run's command line.",
    )
    loc.add_argument("sweep", help="W&B sweep file (experiments/sweeps/*.yaml)")
    loc.add_argument("--count", type=int, required=True, help="runs to start in this call")
    loc.add_argument(
        "--out", default=None, help="sweep folder (default: sweeps/NAME); the same folder continues a sweep"
    )
    loc.add_argument("--seed", type=int, default=0, help="seed of the search's random draws")


def run(a: argparse.Namespace) -> int:
    from mvseg.sweep import main_sweep_local

    return main_sweep_local(a.sweep, a.count, a.out, a.seed, a.extra)
