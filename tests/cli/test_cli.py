"""The `mvseg` console script: LightningCLI configs, errors, W&B offline, predict."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import folder_data_args, one_step_trainer

from mvseg.cli import main
from mvseg.cli.lightning import ensure_wandb_never_blocks
from mvseg.video.decode import decode_video

ROOT = Path(__file__).parents[2] / "experiments"
EXPERIMENTS = sorted(p for p in ROOT.glob("*.yaml") if not p.name.startswith("_"))  # _base.yaml: shared keys
# paper-scale (cityscapes, camvid); _data/ and _net/ hold fragments that configs name in their base
RECIPES = sorted(p for p in ROOT.glob("*/*.yaml") if not p.name.startswith("_") and not p.parent.name.startswith("_"))
BASES = sorted(ROOT.rglob("_base.yaml"))
ABLATIONS = sorted(p for p in RECIPES if p.parent.name == "bdnet_ablation")  # overrides on top of bdnet.yaml
RECIPES = [p for p in RECIPES if p not in ABLATIONS and p.parent.name != "sweeps"]  # sweeps: W&B sweep configs
PER_FRAME = ROOT / "per_frame.yaml"


def test_there_are_experiments():
    assert {p.name for p in EXPERIMENTS} >= {
        "per_frame.yaml",
        "colour_only.yaml",
        "prop_mv.yaml",
        "interp_mv.yaml",
        "flownet_pretrain.yaml",
        "dff.yaml",
        "arseg.yaml",
        "arseg_lr.yaml",
        "teacher.yaml",
        "bdnet.yaml",
    }
    assert {p.stem for p in ABLATIONS} == {"mv", "mv_bas", "mv_bas_pw"}


@pytest.fixture(scope="module")
def teacher_ckpt(tiny_dataset, tmp_path_factory):
    """experiments/teacher.yaml trained for one step on the tiny dataset: BDNet's teacher."""
    run = tmp_path_factory.mktemp("teacher")
    args = [
        "fit",
        "--config",
        str(ROOT / "teacher.yaml"),
        *folder_data_args(tiny_dataset),
        "--trainer.default_root_dir",
        str(run),
        "--trainer.logger.init_args.save_dir",
        str(run),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "0",
    ]
    assert main(args) == 0
    return run / "checkpoints" / "last.ckpt"


def _leaves(d: dict, prefix: str = "") -> dict:
    """{"trainer.logger.init_args.name": value, ...}: a config's values by their full key (lists whole)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_every_config_stands_on_its_folders_base_and_states_only_what_differs():
    """A config's `base:` (a path or a list) is read first and its own keys override it, key by
    key (lists whole): every config of a folder with a _base.yaml stands on it (the folders' bases
    on experiments/_base.yaml), and repeats none of the values its bases give."""
    import yaml

    from mvseg.cli.lightning import _class_first, _config_chain, merged_config, with_bases

    assert {p.parent.name for p in BASES} == {"experiments", "cityscapes", "camvid"}
    for base in BASES:
        for config in sorted(base.parent.glob("[!_]*.yaml")):
            chain = _class_first(_config_chain(str(config)))
            assert chain[0] == str(ROOT / "_base.yaml") and str(base) in chain and chain[-1] == str(config)
            assert with_bases(["fit", "--config", str(config)]) == [
                "fit",
                *[a for c in chain for a in ("--config", c)],
                "--base",
                "null",
            ]
            own = _leaves({k: v for k, v in yaml.safe_load(config.read_text()).items() if k != "base"})
            given: dict = {}
            for c in _config_chain(str(config))[:-1]:
                given.update(_leaves(merged_config(c)))
            repeated = {k for k in own if k in given and given[k] == own[k] and not k.endswith("class_path")}
            assert not repeated, f"{config.name} repeats {repeated} of its bases"


def test_a_fragment_base_is_read_once_its_class_is_known(tmp_path):
    """A `_net/` fragment sets model init_args before the config names the model's class: it is
    read after that config, and the config once more, so the config's own keys still win."""
    from mvseg.cli.lightning import merged_config, with_bases

    (tmp_path / "net.yaml").write_text("model:\n  init_args:\n    net: {width: 0.5, head: psp}\n")
    (tmp_path / "run.yaml").write_text(
        "base: [net.yaml]\nmodel:\n  class_path: mvseg.strategies.PerFrame\n  init_args:\n    net: {width: 1.0}\n"
    )
    net, run = str(tmp_path / "net.yaml"), str(tmp_path / "run.yaml")
    assert with_bases(["fit", "--config", run]) == [
        "fit",
        "--config",
        run,
        "--config",
        net,
        "--config",
        run,
        "--base",
        "null",
    ]
    assert merged_config(run)["model"]["init_args"]["net"] == {"width": 1.0, "head": "psp"}


