"""Print the Triton requirement of torch's CUDA wheel on PyPI (Linux x86_64, this Python),
from the wheel's metadata alone (pip --dry-run reads PEP 658 metadata; nothing is downloaded
but that). With --check FILE: exit 1 when FILE's pin differs (network trouble only warns).

    python .ci/find_triton_pin.py 2.13.0
    python .ci/find_triton_pin.py 2.13.0 --check .ci/triton_pin
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def triton_requirement(torch_version: str) -> str:
    with tempfile.TemporaryDirectory() as d:
        report = Path(d) / "report.json"
        # --isolated: ignore pip.conf / constraints that point at a local CPU build of torch
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--isolated",
                "--dry-run",
                "--ignore-installed",
                "--no-deps",
                "--quiet",
                "--report",
                str(report),
                f"torch=={torch_version}",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        meta = json.loads(report.read_text())["install"][0]["metadata"]
    for req in meta.get("requires_dist", []):
        m = re.match(r"triton\s*==\s*([\w.]+)", req)
        if m:
            return f"triton=={m.group(1)}"
    raise SystemExit(f"torch {torch_version}'s wheel on PyPI requires no pinned triton: {meta.get('requires_dist')}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("torch_version")
    p.add_argument("--check", help="a pin file to compare with")
    a = p.parse_args()
    try:
        pin = triton_requirement(a.torch_version)
    except (subprocess.SubprocessError, OSError, KeyError, IndexError) as e:
        print(
            f"find_triton_pin: could not read torch {a.torch_version}'s metadata ({type(e).__name__}); pin not checked"
        )
        return 0
    print(pin)
    if a.check:
        pinned = next(
            line.strip() for line in Path(a.check).read_text().splitlines() if line.strip() and not line.startswith("#")
        )
        if pinned != pin:
            print(
                f"{a.check} pins {pinned}, but torch {a.torch_version}'s CUDA wheel requires {pin}: update it",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
