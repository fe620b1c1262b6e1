"""The `mvseg` console script: LightningCLI for training plus the project's own commands.

    mvseg fit|validate|test --config experiments/per_frame.yaml [--key value ...] [--no-prerequisites] [--overwrite]
    mvseg predict VIDEO --ckpt RUN/checkpoints/last.ckpt [--out overlay.mp4] [--labels-dir DIR]
    mvseg inspect VIDEO [--dump-mvs OUT.csv] [--motion-report [--max-distance N]] [--json OUT]
    mvseg fuzz [VIDEO ...] [--budget SECONDS] [--cases N] [--seed S] [--out DIR]
    mvseg data prepare synthetic --out DIR [...]
    mvseg data prepare cityscapes|camvid --root SRC --out DIR [--protocol gop|per-distance] [--interval L] [...]
    mvseg sweep local experiments/sweeps/arseg.yaml --count N [--out DIR] [-- --key value ...]
    mvseg bench video [PATH ...] [--peer] [--json OUT.json]
    mvseg bench synthetic [--json OUT.json]
    mvseg bench kernels [--device cuda] [--dtype fp32 bf16] [--dry-run] [--json OUT.json]
    mvseg bench data [--data-root DIR] [--workers 0 1 2] [--json OUT.json]
    mvseg bench strategies --run NAME=CKPT ... [--intervals 1 5 10]
    mvseg bench fusion --ckpt RUN/checkpoints/last.ckpt [--data-root DIR] [--out-dir DIR]
    mvseg bench speed [--backbones psp18_camvid psp18] [--scales 1.0 0.5 0.3] [--device cuda] [--json OUT.json]

`main(args)` is callable from tests; it returns the process exit status. The Lightning verbs go
to LightningCLI (`mvseg.cli.lightning`); every other command is one module here with
`add_parser(sub)` (its options and defaults, stated once) and `run(args)`. Nothing heavy is
imported before a command runs, so `mvseg --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from importlib import import_module

#: command -> module of mvseg.cli (add_parser, run), in the order `mvseg --help` lists them
OWN_COMMANDS = {
    "predict": "predict",
    "inspect": "inspect",
    "fuzz": "fuzz",
    "data": "data",
    "sweep": "sweep",
    "bench": "bench",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test")
#: what a command keeps when Ctrl-C stops it (files are written whole, through a temporary name)
KEPT_ON_INTERRUPT = {
    "data": ": the files written so far are whole; the same command finishes the dataset",
    "predict": ": nothing complete was written",
    "inspect": ": no report written",
}


class _Parser(argparse.ArgumentParser):
    """argparse with exact option names only (no abbreviations) and an error as one line, with
    the closest valid names of a misspelt option; the usage is printed by --help only."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        import difflib
        import re

        options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        bad = (
            re.findall(r"(--[\w-]+)", message.split("unrecognized arguments:", 1)[1])
            if "unrecognized arguments:" in message
            else []
        )
        tips = [g for b in bad for g in difflib.get_close_matches(b, options, n=2, cutoff=0.7)]
        tip = f" (did you mean {' or '.join(dict.fromkeys(tips))}?)" if tips else ""
        self.exit(2, f"{self.prog}: error: {message}{tip}\n({self.prog} --help lists every option)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="mvseg",
        description="Fast semantic segmentation of compressed video with block motion vectors.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in (
        ("fit", "train a strategy"),
        ("validate", "evaluate on the validation split"),
        ("test", "evaluate on the test split"),
    ):
        sub.add_parser(
            name,
            help=f"{what} (LightningCLI: mvseg {name} --config CONFIG.yaml; --help for all options)",
            add_help=False,
        )
    for module in OWN_COMMANDS.values():
        import_module(f"mvseg.cli.{module}").add_parser(sub)  # argparse only: no heavy import
    return p


def _subparser(parser: argparse.ArgumentParser, a: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (nested) subcommand that `a` was parsed by."""
    while True:
        sub = next((x for x in parser._actions if isinstance(x, argparse._SubParsersAction)), None)
        if sub is None or getattr(a, sub.dest, None) not in sub.choices:
            return parser
        parser = sub.choices[getattr(a, sub.dest)]


def _lightning(argv: list[str], from_sys_argv: bool) -> int:
    from mvseg.cli.lightning import run_lightning_cli

    return run_lightning_cli(None if from_sys_argv else argv)


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the `mvseg` console script; returns the exit status. Heavy imports
    (torch, Lightning, PyAV) happen in the command that needs them: `mvseg --help` and
    `mvseg COMMAND --help` answer without them."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        return _lightning(argv, from_sys_argv=args is None)
    extra: list[str] = []
    if argv and argv[0] == "sweep" and "--" in argv:  # arguments for every run of the sweep
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = _parser()
    a, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the (sub)command's parser, which knows the valid names
        _subparser(parser, a).error(f"unrecognized arguments: {' '.join(unknown)}")
    a.extra = extra

    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):  # once, one line
        if str(message) not in shown:
            shown.add(str(message))
            print(f"mvseg {a.command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            if a.command in ("predict", "bench", "fuzz"):  # the commands that run networks
                from mvseg.threads import configure_threads

                if notice := configure_threads():
                    print(notice, file=sys.stderr)
            return import_module(f"mvseg.cli.{OWN_COMMANDS[a.command]}").run(a)
        # a bad video, dataset, file or value: one line, no traceback (OSError: a missing file, a
        # full disk; mvseg's VideoError and DatasetError are ValueErrors: nothing to import for them)
        except (OSError, ValueError) as e:
            print(f"mvseg {a.command}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C: one line that says what is kept, no traceback
            print(f"\nmvseg {a.command}: interrupted{KEPT_ON_INTERRUPT.get(a.command, '')}", file=sys.stderr)
            return 130
