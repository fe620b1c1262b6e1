"""`mvseg fuzz`: mutated videos through `mvseg inspect` (no crash, no hang, errors that name the
file); findings are kept for a bug report."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuzz", help="mutated videos through mvseg inspect: no crash, no hang, errors that name the file"
    )
    p.add_argument("videos", nargs="*", help="seed videos (default: generated MP4, MKV, raw H.264, B-frames, odd size)")
    p.add_argument("--budget", type=float, default=60.0, help="seconds to fuzz for")
    p.add_argument("--cases", type=int, default=None, help="stop after this many cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    p.add_argument("--no-motion-report", action="store_true", help="decode only (skip rasterising and warping)")
    p.add_argument("--out", default="fuzz", help="work folder; findings are kept in OUT/findings")
    p.add_argument("--json", metavar="OUT.json", help="also write the summary here")


def run(a: argparse.Namespace) -> int:
    from mvseg.cli import main
    from mvseg.fuzz import run_fuzz

    s = run_fuzz(
        a.out,
        budget_s=a.budget,
        max_cases=a.cases,
        seed=a.seed,
        timeout_s=a.timeout,
        videos=a.videos,
        motion_report=not a.no_motion_report,
        progress=True,
        entry=main,
    )
    print(f"{s['cases']} cases in {s['seconds']:.0f} s (slowest {s['slowest_s']:.2f} s), seeds {', '.join(s['seeds'])}")
    print("outcomes:     " + ", ".join(f"{k} {v}" for k, v in s["by_status"].items()))
    print("errors seen:  " + "; ".join(f"{k} ({v})" for k, v in s["errors_seen"].items()))
    for f in s["findings"]:
        print(f"finding:      case {f['index']} ({f['mutator']} of {f['seed']}): {f['status']}: {f['message']}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(s, fh, indent=1)
    return 1 if s["findings"] else 0