def test_a_broken_base_is_one_line_naming_the_config(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("base: missing.yaml\n")
    assert main(["fit", "--config", str(tmp_path / "a.yaml")]) == 2
    assert f"{tmp_path / 'a.yaml'}: its base 'missing.yaml' is not a file" in capsys.readouterr().err
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    assert main(["fit", "--config", str(tmp_path / "b.yaml")]) == 2
    assert "leads back to itself" in capsys.readouterr().err


def test_there_are_paper_recipes():
    assert {f"{p.parent.name}/{p.name}" for p in RECIPES} >= {"cityscapes/arseg_psp18.yaml", "camvid/arseg_psp18.yaml"}


@pytest.mark.parametrize("config", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_every_experiment_runs_fast_dev_run(config, tiny_data_args, capsys, request):
    text = config.read_text()  # the checkpoints a fine-tuning config starts from are not there in tests
    extra = [
        arg
        for key in ("init_from", "flow_init", "lr_init")
        if f"{key}:" in text
        for arg in (f"--model.init_args.{key}", "null")
    ]
    if re.search(
        r"^\s+teacher:", text, re.M
    ):  # BDNet's teacher: a PerFrame checkpoint made from experiments/teacher.yaml
        extra += ["--model.init_args.teacher", str(request.getfixturevalue("teacher_ckpt"))]
    if "keyframe_interval: 12" in text:  # AR-Seg's L = 12 is longer than the tiny clips (12 frames)
        extra += ["--data.init_args.keyframe_interval", "3"]
        extra += ["--data.init_args.train_distances", "[2]"] if "train_distances" in text else []
    rc = main(["fit", "--config", str(config), "--trainer.fast_dev_run", "1", *tiny_data_args, *extra])
    assert rc == 0


@pytest.mark.parametrize("ablation", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_bdnet_ablation_rows(ablation, tiny_data_args, capsys, request):
    """Each row of BDNet's Table 2 is bdnet.yaml plus one override file: it switches the right
    parts off, writes to its own run directory, and trains."""
    base = ["fit", "--config", str(ROOT / "bdnet.yaml"), "--config", str(ablation)]
    assert main([*base, "--print_config"]) == 0
    conf = yaml.safe_load(capsys.readouterr().out)
    m = conf["model"]["init_args"]
    expect = {"mv": (0.0, 0.0, 1.0), "mv_bas": (1.0, 0.0, 1.0), "mv_bas_pw": (1.0, 1.0, 0.0)}[ablation.stem]
    assert (m["boundary_weight"], m["distill_weight"], m["inn_weight"]) == expect
    assert conf["trainer"]["default_root_dir"] == f"runs/bdnet_{ablation.stem}"
    assert conf["trainer"]["logger"]["init_args"]["name"] == f"bdnet_{ablation.stem}"
    assert conf["trainer"]["logger"]["init_args"]["project"] == "mvseg"  # merged, not replaced
    extra = ["--model.init_args.init_from", "null"]
    if m["distill_weight"] > 0:
        extra += ["--model.init_args.teacher", str(request.getfixturevalue("teacher_ckpt"))]
    assert main([*base, "--trainer.fast_dev_run", "1", *tiny_data_args, *extra]) == 0


def test_checkpoints_land_in_the_run_directory(tiny_data_args, tmp_path):
    import torch

    args = [
        "fit",
        "--config",
        str(PER_FRAME),
        *tiny_data_args,
        "--trainer.max_epochs",
        "3",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--model.init_args.optim.lr",
        "0.5",
    ]
    assert main(args) == 0
    ckpts = tmp_path / "run" / "checkpoints"
    assert (tmp_path / "run" / "config.yaml").is_file()
    # last.ckpt is the last epoch (for resuming), whatever the best by val/mIoU is
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 2
    assert len(list(ckpts.glob("best-epoch=*.ckpt"))) == 1
    # the same run again is refused (a trained run is never mixed with a new one); started over
    # with --overwrite, its files are replaced, no -v1 copies
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0
    assert not list(ckpts.glob("*-v1.ckpt"))


@pytest.mark.reliability
def test_a_real_run_refuses_a_smoke_tests_checkpoint(tiny_dataset, tiny_data_args, tmp_path, capsys):
    """A checkpoint written under fast_dev_run is marked; --ckpt_path and init_from of a real run
    refuse it in one line (a smoke test may chain them)."""
    import lightning as L
    import torch

    from mvseg.data.datamodule import CompressedVideoDataModule
    from mvseg.models.segnet import SegNetConfig
    from mvseg.strategies import PerFrame

    net = SegNetConfig(width=0.125, feat_dim=16, head_dim=16, head="plain")
    ckpts = {}
    for smoke in (True, False):
        dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=2)
        trainer = L.Trainer(
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            **({"fast_dev_run": 1} if smoke else {"max_steps": 1, "limit_val_batches": 0}),
        )
        trainer.fit(PerFrame(9, 3, net=net), dm)
        ckpts[smoke] = tmp_path / f"smoke-{smoke}.ckpt"
        trainer.save_checkpoint(ckpts[smoke])
        assert torch.load(ckpts[smoke], weights_only=True)["mvseg_smoke"] is smoke
    for extra in (["--ckpt_path", str(ckpts[True])], ["--model.init_args.init_from", str(ckpts[True])]):
        config = "per_frame" if extra[0] == "--ckpt_path" else "prop_mv"
        rc = main(
            [
                "fit",
                "--config",
                str(PER_FRAME.with_name(f"{config}.yaml")),
                *tiny_data_args,
                *extra,
                "--model.init_args.net",
                json.dumps({"width": 0.125, "feat_dim": 16, "head_dim": 16, "head": "plain"}),
                "--trainer.max_steps",
                "1",
            ]
        )
        err = capsys.readouterr().err
        assert rc == 2 and f"{ckpts[True]} was written by a smoke test (--trainer.fast_dev_run)" in err, err[-1500:]
    # a smoke test may start from one (the stages of a smoke test chain that way)
    assert (
        main(
            [
                "fit",
                "--config",
                str(PER_FRAME.with_name("prop_mv.yaml")),
                *tiny_data_args,
                "--model.init_args.init_from",
                str(ckpts[True]),
                "--model.init_args.net",
                json.dumps({"width": 0.125, "feat_dim": 16, "head_dim": 16, "head": "plain"}),
                "--trainer.fast_dev_run",
                "1",
            ]
        )
        == 0
    )


@pytest.mark.reliability
def test_validate_and_test_leave_the_runs_config_alone(tiny_data_args, tmp_path, capsys):
    """mvseg validate / test write their config beside the run's (config.validate.yaml), so the
    run's config.yaml is still the one that trains it again."""
    run = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                "--config",
                str(PER_FRAME),
                *tiny_data_args,
                "--trainer.max_epochs",
                "1",
                "--trainer.limit_train_batches",
                "1",
                "--trainer.limit_val_batches",
                "1",
            ]
        )
        == 0
    )
    saved = (run / "config.yaml").read_bytes()
    for verb in ("validate", "test"):
        assert (
            main(
                [
                    verb,
                    "--config",
                    str(run / "config.yaml"),
                    "--ckpt_path",
                    str(run / "checkpoints" / "last.ckpt"),
                    "--trainer.limit_val_batches",
                    "1",
                    "--trainer.limit_test_batches",
                    "1",
                ]
            )
            == 0
        )
        assert (run / f"config.{verb}.yaml").is_file()
    assert (run / "config.yaml").read_bytes() == saved
    assert main(["fit", "--config", str(run / "config.yaml"), "--print_config"]) == 0


