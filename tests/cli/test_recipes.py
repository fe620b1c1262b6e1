"""The paper recipes rehearsed as a researcher runs them: every stage of every chain of both
datasets, in order, each loading its predecessors' checkpoints from the paths the recipe names.

The data are synthetic street clips written in Cityscapes' and CamVid's own layouts
(mvseg.data.layouts: real motion, labels that follow it) and prepared with the `mvseg data
prepare` command each recipe's `root:` line gives. Every stage is trained as written (its
backbone at full width, heads, losses, L, distances); only the device, precision, crop, batch
and the number of steps are made CPU-sized, and the data folders are linked where the recipes
look for them. A stage that cannot load its predecessor (a width mismatch, a missing key, a
checkpoint path no stage writes) fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mvseg.cli import main

ROOT = Path(__file__).parents[2] / "experiments"
DATASETS = ("cityscapes", "camvid")
SIZES = {"cityscapes": (64, 128), "camvid": (48, 64)}  # the datasets' aspect ratios, CPU-sized
CPU = [
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "1",
    "--trainer.precision",
    "32",
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "1",
    "--trainer.limit_val_batches",
    "0",
    "--data.init_args.crop_size",
    "[64, 64]",
    "--data.init_args.batch_size",
    "2",
    "--data.init_args.num_workers",
    "0",
]


def stages(folder: Path) -> list[Path]:
    """Every recipe of a folder, each after the stages its `prerequisites` name."""
    recipes = {p.name: p for p in sorted(folder.glob("*.yaml")) if not p.name.startswith("_")}
    needs = {n: list((yaml.safe_load(p.read_text()).get("prerequisites") or {}).values()) for n, p in recipes.items()}
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        assert name in recipes, f"{path[-1]} names a prerequisite {name} that is not in {folder}"
        assert name not in path, f"circular prerequisites: {' -> '.join((*path, name))}"
        for n in needs[name]:
            visit(n, (*path, name))
        if name not in order:
            order.append(name)

    for name in recipes:
        visit(name)
    return [recipes[n] for n in order]


def test_every_recipe_that_loads_a_checkpoint_names_the_stage_that_writes_it():
    """A recipe's checkpoint keys point at a path a recipe of its folder writes, and name that
    recipe under `prerequisites` (so `mvseg fit` trains it first)."""
    from mvseg.prerequisites import stage_checkpoint

    for ds in DATASETS:
        folder = ROOT / ds
        for p in stages(folder):
            conf = yaml.safe_load(p.read_text())
            args = conf["model"]["init_args"]
            pre = conf.get("prerequisites") or {}
            for key in ("init_from", "lr_init", "flow_init", "teacher"):
                if not args.get(key):
                    continue
                stage = pre.get(f"model.init_args.{key}")
                assert stage, f"{p.name}: {key} has no prerequisite stage"
                assert str(stage_checkpoint(folder / stage)) == args[key], (p.name, key)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """A working folder as a researcher's: data/{cityscapes,camvid}[_pd12] prepared from the
    layout roots exactly as the recipes' `root:` lines say, data/synthetic_* for the flow
    pretraining (small), and the cwd there while the recipes run."""
    pytest.importorskip("cityscapesscripts")
    from mvseg.data.camvid import prepare_camvid
    from mvseg.data.cityscapes import prepare_cityscapes
    from mvseg.data.layouts import write_camvid_layout, write_cityscapes_layout
    from mvseg.data.prepare import PrepareConfig
    from mvseg.data.synthetic import SyntheticConfig, make_synthetic_dataset

    # in memory where the machine has it: ~40 full-width checkpoints are written (and fsynced)
    shm = Path("/dev/shm")
    work = (
        Path(tempfile.mkdtemp(prefix="mvseg-rehearsal-", dir=shm))
        if shm.is_dir() and os.access(shm, os.W_OK)
        else tmp_path_factory.mktemp("rehearsal")
    )
    write_cityscapes_layout(work / "src/cityscapes", {"train": 2, "val": 1}, size=SIZES["cityscapes"])
    write_camvid_layout(work / "src/camvid", {"0001TP": ("train", 2), "0006R0": ("val", 1)}, size=SIZES["camvid"])
    for ds, prepare in (("cityscapes", prepare_cityscapes), ("camvid", prepare_camvid)):
        text = "".join(p.read_text() for p in (ROOT / ds).glob("*.yaml"))
        for cmd in set(re.findall(r"mvseg data prepare \S+ --root SRC --out (data/\S+) ([^#\n]*)", text)):
            out, opts = cmd
            cfg = PrepareConfig(
                protocol="per-distance" if "per-distance" in opts else "gop",
                interval=int(re.search(r"--interval (\d+)", opts).group(1)),
            )
            kw = (
                {"void_class": "--void-class" in opts, "before": cfg.interval - 1, "after": cfg.interval}
                if ds == "camvid"
                else {}
            )
            prepare(work / "src" / ds, work / out, cfg, splits=("train", "val"), progress=False, **kw)
        make_synthetic_dataset(
            str(work / f"data/synthetic_{ds}"),
            train_clips=2,
            val_clips=1,
            config=SyntheticConfig(height=SIZES[ds][0], width=SIZES[ds][1], frames=12),
            annotated=(9,),
            workers=1,
            progress=False,
        )
    old = os.getcwd()
    os.chdir(work)
    yield work
    os.chdir(old)
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("ds", DATASETS)
def test_every_recipe_chain_runs_stage_after_stage(ds, rehearsal, capsys, monkeypatch):
    """Each stage trains one step (no validation: the evaluation of every recipe's strategy is
    tested on its own) and writes the checkpoint the next stages load by the paths their recipes
    name, with `--no-prerequisites` (a stage whose predecessor is not where it looks is refused)."""
    order = stages(ROOT / ds)
    names = [p.stem for p in order]
    # the chains the papers describe, in the order they must run
    # AR-Seg: the authors train the LR branch alone first on CamVid (stage1_epoch 50), not on Cityscapes (0)
    arseg = (
        [("arseg_lr_psp18", "arseg_psp18"), ("arseg_lr_bise18", "arseg_bise18")]
        if ds == "camvid"
        else [("per_frame_psp18", "arseg_psp18"), ("per_frame_bise18", "arseg_bise18")]
    )
    for first, then in (
        *arseg,
        ("per_frame_psp18", "arseg_lr_psp18"),
        ("flownet_pretrain", "dff_r101"),
        ("per_frame_r101", "interp_mv_r101"),
        ("teacher_r101", "bdnet_r50"),
        ("per_frame_r18", "bdnet_r18"),
        ("per_frame_r101_dlv2", "bdnet_r101"),
        ("per_frame_r101", "adaptive_r101"),
    ):
        assert names.index(first) < names.index(then), (first, then)
    needs = {p.name: set((yaml.safe_load(p.read_text()).get("prerequisites") or {}).values()) for p in order}
    run_dir = {p.name: Path(yaml.safe_load(p.read_text())["trainer"]["default_root_dir"]) for p in order}
    cache = ["--data.init_args.cache_dir", str(rehearsal / "cache")]
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the recipes' W&B logger stays, without 38 offline runs
    try:
        for i, p in enumerate(order):
            t0 = time.perf_counter()
            rc = main(["fit", "--config", str(p), "--no-prerequisites", *CPU, *cache])
            assert rc == 0, f"{ds}/{p.name}: exit status {rc}\n{capsys.readouterr().err[-3000:]}"
            ckpt = run_dir[p.name] / "checkpoints" / "last.ckpt"
            assert ckpt.is_file(), f"{p.name} did not write {ckpt}"
            for done in needs[p.name]:  # a stage no later stage loads: its full-width checkpoints go
                if not any(done in needs[q.name] for q in order[i + 1 :]):
                    shutil.rmtree(run_dir[done])
            print(f"rehearsal: {ds}/{p.name} {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        shutil.rmtree(rehearsal / "runs" / ds, ignore_errors=True)


def test_interp_mv_reaches_the_next_keyframe_through_the_iframe(rehearsal):
    """interp-MV's recipe data (GOP 10, label the last frame of its GOP, L = 5): every chain from
    the current frame to the next keyframe crosses the I-frame at 20. With the I-frame and
    intra-block rules (the defaults) >= 80 % of the cells reach it through motion at every distance
    1..4 (the issue's target), as often as a backward chain of the same length reaches its
    keyframe; without the I-frame rule, none do."""
    from mvseg.data.cache import VideoCache
    from mvseg.data.folder import load_folder_dataset
    from mvseg.data.samples import KeyframeSamples

    ds = load_folder_dataset(rehearsal / "data/cityscapes")
    fractions = {}
    for rule in ("extrapolate", "none"):
        cache = VideoCache(rehearsal / f"cache-{rule}", iframes=rule)  # "none": the bitstream's I-frames
        for d in range(5):
            fwd, bwd = [], []
            for split in ("train", "val"):
                s = KeyframeSamples(ds, split, cache, 5, [d], train=False, with_next=True)
                fwd += [float(s[i]["mask_cur_to_next"].mean()) for i in range(len(s))]
                back = KeyframeSamples(ds, split, cache, 10, [5 - d], train=False)  # a chain of 5 - d links
                bwd += [float(back[i]["mask_cur_to_key"].mean()) for i in range(len(back))]
            fractions[rule, d] = np.mean(fwd), np.mean(bwd)
    for d in range(1, 5):
        fwd, bwd = fractions["extrapolate", d]
        assert fwd >= 0.8 and fwd >= 0.9 * bwd, (d, fwd, bwd)  # 5 - d links, the last the I-frame's
        assert fractions["none", d][0] == 0.0  # the chain cut at the I-frame
