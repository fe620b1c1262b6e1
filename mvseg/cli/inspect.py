"""`mvseg inspect VIDEO`: codec, size, picture types and MV statistics of a video; with
--dump-mvs every MV (FFmpeg's extract_mvs format), with --motion-report the PSNR of MV-warped
against copied frames per keyframe distance."""

from __future__ import annotations

import argparse
import json
import warnings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="codec, size, picture types and MV statistics of a video")
    p.add_argument("video")
    p.add_argument("--dump-mvs", metavar="OUT.csv", help="write every MV (FFmpeg extract_mvs format)")
    p.add_argument(
        "--motion-report", action="store_true", help="PSNR of MV-warped vs copied frames per keyframe distance"
    )
    p.add_argument("--max-distance", type=int, default=5)
    p.add_argument("--json", metavar="OUT.json", help="write the report as JSON")


def run(a: argparse.Namespace) -> int:
    from mvseg.cli.predict import check_video_path

    check_video_path(a.video)  # before torch loads
    if a.max_distance < 1:
        raise ValueError(f"--max-distance must be >= 1, got {a.max_distance}")
    from mvseg.video.report import motion_report, summarize

    s = summarize(a.video, dump_mvs=a.dump_mvs)
    per = s["motion_vectors"] / max(s["frames_with_mvs"], 1)
    print(f"video:        {s['path']}")
    print(f"codec:        {s['codec']}  {s['width']}x{s['height']}  {s['fps']:.3f} fps")
    print(f"frames:       {s['frames']} decoded ({s['frames_declared']} declared)")
    refs = s["max_ref_frames"]
    print(f"references:   {'unknown' if refs is None else refs}  B-frames: {'yes' if s['has_b_frames'] else 'no'}")
    print(f"pict types:   {s['pict_types']}")
    if s["rotation"] or s["variable_frame_rate"]:
        print(
            f"display:      rotation {s['rotation']} degrees"
            f"{', variable frame rate (timestamps kept by predict)' if s['variable_frame_rate'] else ''}"
        )
    if s["corrupt_frames"]:
        bad = s["corrupt_frames"]
        print(
            f"corrupt:      {len(bad)} frames flagged by the decoder ({', '.join(map(str, bad[:10]))}"
            f"{', ...' if len(bad) > 10 else ''}): their MVs are masked"
        )
    if s["frames_mvs_missing"]:
        print(f"unusable MVs: {len(s['frames_mvs_missing'])} B-frames ({s['mvs_missing_reason']})")
    if not s["exports_mvs"]:
        print(
            f"MVs:          none: FFmpeg exports no block motion vectors for {s['codec']}; mvseg's MV methods need "
            "H.264 or another codec of the table (re-encode, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4); "
            "per-frame models still work"
        )
    else:
        print(f"MVs:          {s['motion_vectors']} in {s['frames_with_mvs']} frames ({per:.1f} per frame)")
    if s["interlaced"]:
        warnings.warn(
            f"{s['path']}: interlaced video (fields): its MVs move fields, which mvseg treats as whole-frame "
            "motion; deinterlace it first (e.g. ffmpeg -vf yadif) for propagation",
            stacklevel=2,
        )
    print(f"block sizes:  {', '.join(f'{k}: {v}' for k, v in s['block_sizes'].items()) or '-'}")
    print(f"MV sources:   {', '.join(f'{k}: {v}' for k, v in s['mv_sources'].items()) or '-'}")
    if a.dump_mvs:
        print(f"MVs written to {a.dump_mvs}")
    out = {"summary": s}
    if a.motion_report:
        r = motion_report(a.video, a.max_distance, progress=True)
        print("\nmotion report: PSNR (dB) of frame t-d warped by composed MVs vs copied, against frame t")
        print("| d | pairs | warp | copy | gain |\n|---|---|---|---|---|")
        for row in r["rows"]:
            if row["pairs"]:
                gain = row["psnr_warp"] - row["psnr_copy"]
                print(
                    f"| {row['distance']} | {row['pairs']} | {row['psnr_warp']:.2f} | {row['psnr_copy']:.2f} "
                    f"| {gain:+.2f} |"
                )
            else:
                print(f"| {row['distance']} | 0 | - | - | - |")
        out["motion_report"] = r
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0