@pytest.mark.reliability
@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--trainer.max_epoch", "1"],
            "unrecognized arguments: --trainer.max_epoch 1 (did you mean --trainer.max_epochs",
        ),
        (
            ["--trainer.max_epoks", "1"],
            "unrecognized arguments: --trainer.max_epoks 1 (did you mean --trainer.max_epochs",
        ),
        (
            ["--model.init_args.optim.lrr", "0.1"],  # inside a nested config: the option itself is named
            "--model.init_args.optim.lrr: mvseg.strategies.OptimConfig has no option 'lrr' "
            "(did you mean --model.init_args.optim.lr?)",
        ),
        (
            ["--model.init_args.nett.width", "1"],
            "model: mvseg.strategies.PerFrame: unrecognized arguments: --nett.width=1 "
            "(did you mean --model.init_args.net.width?)",
        ),
        (["--trainer.max_epochs", "abc"], "trainer.max_epochs: expected int or null, got 'abc'"),
    ],
    ids=["abbreviation", "typo", "nested-option", "strategy-option", "type"],
)
def test_a_misspelt_option_is_one_line_with_the_closest_names(args, line, capsys):
    rc = main(["fit", "--config", str(PER_FRAME), *args, "--print_config"])
    lines = [x for x in capsys.readouterr().err.splitlines() if "W&B" not in x]
    assert rc == 2
    assert lines == [lines[0], "(mvseg fit --help lists every option)"] and lines[0].startswith("mvseg: error: "), lines
    assert line in lines[0]


