"""Every way a strategy reads another run's checkpoint, in one place and without executing code
(`checkpoint_io.safe_load`, weights only):

- `load_strategy`: a whole trained strategy (`mvseg predict`, the benchmarks, BDNet's teacher);
- `load_net_weights`: one network's weights (`init_from`: the per-frame image network that
  propagation methods, AR-Seg and Adaptive start from; AR-Seg's `lr_init`: its stage-1 LR branch);
- `load_aux_weights`: the training-only auxiliary heads, when a checkpoint has the same ones;
- `load_flownet_weights`: DFF's flow network (`flow_init`: FlowPretrain's or DFF's);
- `load_teacher`: BDNet's frozen per-frame teacher.

A missing file names the option and the run that makes it; a checkpoint of another network or
class count names the first mismatching weights.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from mvseg.checkpoint_io import safe_load
from mvseg.models.segnet import SegNet
from mvseg.strategies.base import SegStrategy

#: Every strategy option that loads another run's checkpoint, and how the run summary names that
#: run. The one table of them: the smoke-test guard (`mvseg fit` refuses a smoke test's model),
#: the summary's references and the `prerequisites` a config may name all read it. A method with
#: a new such option adds one row here.
CHECKPOINT_OPTIONS: dict[str, str] = {
    "init_from": "image model (init_from)",
    "lr_init": "LR branch alone (lr_init)",
    "teacher": "teacher",
    "flow_init": "flow network (flow_init)",
}


def checkpoint_option_keys() -> list[str]:
    """The config keys of `CHECKPOINT_OPTIONS` (model.init_args.NAME)."""
    return [f"model.init_args.{name}" for name in CHECKPOINT_OPTIONS]


def load_strategy(ckpt: str | Path) -> tuple[SegStrategy, dict]:
    """A strategy from an mvseg checkpoint, loaded without executing code (weights_only)."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found")
    raw = safe_load(ckpt)
    name = raw.get("mvseg_strategy")
    if not name or not name.startswith("mvseg.strategies."):
        raise ValueError(f"{ckpt}: not an mvseg strategy checkpoint (no 'mvseg_strategy' entry)")
    module, _, cls_name = name.rpartition(".")
    cls = getattr(importlib.import_module(module), cls_name)
    model = cls.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    model.eval()
    return model, raw.get("mvseg_data", {})


def _prefixed_state(path: Path, option: str, hint: str, prefix: str) -> dict[str, torch.Tensor]:
    """The `prefix` weights of the checkpoint at `path`, prefix removed."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {option} checkpoint not found ({hint})")
    state = safe_load(path).get("state_dict", {})
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _mismatches(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape}


def load_net_weights(
    net: torch.nn.Module,
    path: str | Path,
    prefix: str = "net.",
    option: str = "init_from",
    hint: str = "train the per-frame model first",
) -> None:
    """Copy the `prefix` weights of an mvseg checkpoint (e.g. a PerFrame run's `net.*`) into
    `net`; every weight of `net` must be there with its shape."""
    path = Path(path)
    state = _prefixed_state(path, option, hint, prefix)
    own = net.state_dict()
    bad = _mismatches(state, own)
    if not state or bad:
        detail = (
            f"shape mismatches {dict(list(bad.items())[:2])} (another class count or net config?)"
            if bad
            else f"no '{prefix}*' weights"
        )
        raise ValueError(f"{path}: cannot initialise from this checkpoint: {detail}")
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} weights of this network, e.g. {missing[:2]}")
    net.load_state_dict(state)


def load_aux_weights(aux: torch.nn.Module, path: str | Path) -> bool:
    """The training-only auxiliary heads (`aux.*`) of a checkpoint trained with the same ones
    (AR-Seg's LR branch continues its image model's, as the authors' code loads the whole HR
    model); False, and `aux` left as it is, when the checkpoint has none or other ones."""
    state = _prefixed_state(Path(path), "aux", "", "aux.")
    own = aux.state_dict()
    if set(state) != set(own) or _mismatches(state, own):
        return False
    aux.load_state_dict(state)
    return True


def load_flownet_weights(flownet: torch.nn.Module, path: str | Path) -> None:
    """The flow network of a FlowPretrain (or DFF) checkpoint; the scale-function layer is
    kept at its DFF initialisation when the checkpoint has none (FlowPretrain trains no scale)."""
    path = Path(path)
    state = _prefixed_state(path, "flow_init", "run experiments/flownet_pretrain.yaml first", "flownet.")
    if not state:
        raise ValueError(f"{path}: no 'flownet.*' weights (a FlowPretrain or DFF checkpoint is needed)")
    own = flownet.state_dict()
    bad = _mismatches(state, own)
    missing = [k for k in own if k not in state and not k.startswith("scale.")]
    if bad or missing:
        detail = f"shape mismatches {dict(list(bad.items())[:2])}" if bad else f"missing {missing[:2]}"
        raise ValueError(f"{path}: flow network does not match flownet config: {detail}")
    flownet.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def load_teacher(path: str | Path, num_classes: int) -> SegNet:
    """The image network of a trained PerFrame checkpoint, frozen and in eval mode (BDNet's
    distillation teacher); a missing file, another method or another class count is a clear
    error at start-up."""
    from mvseg.strategies.per_frame import PerFrame

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: teacher checkpoint not found (train experiments/teacher.yaml first)")
    model, _ = load_strategy(path)
    if not isinstance(model, PerFrame):
        raise ValueError(f"{path}: the teacher must be a PerFrame checkpoint, got {type(model).__name__}")
    if model.num_classes != num_classes:
        raise ValueError(
            f"{path}: teacher has {model.num_classes} classes, the student {num_classes}: "
            "train the teacher on the same dataset"
        )
    net = model.net.eval()
    net.requires_grad_(False)
    return net
