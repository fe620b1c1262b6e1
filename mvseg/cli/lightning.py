"""LightningCLI for `mvseg fit|validate|test` (subclass mode for model and data, as torchgeo)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Optional, Union

import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mvseg import prerequisites
from mvseg.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    UnsafeCheckpointError,
    safe_load,
)
from mvseg.data.cache import CacheWriteError
from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.data.folder import DatasetError
from mvseg.resume import FitInterrupted
from mvseg.run_dir import RunFolderError, RunLock, clear_run, process_rank, trained_run
from mvseg.strategies.base import SegStrategy
from mvseg.strategies.loading import CHECKPOINT_OPTIONS, checkpoint_option_keys
from mvseg.summary import RunSummary, run_dir_of
from mvseg.threads import configure_threads
from mvseg.video.decode import VideoError
from mvseg.wandb_offline import ensure_wandb_never_blocks


class ConfigError(ValueError):
    """A config that parses but cannot be instantiated (a value out of range, a checkpoint that
    does not fit): one line that says what to change, instead of jsonargparse's traceback."""


_PACKAGE = str(Path(__file__).resolve().parents[1])  # the mvseg package


def _own_message(e: BaseException) -> str | None:
    """The message of the first error in `e`'s chain that mvseg raised itself (our checks say
    which key and what to change), else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = Path(tb.tb_frame.f_code.co_filename).resolve() if tb is not None else None
        if where is not None and str(where).startswith(_PACKAGE):
            msg = str(e)
            section = "data" if where.parent.name == "data" else "model"
            return msg if msg.startswith(("data.", "model.")) else f"{section}.init_args: {msg}"
        e = e.__cause__ or e.__context__
    return None


def newest_resume_point(run_dir: str | Path | None) -> str:
    """What `--ckpt_path last` resumes from: the newer of RUN/checkpoints/last.ckpt (written at
    every epoch end) and Lightning's RUN/hpc_ckpt_N.ckpt (written mid-epoch when SLURM warns of
    pre-emption with SIGUSR1); "last" (Lightning's own lookup, fresh if none) otherwise."""
    run = Path(run_dir or ".")
    found = [p for p in [run / "checkpoints" / "last.ckpt", *run.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    if not any(p.name.startswith("hpc_ckpt_") for p in found):
        return "last"
    return str(max(found, key=lambda p: p.stat().st_mtime_ns))


def _qualified(class_path: str | None) -> str | None:
    """A class path as the class's own module names it (mvseg.strategies.PerFrame ->
    mvseg.strategies.per_frame.PerFrame, as checkpoints store it); None if it does not import."""
    import importlib

    module, _, name = (class_path or "").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return f"{cls.__module__}.{cls.__qualname__}"


def _options(parser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")]


def _class_keys(class_path: str) -> list[str]:
    """The constructor arguments of a class and of the classes its **kwargs reach (its bases)."""
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    keys: list[str] = []
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            keys += [p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "args", "kwargs")]
    return keys


def one_line_error(message: str, parser) -> str:
    """jsonargparse's error as one line, with the closest valid names of a misspelt option."""
    import difflib
    import re

    nested = re.search(r"Option '(\w+)' is not accepted", message)
    if nested:  # an unknown option inside a nested config (--model.init_args.optim.lrr): name it
        bad = nested.group(1)
        owner = re.findall(r"Problem with given class_path '([\w.]+)'", message[: nested.start()])
        outer = re.match(r'Parser key "([\w.]+)"', message.strip())
        given = re.findall(r"NestedArg\(key='([\w.]+)'", message)
        if owner and outer and given:
            path = given[-1]  # the whole key under the outer one: optim.lrr
            head = f"{outer.group(1)}.init_args.{path.rpartition('.')[0]}".rstrip(".")
            tips = [f"--{head}.{g}" for g in difflib.get_close_matches(bad, _class_keys(owner[-1]), n=2, cutoff=0.6)]
            return f"--{outer.group(1)}.init_args.{path}: {owner[-1]} has no option {bad!r}" + (
                f" (did you mean {' or '.join(tips)}?)" if tips else ""
            )
    union = re.search(
        r'Parser key "([\w.]+)":.*?Problem with given class_path \'([\w.]+)\':\s*(.+?)(?:\n\s*- |\n\s*Given|$)',
        message,
        re.S,
    )
    if union:  # a subclass (model / data) option: the class's own error, not the Union's
        key, class_path, detail = union.group(1), union.group(2), " ".join(union.group(3).split())
        line = f"{key}: {class_path}: {detail}"
        keys = _class_keys(class_path)
        tips = []
        for bad in re.findall(r"--([\w.]+)", detail):
            head, _, rest = bad.partition(".")
            for good in difflib.get_close_matches(head, keys, n=2, cutoff=0.6):
                tips.append(f"--{key}.init_args.{good}{'.' + rest if rest else ''}")
        return line + (f" (did you mean {' or '.join(tips)}?)" if tips else "")
    typed = re.match(
        r'Parser key "([\w.]+)":.*?Errors:\s*((?:- Expected a <class \'\w+\'>\s*)+)'
        r"Given value type: .*?Given value: (.*)",
        " ".join(message.split()),
    )
    if typed:  # a value of the wrong type: which types the key takes
        kinds = re.findall(r"<class '(\w+)'>", typed.group(2))
        expected = " or ".join(k.replace("NoneType", "null") for k in kinds)
        return f"{typed.group(1)}: expected {expected}, got {typed.group(3)!r}"
    line = " ".join(message.split())
    bad = (
        re.findall(r"(--[\w.]+)", line.split("unrecognized arguments:", 1)[1])
        if "unrecognized arguments:" in line
        else []
    )
    tips = [g for b in bad for g in difflib.get_close_matches(b, _options(parser), n=2, cutoff=0.75)]
    return line + (f" (did you mean {' or '.join(dict.fromkeys(tips))}?)" if tips else "")


class MVSegParser(LightningArgumentParser):
    """LightningCLI's parser with exact option names only (no abbreviations: `--trainer.max_epoch`
    is an error, not `--trainer.max_epochs`) and errors as one line, with the closest valid names
    of a misspelt option; the usage is printed by --help only."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        # jsonargparse's debug mode (its documented JSONARGPARSE_DEBUG variable) raises instead: keep that
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"mvseg: error: {one_line_error(message, parser)}\n({prog} --help lists every option)\n")
        self.exit(2)


class RunDirConfig(SaveConfigCallback):
    """The parsed config as RUN_DIR/config.yaml (trainer.default_root_dir, beside checkpoints/),
    whatever the logger (Lightning's default puts it in the logger's folder, which W&B sweep
    runs share), overwritten by a re-queued job; and, with a WandbLogger, the whole config in
    the W&B run's config under `cli` (the model's own hyper-parameters are logged anyway).
    `mvseg validate` / `test` write theirs beside it as config.validate.yaml / config.test.yaml:
    the run's config.yaml stays the one that trains it again."""

    def __init__(
        self,
        parser,
        config,
        config_filename: str = "config.yaml",
        overwrite: bool = False,
        multifile: bool = False,
        save_to_log_dir: bool = True,
    ) -> None:
        super().__init__(parser, config, config_filename, overwrite=True, multifile=multifile, save_to_log_dir=False)

    # Written once the run has really started (its loaders built, the checkpoint restored), not
    # at setup: a fit that fails at start-up (a bad value, a missing file) leaves a trained run's
    # config.yaml as it was.
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._stage = stage

    def _save_now(self, trainer, pl_module) -> None:
        if not self.already_saved and trainer.is_global_zero and not trainer.sanity_checking:
            self.save_config(trainer, pl_module, self._stage)
            self.already_saved = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._save_now(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        if str(getattr(self._stage, "value", self._stage)) == "validate":
            self._save_now(trainer, pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self._save_now(trainer, pl_module)

    def save_config(self, trainer, pl_module, stage: str) -> None:  # rank 0 only (Lightning calls it so)
        run = Path(trainer.default_root_dir)
        run.mkdir(parents=True, exist_ok=True)
        if self.config.get("base"):  # the saved config is whole: its base is merged into it already
            self.config = self.config.clone()
            self.config["base"] = None
        stage = str(getattr(stage, "value", stage))  # TrainerFn.VALIDATING -> "validate"
        name = self.config_filename if stage == "fit" else f"{Path(self.config_filename).stem}.{stage}.yaml"
        # dumped once, unvalidated: the config was validated when it was parsed (a second validation
        # cost about 0.3 s a fit)
        text = self.parser.dump(self.config, skip_none=False, skip_validation=True)
        if self.multifile:
            self.parser.save(self.config, str(run / name), skip_none=False, overwrite=True, multifile=True)
        else:
            (run / name).write_text(text)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_hyperparams({"cli": yaml.safe_load(text)})


class MVSegCLI(LightningCLI):
    #: False under `--no-prerequisites`: a missing stage is an error instead of being trained
    prerequisites_allowed = True
    #: True under `--overwrite`: a fit into a folder with a trained run removes that run's checkpoints
    overwrite = False
    #: the run folders this process holds (released when the command ends)
    locks: list[RunLock] = []

    def add_arguments_to_parser(self, parser) -> None:
        # The class count comes from the dataset; the keyframe interval is the data's L.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.init_args.keyframe_interval", "model.init_args.keyframe_interval")
        parser.add_argument(
            "--base",
            type=Optional[Union[str, list[str]]],  # noqa: UP007, UP045 - jsonargparse reads the annotation object
            default=None,
            help="a config, or a list of them (paths relative to this one), whose keys this one extends "
            "and overrides; read before it, in order (`with_bases`)",
        )
        parser.add_argument(
            "--prerequisites",
            type=Optional[dict[str, str]],  # noqa: UP045 - as above
            default=None,
            help="config key of a checkpoint -> the config (beside this one) that writes it; "
            "`mvseg fit` trains a missing one first (mvseg.prerequisites)",
        )

    def parse_arguments(self, parser, args) -> None:
        # the command line normalised (normalize_argv); sys.argv too, which DDP re-launches its ranks from
        if args is None:
            sys.argv[1:] = normalize_argv(sys.argv[1:])[0]
        elif isinstance(args, (list, tuple)):
            args = normalize_argv(list(args))[0]
        super().parse_arguments(parser, args)
        if self.config.get("subcommand") == "fit":
            cfg = self.config["fit"]
            prerequisites.prepare(
                cfg,
                [str(c) for c in cfg.get("config") or []],
                list(sys.argv[1:] if args is None else args),
                self.prerequisites_allowed,
            )
            self._claim_run_dir(cfg)
            if not cfg["trainer"].get("fast_dev_run"):  # a real run never starts from a smoke test's model
                for key in checkpoint_option_keys():
                    path = cfg.get(key)
                    if isinstance(path, str) and Path(path).is_file() and safe_load(path).get("mvseg_smoke"):
                        raise ConfigError(
                            f"{key}: {path} was written by a smoke test (--trainer.fast_dev_run), "
                            "not by a real run: train it for real first"
                        )
        # Under `wandb agent` every run of a sweep would share the config's run directory (its
        # checkpoints overwriting each other's): each gets RUN_DIR/sweep-SWEEP_ID/RUN_ID, from
        # the variables the agent sets for the run it starts.
        sweep_id, run_id = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
        if sweep_id and run_id:
            cfg = self.config[self.config["subcommand"]] if self.config.get("subcommand") else self.config
            cfg["trainer"]["default_root_dir"] = str(
                Path(cfg["trainer"]["default_root_dir"] or ".") / f"sweep-{sweep_id}" / run_id
            )

    def _claim_run_dir(self, cfg) -> None:
        """Lock the run folder for this fit, and refuse to start a new run over a trained one."""
        if process_rank() != 0 or os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
            return  # ranks > 0 run in rank 0's folder; a sweep run gets its own folder below
        run = Path(cfg["trainer"]["default_root_dir"] or ".")
        if run.resolve() == Path.cwd().resolve():
            return  # no run folder configured: Lightning's defaults, nothing of ours to protect
        MVSegCLI.locks.append(RunLock(run).acquire())
        old = trained_run(run)
        if old and not cfg.get("ckpt_path") and not cfg["trainer"].get("fast_dev_run"):
            if not MVSegCLI.overwrite:
                newest = max(old, key=lambda p: p.lstat().st_mtime)
                raise RunFolderError(
                    f"trainer.default_root_dir: {run} holds a trained run ({len(old)} checkpoints, newest "
                    f"{newest.name}): resume it with --ckpt_path last, start it over with --overwrite "
                    "(its checkpoints and summary are removed), or train into another folder"
                )
            for p in clear_run(run):
                print(f"mvseg: --overwrite: removed {p}", file=sys.stderr)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI (2.6, a private hook) reads the hyper-parameters of --ckpt_path before
        # anything else: check the file first, for an error that names it, not a traceback.
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if ckpt_path == "last":
            ckpt_path = self.config[sub]["ckpt_path"] = newest_resume_point(
                self.config[sub]["trainer"]["default_root_dir"]
            )
        if ckpt_path and Path(ckpt_path).is_file():
            raw = safe_load(ckpt_path)
            held, wanted = (
                raw.get("mvseg_strategy"),
                _qualified((self.config[sub].get("model") or {}).get("class_path")),
            )
            if held and wanted and held != wanted:  # another method's weights under this config's name
                raise ConfigError(
                    f"ckpt_path: {ckpt_path} holds a {held.rsplit('.', 1)[1]} ({held}) but the config's "
                    f"model is {wanted}: pass the config it was trained with "
                    f"({run_dir_of(ckpt_path) / 'config.yaml'})"
                )
            if raw.get("mvseg_smoke") and not self.config[sub]["trainer"].get("fast_dev_run"):
                raise ConfigError(
                    f"ckpt_path: {ckpt_path} was written by a smoke test (--trainer.fast_dev_run), not by a real run"
                )
        super()._parse_ckpt_path()

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as e:
            own = _own_message(e)
            if own is None:
                raise
            raise ConfigError(own) from e

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        # Checkpoints go to RUN_DIR/checkpoints (not inside the logger's folders), so a user,
        # and a re-queued job, finds them at one fixed place: trainer.default_root_dir.
        for cb in trainer.checkpoint_callbacks:
            if cb.dirpath is None:
                cb.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        # Checkpoints whole or absent (a kill or a full disk mid-write keeps the previous one),
        # loaded weights-only; a CheckpointIO the user configured is left alone.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                # Lightning passes anonymous=None, which W&B warns about on every run; W&B warns that
                # its "git root" does not exist when the run's folder is not made yet
                logger._wandb_init.pop("anonymous", None)
                if logger.save_dir:
                    Path(logger.save_dir).mkdir(parents=True, exist_ok=True)
        # the result, said at the end of the fit (mvseg.summary): this run and the runs it stands on
        if self.config.get("subcommand") == "fit":
            init = self.config["fit"]["model"].get("init_args") or {}
            refs = {k: init.get(k) for k in CHECKPOINT_OPTIONS if isinstance(init.get(k), str)}
            trainer.callbacks.append(RunSummary(refs))
        return trainer


def error_line(e: BaseException) -> str:
    """An error's message; one re-raised from a DataLoader worker (PyTorch puts the worker's whole
    traceback in it) is the worker's own message, the last line."""
    msg = str(e)
    if "Original Traceback" in msg:
        last = msg.strip().splitlines()[-1]
        head, sep, rest = last.partition(": ")
        msg = rest if sep and head.replace(".", "").replace("_", "").isalnum() else last
    return msg


def _yaml_of(path: str) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
    except (OSError, yaml.YAMLError):
        data = None  # jsonargparse reports an unreadable config, naming it
    return data if isinstance(data, dict) else {}


def _config_chain(path: str, seen: tuple[Path, ...] = ()) -> list[str]:
    """`path` preceded by the configs its `base:` names (one path or a list), each base's own chain
    before it, bases in their order; a config reached twice is read once, at its first place."""
    p = Path(path)
    base = _yaml_of(path).get("base")
    if not base:
        return [path]
    names = [base] if isinstance(base, str) else base
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{p}: base must be a config's path or a list of them (relative to {p.parent}), got {base!r}")
    chain: list[str] = []
    for name in names:
        b = Path(os.path.normpath(p.parent / name))  # camvid/../_base.yaml -> _base.yaml
        if not b.is_file():
            raise ConfigError(f"{p}: its base {name!r} is not a file (looked for {b})")
        if b.resolve() in seen or b.resolve() == p.resolve():
            raise ConfigError(f"{p}: base {name!r} leads back to itself")
        for c in _config_chain(str(b), (*seen, p.resolve())):
            if all(Path(c).resolve() != Path(d).resolve() for d in chain):
                chain.append(c)
    return [*chain, path]


def _class_first(chain: list[str]) -> list[str]:
    """jsonargparse reads a subclass's init_args only once its class_path is known: a fragment that
    sets `model` or `data` init_args before any config of the chain named that class (a `_net/`
    fragment: the method's config names the class) is read right after the first config that names
    it, and that config once more after it, so the config's own keys still override the fragment."""
    out: list[str] = []
    waiting: dict[str, list[str]] = {}  # section -> fragments read once its class is known
    named: set[str] = set()
    for c in chain:
        data, early = _yaml_of(c), None
        for key in ("model", "data"):
            section = data.get(key)
            if isinstance(section, dict) and "class_path" not in section and key not in named:
                early = key
        if early is not None:
            waiting.setdefault(early, []).append(c)
            continue
        out.append(c)
        for key in ("model", "data"):
            section = data.get(key)
            if (isinstance(section, dict) and "class_path" in section) or isinstance(section, str):
                named.add(key)
                if waiting.get(key):
                    out += [*waiting.pop(key), c]
    return out + [c for fragments in waiting.values() for c in fragments]  # left for jsonargparse to report


def merged_config(path: str | Path) -> dict:
    """A config with its chain of bases merged in, key by key (lists whole), as `mvseg fit` reads
    it (before jsonargparse's defaults): what a config really sets, e.g. to copy it elsewhere."""

    def merge(a: dict, b: dict) -> dict:
        return {
            **a,
            **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v for k, v in b.items()},
        }

    out: dict = {}
    for c in _class_first(_config_chain(str(path))):
        out = merge(out, _yaml_of(c))
    out.pop("base", None)
    return out


def with_bases(args: list[str]) -> list[str]:
    """Every `--config X` (or -c X, --config=X) whose YAML names a `base:` becomes `--config` of
    each config of its chain (`_config_chain`, class paths first: `_class_first`), then X:
    LightningCLI merges configs given in turn key by key (lists whole), so a config holds only what
    differs from its bases (experiments/_base.yaml, _data/*.yaml, _net/*.yaml)."""
    out, i, merged = [], 0, False
    while i < len(args):
        a = args[i]
        if a in ("--config", "-c") and i + 1 < len(args):
            path, i = args[i + 1], i + 2
        elif a.startswith("--config="):
            path, i = a.split("=", 1)[1], i + 1
        else:
            out.append(a)
            i += 1
            continue
        chain = _class_first(_config_chain(path))
        merged = merged or len(chain) > 1
        for c in chain:
            out += ["--config", c]
    if merged:  # merged now: the printed and saved configs are whole, they name no base
        out += ["--base", "null"]
    return out


class _NoTips(logging.Filter):
    """Lightning's advertisements ("💡 Tip: ... try installing litlogger") say nothing to our users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_notices() -> None:
    """Silence the notices of Lightning and W&B that do not concern a mvseg user."""
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in lg.filters):
            lg.addFilter(_NoTips())
    # mvseg's DataModule puts a mid-epoch position in its own state (mvseg.resume): resuming there is exact
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # torch's, inside Lightning


#: mvseg's own flags of the Lightning verbs (LightningCLI does not know them)
OWN_FLAGS = ("--no-prerequisites", "--overwrite")


def sweep_agent_values(argv: list[str]) -> list[str]:
    """A W&B sweep agent writes each value with Python's str(): True/False and lists parse as
    YAML, but None does not (YAML's null is `null`); `--key=None` and `--key None` become null."""
    out = []
    for i, a in enumerate(argv):
        if a.startswith("--") and a.endswith("=None") and "." in a:
            a = a[: -len("None")] + "null"
        elif a == "None" and i > 0 and argv[i - 1].startswith("--") and "=" not in argv[i - 1]:
            a = "null"
        out.append(a)
    return out


def normalize_argv(argv: list[str]) -> tuple[list[str], set[str]]:
    """The one place a Lightning verb's command line is rewritten before LightningCLI reads it:
    a sweep agent's None values as null (`sweep_agent_values`), mvseg's own flags taken out
    (returned apart), every config's bases spelled out (`with_bases`; a command line that has
    them already, as DDP's re-launched ranks get it, is left as it is)."""
    flags = {a for a in argv if a in OWN_FLAGS}
    out = [a for a in sweep_agent_values(argv) if a not in OWN_FLAGS]
    if "--base" not in out:
        out = with_bases(out)
    return out, flags


def run_lightning_cli(argv: list[str] | None) -> int:
    """Run LightningCLI on `argv` (None: sys.argv); returns the exit status."""
    ensure_wandb_never_blocks()
    quiet_notices()
    if notice := configure_threads():  # torch's threads from the CPUs this process may use
        print(notice, file=sys.stderr)
    held = len(MVSegCLI.locks)  # a prerequisite stage runs nested in this process: its own locks only
    try:
        given = sys.argv[1:] if argv is None else argv  # normalised in MVSegCLI.parse_arguments
        MVSegCLI.prerequisites_allowed = "--no-prerequisites" not in given
        MVSegCLI.overwrite = "--overwrite" in given
        MVSegCLI(
            SegStrategy,
            CompressedVideoDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=argv,
            save_config_callback=RunDirConfig,
            parser_class=MVSegParser,  # RUN_DIR/config.yaml, overwritten by a re-queued job
            parser_kwargs={"prog": "mvseg"},
        )
    except SystemExit as e:  # jsonargparse reports bad keys/values and exits
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except prerequisites.PrerequisiteError as e:
        print(f"mvseg: error: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"mvseg: error: {e}\n(--print_config shows the whole config as parsed)", file=sys.stderr)
        return 2
    except FitInterrupted as e:  # Ctrl-C / SIGTERM: the resume point is saved (mvseg.resume)
        print(f"mvseg: {e}", file=sys.stderr)
        return e.exit_code
    except RunFolderError as e:
        print(f"mvseg: error: {e}", file=sys.stderr)
        return 2
    except (CheckpointWriteError, UnsafeCheckpointError, CacheWriteError, VideoError, DatasetError) as e:
        # the message names the file and says what was kept; a traceback adds nothing
        print(f"mvseg: error: {error_line(e)}", file=sys.stderr)
        return 1
    finally:
        while len(MVSegCLI.locks) > held:
            MVSegCLI.locks.pop().release()
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # Lightning ignores Ctrl-C after one: not for us
            signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.pop(prerequisites.SMOKE_ROOT, None)  # a later run in this process has its own
        # Close this run's W&B run, so a later main() in the same process (tests, local
        # sweeps) starts its own instead of silently appending to this one.
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()
    return 0