@pytest.mark.reliability
def test_the_own_commands_take_exact_option_names_only(capsys):
    with pytest.raises(SystemExit) as e:
        main(["inspect", "clip.mp4", "--dump-mv", "out.csv"])  # --dump-mvs abbreviated
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "mvseg inspect: error: unrecognized arguments: --dump-mv out.csv (did you mean --dump-mvs?)",
        "(mvseg inspect --help lists every option)",
    ]


@pytest.mark.parametrize("name", ["per_frame", "arseg"])
def test_print_config_round_trip(name, tiny_data_args, tmp_path, capsys):
    cfg = PER_FRAME.with_name(f"{name}.yaml")
    assert main(["fit", "--config", str(cfg), *tiny_data_args, "--print_config"]) == 0
    printed = capsys.readouterr().out
    conf = yaml.safe_load(printed)
    assert conf["model"]["class_path"].startswith("mvseg.strategies.")
    assert conf["data"]["init_args"]["root"] == tiny_data_args[1]
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    # the printed config is itself a valid config
    assert main(["fit", "--config", str(saved), "--print_config"]) == 0
    again = yaml.safe_load(capsys.readouterr().out)
    assert again["model"] == conf["model"] and again["data"] == conf["data"]


@pytest.mark.reliability
def test_wrong_config_key_gets_a_clear_message(capsys):
    rc = main(["fit", "--config", str(PER_FRAME), "--model.init_args.nett.width", "2"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nett" in err and "Traceback" not in err


@pytest.mark.reliability
def test_wrong_value_gets_a_clear_message(capsys):
    rc = main(["fit", "--config", str(PER_FRAME), "--data.init_args.keyframe_interval", "zero"])
    assert rc == 2
    assert "keyframe_interval" in capsys.readouterr().err


@pytest.mark.reliability
@pytest.mark.parametrize(
    "config, args, message",
    [
        ("per_frame", ["--data.init_args.keyframe_interval", "0"], "data.keyframe_interval must be >= 1, got 0"),
        (
            "per_frame",
            ["--data.init_args.eval_distances", "[0, 7]"],
            r"data.eval_distances must be a non-empty subset of 0..4, got \[0, 7\]",
        ),
        (
            "per_frame",
            ["--model.init_args.optim.optimizer", "adam"],
            "model.init_args: optim.optimizer must be 'sgd' or 'adamw', got 'adam'",
        ),
        (  # (its stages' checkpoints left out: the value is checked, not the stages' smoke tests)
            "arseg",
            [
                "--model.init_args.lr_scale",
                "2.0",
                "--model.init_args.init_from",
                "null",
                "--model.init_args.lr_init",
                "null",
            ],
            r"model.init_args: lr_scale must be in \[0.1, 1.0\]",
        ),
        ("prop_mv", ["--model.init_args.init_from", "missing.ckpt"], "missing.ckpt"),
    ],
    ids=["interval-0", "distance-out-of-range", "optimizer", "lr-scale", "missing-init-checkpoint"],
)
def test_bad_config_values_are_caught_at_start_up(config, args, message, tiny_data_args, capsys):
    rc = main(["fit", "--config", str(ROOT / f"{config}.yaml"), *tiny_data_args, *args, "--trainer.fast_dev_run", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert re.search(f"mvseg: error: .*{message}", err), err[-2000:]
    assert "Traceback" not in err


@pytest.mark.reliability
def test_teacher_of_another_class_count_is_caught_at_start_up(teacher_ckpt, tiny_data_args, tmp_path, capsys):
    import torch

    from mvseg.strategies import PerFrame

    raw = torch.load(teacher_ckpt, map_location="cpu", weights_only=True)
    hp = dict(raw["hyper_parameters"], num_classes=5)
    raw.update(
        hyper_parameters=hp, state_dict=PerFrame(**{k: v for k, v in hp.items() if not k.startswith("_")}).state_dict()
    )
    torch.save(raw, tmp_path / "teacher5.ckpt")
    rc = main(
        [
            "fit",
            "--config",
            str(ROOT / "bdnet.yaml"),
            *tiny_data_args,
            "--model.init_args.init_from",
            "null",
            "--model.init_args.teacher",
            str(tmp_path / "teacher5.ckpt"),
            "--trainer.fast_dev_run",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert re.search(
        r"mvseg: error: model.init_args: \S+teacher5.ckpt: teacher has 5 classes, the student 9: "
        "train the teacher on the same dataset",
        err,
    ), err[-2000:]


@pytest.mark.reliability
@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete-label"])
def test_a_bad_file_in_the_dataset_stops_fit_before_training(damage, tiny_dataset, tmp_path, capsys):
    """Found by prepare_data (every video decoded into the cache, every label checked) with a
    message naming the file, not mid-epoch in a DataLoader worker."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root, ignore=shutil.ignore_patterns(".cache"))
    video = root / "videos" / "val" / "clip_0001.mp4"
    if damage == "truncate":
        video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    elif damage == "garbage":
        data = bytearray(video.read_bytes())
        data[len(data) // 4 :] = bytes(range(256)) * (len(data[len(data) // 4 :]) // 256) + bytes(
            len(data[len(data) // 4 :]) % 256
        )
        video.write_bytes(bytes(data))
    else:
        next((root / "labels" / "val" / "clip_0001").glob("*.png")).unlink()
    rc = main(
        [
            "fit",
            "--config",
            str(PER_FRAME),
            "--data.init_args.root",
            str(root),
            "--data.init_args.dataset",
            "folder",
            "--data.init_args.num_workers",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--trainer.logger",
            "false",
            "--trainer.fast_dev_run",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert re.search(r"mvseg: error: \S+clip_0001(\.mp4|/\d+\.png): ", err), err[-2000:]
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_num_classes_and_interval_are_linked_into_the_model(tiny_data_args, capsys):
    from mvseg.cli.lightning import MVSegCLI
    from mvseg.data.datamodule import CompressedVideoDataModule
    from mvseg.strategies.base import SegStrategy

    cli = MVSegCLI(
        SegStrategy,
        CompressedVideoDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["--config", str(PER_FRAME), *tiny_data_args, "--data.init_args.keyframe_interval", "4"],
    )
    assert cli.model.num_classes == 9 and cli.model.keyframe_interval == 4
    assert len(cli.model.metrics["val"]) == 4


def test_wandb_goes_offline_without_login(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    notice = ensure_wandb_never_blocks()
    assert os.environ["WANDB_MODE"] == "offline"
    assert notice and "offline" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_MODE", "online")  # an explicit choice is respected
    assert ensure_wandb_never_blocks() is None and os.environ["WANDB_MODE"] == "online"


def test_fit_with_wandb_logger_offline_writes_a_local_run(tiny_data_args, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    run = tmp_path / "wb"
    rc = main(
        [
            "fit",
            "--config",
            str(PER_FRAME),
            *tiny_data_args,
            "--trainer.max_steps",
            "2",
            "--trainer.check_val_every_n_epoch",
            "1",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.logger.init_args.save_dir",
            str(run),
        ]
    )
    assert rc == 0
    assert list((run / "wandb").glob("offline-run-*")), "no offline W&B run written"
    # validation logged example frames with predicted and true masks
    assert list((run / "wandb").glob("offline-run-*/files/media/images/mask/val/*.mask.png"))


def test_predict_writes_overlay_video_and_labels(tiny_dataset, tmp_path, capsys):

    from mvseg.data.datamodule import CompressedVideoDataModule
    from mvseg.models.segnet import SegNetConfig
    from mvseg.strategies import PerFrame

    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=2)
    model = PerFrame(9, 3, net=SegNetConfig(width=0.125, feat_dim=16, head_dim=16))
    trainer = one_step_trainer(tmp_path)
    trainer.fit(model, dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    video = tiny_dataset / "videos" / "val" / "clip_0000.mp4"
    out, labels = tmp_path / "overlay.mp4", tmp_path / "labels"
    assert main(["predict", str(video), "--ckpt", str(ckpt), "--out", str(out), "--labels-dir", str(labels)]) == 0
    v = decode_video(out, mvs=False)
    assert v.frames.shape[:2] == (12, 64) and v.frames.shape[2] > 128  # the frame, and the legend beside it
    assert len(list(labels.glob("*.png"))) == 12
    # said once, in one line: the checkpoint knows it was trained on the synthetic data only
    err = capsys.readouterr().err
    assert err.count("trained on mvseg's synthetic street scenes only") == 1
    assert "mvseg predict: warning: " in err
    assert main(["predict", str(video), "--ckpt", str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt: checkpoint not found" in capsys.readouterr().err
    # the per-frame model has no deviation predictor and no low-latency schedule: said, not crashed
    assert main(["predict", str(video), "--ckpt", str(ckpt), "--policy", "adaptive", "--out", str(out)]) == 2
    assert "PerFrame has no deviation predictor" in capsys.readouterr().err
    assert main(["predict", str(video), "--ckpt", str(ckpt), "--low-latency", "--out", str(out)]) == 2
    assert "PerFrame has no low-latency schedule" in capsys.readouterr().err


def test_predict_with_the_adaptive_policy_and_low_latency(tiny_dataset, tmp_path):

    from mvseg.data.datamodule import CompressedVideoDataModule
    from mvseg.models.segnet import SegNetConfig
    from mvseg.strategies import Adaptive, AdaptiveConfig

    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=2)
    model = Adaptive(
        9,
        3,
        net=SegNetConfig(width=0.125, feat_dim=16, head_dim=16),
        adaptive=AdaptiveConfig(kernel_size=3, kernel_channels=8, deviation_channels=8, fuse_channels=4),
    )
    trainer = one_step_trainer(tmp_path)
    trainer.fit(model, dm)
    ckpt = tmp_path / "a.ckpt"
    trainer.save_checkpoint(ckpt)
    video = tiny_dataset / "videos" / "val" / "clip_0000.mp4"
    outs = {}
    for name, extra in (("blocking", []), ("fast", ["--low-latency"])):
        labels = tmp_path / name
        assert (
            main(
                [
                    "predict",
                    str(video),
                    "--ckpt",
                    str(ckpt),
                    "--policy",
                    "adaptive",
                    "--threshold",
                    "1.5",
                    "--out",
                    str(tmp_path / f"{name}.mp4"),
                    "--labels-dir",
                    str(labels),
                    *extra,
                ]
            )
            == 0
        )
        outs[name] = sorted(labels.glob("*.png"))
    assert len(outs["blocking"]) == len(outs["fast"]) == 12
    # threshold 1.5: only the first frame is a keyframe, so the fast track never runs: same labels
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(outs["blocking"], outs["fast"]))


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("fit", "validate", "test", "predict", "inspect", "data", "bench"):
        assert cmd in out


@pytest.mark.parametrize(
    "argv", [["--help"], ["inspect", "--help"], ["bench", "kernels", "--help"], ["data", "prepare", "--help"]]
)
def test_help_answers_without_the_heavy_imports(argv):
    # the command's own imports happen when it runs: help needs none of torch, Lightning or PyAV
    script = (
        "import sys\nfrom mvseg.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lightning', 'av', 'wandb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:] + out.stderr[-500:]
