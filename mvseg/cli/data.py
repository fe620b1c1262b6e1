"""`mvseg data prepare synthetic|cityscapes|camvid --out DIR`: a dataset as compressed video in
mvseg's folder layout (mvseg.data.folder); the same --out resumes an interrupted preparation."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="dataset preparation")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("prepare", help="prepare a dataset as compressed video")
    p.add_argument("dataset", choices=["synthetic", "cityscapes", "camvid"])
    p.add_argument("--out", required=True, help="output folder (mvseg folder layout); the same folder resumes")
    real = p.add_argument_group("cityscapes and camvid")
    real.add_argument("--root", help="the dataset as distributed (see mvseg.data.cityscapes / mvseg.data.camvid)")
    real.add_argument(
        "--protocol",
        choices=["gop", "per-distance"],
        default="gop",
        help="gop: one clip per snippet, an I-frame every L frames; per-distance: AR-Seg's, one clip "
        "per distance d = 0..L-1 with the labelled frame d frames after an I-frame",
    )
    real.add_argument("--interval", type=int, default=12, help="keyframe interval L (the GOP)")
    real.add_argument("--size", default=None, help="output HxW (default: the source's, 1024x2048 / 720x960)")
    real.add_argument("--crf", type=float, default=18.0, help="x264 constant quality")
    real.add_argument(
        "--splits", nargs="+", default=None, help="default: train val (cityscapes), train val test (camvid)"
    )
    real.add_argument(
        "--context",
        type=int,
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        default=None,
        help="frames kept before and after each labelled one (default: 19 10 cityscapes' snippet; L-1 L camvid)",
    )
    real.add_argument("--max-snippets", type=int, default=None, help="at most this many labelled frames per split")
    real.add_argument(
        "--void-class", action="store_true", help="camvid: Void as a 12th class (AR-Seg) instead of ignored"
    )
    real.add_argument(
        "--frame-offset",
        action="append",
        default=[],
        metavar="SEQ=N",
        help="camvid: label frame n is source frame n + N in sequence SEQ (default 0)",
    )
    syn = p.add_argument_group("synthetic")
    syn.add_argument("--train-clips", type=int, default=24)
    syn.add_argument("--val-clips", type=int, default=12)
    syn.add_argument("--height", type=int, default=128)
    syn.add_argument("--width", type=int, default=256)
    syn.add_argument("--frames", type=int, default=30)
    syn.add_argument("--gop", type=int, default=None, help="GOP length (default: the clip length)")
    syn.add_argument(
        "--scenecut",
        type=int,
        default=0,
        metavar="T",
        help="x264's scene-cut detection at threshold T (40: x264's default): an I-frame also where "
        "it sees a cut, --gop the longest GOP, as cameras and editors encode (default 0: off)",
    )
    syn.add_argument("--annotated", type=int, nargs="+", default=[9, 19], help="annotated frame indices")
    syn.add_argument(
        "--speed-changes",
        type=int,
        default=0,
        help="stop-and-go camera, this many speed changes per clip (default 0: constant speed)",
    )
    for event, what in (
        ("cut", "hard scene cuts"),
        ("turn", "sharp turns (yaw bursts)"),
        ("lorry", "lorries passing close to the camera"),
        ("tunnel", "tunnels (the light falls)"),
    ):
        syn.add_argument(
            f"--{event}-rate",
            type=float,
            default=0.0,
            metavar="N",
            help=f"{what} per 100 frames, at random frames of each clip (default 0: none)",
        )
    syn.add_argument(
        "--layout",
        choices=["cityscapes", "camvid"],
        default=None,
        help="write synthetic clips in that dataset's own on-disk layout (the --root that `prepare "
        "cityscapes|camvid` reads), to rehearse a recipe chain before downloading the data",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes generating clips / encoding snippets")


def run(a: argparse.Namespace) -> int:
    if a.dataset != "synthetic":
        return _prepare_real(a)
    from mvseg.data.synthetic import SyntheticConfig, make_synthetic_dataset

    if a.layout:
        from mvseg.data.layouts import write_layout

        names = write_layout(a.layout, a.out, seed=a.seed)
        n = ", ".join(f"{len(v)} {k}" for k, v in names.items())
        print(
            f"synthetic clips in {a.layout}'s layout in {a.out}: {n} labelled frames; next: "
            f"mvseg data prepare {a.layout} --root {a.out} --out DIR (the recipes' `root:` lines)"
        )
        return 0
    if a.scenecut < 0:
        raise SystemExit(f"mvseg data prepare synthetic: --scenecut must be >= 0, got {a.scenecut}")
    if a.speed_changes < 0:
        raise SystemExit(f"mvseg data prepare synthetic: --speed-changes must be >= 0, got {a.speed_changes}")
    rates = {f"{e}_rate": getattr(a, f"{e}_rate") for e in ("cut", "turn", "lorry", "tunnel")}
    for k, v in rates.items():
        if v < 0:
            raise SystemExit(f"mvseg data prepare synthetic: --{k.replace('_', '-')} must be >= 0, got {v}")
    cfg = SyntheticConfig(height=a.height, width=a.width, frames=a.frames, speed_changes=a.speed_changes, **rates)
    meta = make_synthetic_dataset(
        a.out,
        train_clips=a.train_clips,
        val_clips=a.val_clips,
        seed=a.seed,
        config=cfg,
        gop=a.gop,
        annotated=tuple(a.annotated),
        workers=a.workers,
        scenecut=a.scenecut,
    )
    n = " + ".join(f"{len(v)} {k}" for k, v in meta["splits"].items())
    print(f"synthetic dataset in {a.out}: {n} clips of {a.frames} frames, {a.width}x{a.height}")
    return 0


def _prepare_real(a: argparse.Namespace) -> int:
    from mvseg.data.prepare import PrepareConfig, parse_size

    if not a.root:
        raise ValueError(f"mvseg data prepare {a.dataset} needs --root (the dataset as distributed)")
    cfg = PrepareConfig(protocol=a.protocol, interval=a.interval, size=parse_size(a.size), crf=a.crf)
    if a.dataset == "cityscapes":
        from mvseg.data.cityscapes import prepare_cityscapes

        before, after = a.context or (19, 10)
        meta = prepare_cityscapes(
            a.root, a.out, cfg, tuple(a.splits or ("train", "val")), before, after, a.max_snippets, workers=a.workers
        )
    else:
        from mvseg.data.camvid import prepare_camvid

        offsets = {}
        for item in a.frame_offset:
            seq, sep, n = item.partition("=")
            if not sep or not n.lstrip("-").isdigit():
                raise ValueError(f"--frame-offset expects SEQ=N, got {item!r}")
            offsets[seq] = int(n)
        before, after = a.context or (a.interval - 1, a.interval)
        meta = prepare_camvid(
            a.root,
            a.out,
            cfg,
            tuple(a.splits or ("train", "val", "test")),
            before,
            after,
            a.void_class,
            offsets,
            a.max_snippets,
            workers=a.workers,
        )
    counts = meta.pop("_counts")
    n = ", ".join(f"{len(v)} {k}" for k, v in meta["splits"].items())
    print(
        f"{a.dataset} in {a.out}: {n} clips ({a.protocol}, L = {a.interval}, {meta['size'][1]}x{meta['size'][0]}); "
        f"{counts['written']} encoded, {counts['kept']} kept from an earlier run"
    )
    return 0
