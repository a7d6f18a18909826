"""The flags of ``onebit train`` and recipe files.

Flags keep the names, short forms and defaults of the seeds' ``main.py`` (RBNN, seed 001
where the two READMEs differ), so a seed command line runs unchanged. A recipe is a YAML
file whose keys are flag names (``lr: 0.1``, ``batch_size: 256``); ``_base_`` names one or
more files it inherits from (paths relative to the file, as mmclassification configs).
Precedence: defaults < recipe (base first, then the file) < flags given on the command line.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import yaml

from onebit.models.config import MODEL_DEFAULTS, MODEL_KEYS
from onebit.utils import ArgumentParser, suggest
from onebit.train.speed import COMPILE_MIN_MACS

LR_TYPES = ("cos", "step", "linear")
DISTILL_KINDS = ("distributional", "kd", "ce+kd")
WD_SCOPES = ("all", "conv", "no_bn")
OPTIMIZERS = ("sgd", "adam")
TEMPERATURE = (1e-2, 1e1)
"""``(Tmin, Tmax)`` of the seeds' main.py: the temperature range of a method without one of its own."""
# Recipe keys that are not flags: they describe the recipe or feed the model builder.
RECIPE_KEYS = {"target_top1", "description", "model_kwargs", "_base_", "paper"}


def _choice(name: str, choices: tuple[str, ...]):
    """An argparse type that rejects a value with a 'did you mean' hint."""

    def check(value: str) -> str:
        if value not in choices:
            raise argparse.ArgumentTypeError(f"invalid {name} {value!r}{suggest(value, choices)}")
        return value

    check.__name__ = name
    return check


def _model_name(value: str) -> str:
    """A registered model name, or a checkpoint file (seed 003's ``-e --model FILE``)."""
    from onebit.models import list_models

    if Path(value).is_file():
        return value
    return _choice("model", tuple(e.name for e in list_models()))(value)


def _bool(value: str) -> bool:
    """``--warm_up True`` as seed 003 writes it (true/false, yes/no, 1/0)."""
    text = str(value).lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def _method_name(value: str) -> str:
    from onebit.quant import list_methods

    return _choice("method", tuple(m.name for m in list_methods()))(value)


def _dataset_name(value: str) -> str:
    from onebit.data import list_datasets

    return _choice("dataset", tuple(list_datasets()))(value)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE",
                   help="YAML recipe (its keys are these flags' names; _base_ inherits) or an mmcls .py config")
    g.add_argument("--results_dir", default="./results", help="root folder of the runs (default ./results)")
    g.add_argument("--save", default="", help="run folder name (default: <model>_<dataset>_<time>)")
    g.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                   help="continue a run: its folder or checkpoint file (bare flag: results_dir/save, else the newest run)")
    g.add_argument("-e", "--evaluate", nargs="?", const=True, default=None, metavar="FILE",
                   help="evaluate this checkpoint on the test set of its data set (or --dataset) and exit (bare -e: the file "
                        "given as --model FILE)")
    g.add_argument("--save-dir", dest="save_dir", metavar="DIR",
                   help="the run folder itself (seed 003): sets --results_dir to its parent and --save to its name")
    g.add_argument("--save-every", dest="save_every", type=int, default=0, metavar="N",
                   help="also keep checkpoint_epochN.pth every N epochs (default 0: never)")
    g.add_argument("--seed", type=int, default=1234, help="seeds Python, NumPy and torch (default 1234)")
    g.add_argument("--gpus", default=None, help="CUDA device ids, e.g. 0,1 (default: cuda:0 when present, else CPU)")
    g.add_argument("--workers", type=int, default=8, help="data loading workers of folder datasets (default 8)")
    g.add_argument("--print_freq", "-p", type=int, default=100, help="log every N batches (default 100)")
    g.add_argument("--time_estimate", type=int, default=1, help="every N epochs print the projected finish; 0 disables")
    g.add_argument("--weight_hist", type=int, default=0, help="every N epochs write weight histograms (0: never)")
    g.add_argument("--sync_bn", action=argparse.BooleanOptionalAction, default=True,
                   help="under DDP, normalise over the global batch (default on: results independent of process count)")
    g.add_argument("--shards", type=int, default=0,
                   help="shards of every global batch, their sums taken in shard order: N processes take one each, "
                        "one process takes all N in turns (bit-identical results); 0: one per process (default)")
    g.add_argument("--exact_reduce", action=argparse.BooleanOptionalAction, default=True,
                   help="under torchrun, sum gradients and batch statistics in shard order (default on), "
                        "not with DDP's all-reduce")

    g = p.add_argument_group("model and data")
    g.add_argument("--model", "-a", type=_model_name, default=None,
                   help="registered model (onebit models; default: the data set's own: cnn_small_1w1a for digits and "
                        "(fashion-)mnist, resnet20_1w1a for CIFAR, resnet18_1w1a for (Tiny-)ImageNet)")
    g.add_argument("--method", type=_method_name, default=None, help="binarization method (default: the model's own)")
    g.add_argument("--dataset", type=_dataset_name, default="cifar10", help="dataset name (default cifar10)")
    g.add_argument("--data_path", default="./data", help="folder holding the dataset (default ./data)")
    g.add_argument("--use_dali", action="store_true", help="ImageNet loaders with NVIDIA DALI")
    g.add_argument("--drop_last", action=argparse.BooleanOptionalAction, default=False,
                   help="drop the last incomplete training batch of each epoch (IR-Net's loader; default off)")
    g.add_argument("--pad_value", type=float, default=MODEL_DEFAULTS["pad_value"], choices=(0.0, 1.0),
                   help="padding of binary convs: 0 as the papers, 1 for an exactly 1-bit network")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", "--epoch", type=int, default=1000, help="number of epochs (default 1000)")
    g.add_argument("--batch_size", "-b", type=int, default=256, help="global training batch (default 256)")
    g.add_argument("--batch_size_test", "-bt", type=int, default=128, help="evaluation batch (default 128)")
    g.add_argument("--optimizer", type=_choice("optimizer", OPTIMIZERS), default="sgd", help="sgd (default) or adam")
    g.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default 0.1)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument("--weight_decay", type=float, default=1e-4, help="weight decay on all parameters (default 1e-4)")
    g.add_argument("--lr_type", type=_choice("lr_type", LR_TYPES), default="cos", help="cos (default), step or linear")
    g.add_argument("--lr_decay_step", type=int, nargs="+", default=None, help="milestones of --lr_type step, e.g. 30 60 90")
    g.add_argument("--lr_gamma", type=float, default=0.1,
                   help="--lr_type step: lr factor at each milestone (default 0.1)")
    g.add_argument("--warm_up", type=_bool, nargs="?", const=True, default=False, metavar="BOOL",
                   help="5-epoch linear warm-up before the schedule (bare flag or --warm_up True)")
    # mmcls schedules (seed 002 configs)
    g.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    g.add_argument("--lr_per_iter", action="store_true",
                   help="advance the cos/linear schedule every batch, not every epoch (mmcls by_epoch=False)")
    g.add_argument("--warmup_iters", type=int, default=0,
                   help="linear warm-up over N batches from --warmup_ratio x the lr (mmcls; replaces --warm_up)")
    g.add_argument("--warmup_ratio", type=float, default=0.1, help="lr factor at the first warm-up batch (default 0.1)")
    g.add_argument("--mixup", type=float, nargs="?", const=0.1, default=0.0, metavar="ALPHA",
                   help="mixup with Beta(ALPHA, ALPHA) (bare flag: 0.1, as RBNN)")
    g.add_argument("--labelsmooth", type=float, nargs="?", const=0.1, default=0.0, metavar="EPS",
                   help="label smoothing (bare flag: 0.1)")

    g = p.add_argument_group("speed (default: the fast path; --eager: the plain one)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the training forward and backward (default: when the run trains at least "
                        f"{COMPILE_MIN_MACS:.0e} multiply-accumulates, e.g. half a CIFAR-10 epoch of resnet20, where it pays back its "
                        "compilation; the log says which path runs and why; the last, smaller batch of an epoch runs "
                        "eagerly)")
    g.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                   help="train in channels-last memory format (default on)")
    g.add_argument("--amp", "--half", dest="amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision: autocast to bfloat16, weights stay float32 (default: on where the device "
                        "computes bfloat16 natively, CUDA and CPUs with AVX-512 BF16 or AMX, unless --eager; "
                        "elsewhere float32, logged; seed 003's --half is --amp)")
    g.add_argument("--eager", action="store_true",
                   help="the plain path, as the seeds' code runs: no compile, NCHW, loss checked and metrics read "
                        "every batch (with --amp: bfloat16 all the same). Every mode resumes bit-identically on the "
                        "CPU; --eager results are the ones to compare with the seeds' code")

    g = p.add_argument_group("method options")
    g.add_argument("--Tmin", type=float, default=None,
                   help=f"temperature t at epoch 0 (default: the method's reference value, e.g. RBNN {TEMPERATURE[0]:g}, "
                        "IR-Net 0.1; onebit methods lists them; the log states the values a run uses)")
    g.add_argument("--Tmax", type=float, default=None,
                   help=f"temperature t approached at the last epoch (default: the method's, e.g. {TEMPERATURE[1]:g})")
    g.add_argument("--rotation_update", type=int, default=MODEL_DEFAULTS["rotation_update"],
                   help="RBNN: update the rotations every N epochs (default 1)")
    g.add_argument("--a32", action="store_true", help="keep activations real (W1A32)")
    g.add_argument("--w32", action="store_true", help="keep weights real (W32A1: stage 1 of two-stage training)")
    g.add_argument("--use_gpu", action="store_true", help="RBNN: run the rotation SVDs on the GPU")
    g.add_argument("--method_options", nargs="+", default=list(MODEL_DEFAULTS["method_options"]), metavar="NAME=VALUE",
                   help="other options of the method, e.g. gradient=caffe (onebit methods lists them)")

    g = p.add_argument_group("two-stage training and distillation")
    g.add_argument("--stage1", metavar="CKPT", help="initialise from a stage-1 checkpoint (strict: nothing may be skipped)")
    g.add_argument("--bn_retrain", metavar="CKPT",
                   help="Bi-Real's last step: fix CKPT's weights to their binary values and train only the "
                        "BatchNorm layers (its network, data set and final temperature; --epochs default 1)")
    g.add_argument("--frozen_weights", action="store_true",
                   help="binary layers hold fixed binarized weights (set by --bn_retrain in its checkpoints)")
    g.add_argument("--teacher", metavar="MODEL", help="teacher model: a registered name or torchvision:<arch>")
    g.add_argument("--teacher_ckpt", metavar="CKPT", help="the teacher's weights (onebit checkpoint or state_dict)")
    g.add_argument("--distill", type=_choice("distill", DISTILL_KINDS), default="distributional",
                   help="loss with a teacher: distributional (ReActNet, default), kd, ce+kd")
    g.add_argument("--distill_temperature", type=float, default=1.0, help="temperature of kd / ce+kd (default 1)")
    g.add_argument("--distill_alpha", type=float, default=0.5, help="weight of KD in ce+kd (default 0.5)")
    g.add_argument("--at_weight", type=float, default=0.0, help="weight of Real-to-Binary attention matching (default 0)")
    g.add_argument("--weight_decay_scope", type=_choice("weight_decay_scope", WD_SCOPES), default="all",
                   help="all parameters (seeds, default), conv (conv/linear weights only: ReActNet), no_bn")


def build_parser(prog: str = "onebit train") -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, description="Train a binary neural network.")
    add_train_arguments(p)
    return p


def load_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML recipe with its ``_base_`` chain resolved (later files override earlier)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path in _seen:
        raise ValueError(f"config inheritance loop: {' -> '.join(map(str, _seen + (path,)))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of flag names to values")
    bases = data.pop("_base_", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        _merge(merged, load_recipe(path.parent / base, _seen + (path,)))
    _merge(merged, data)
    return merged


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


def resolve(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """Defaults < recipe file < command-line flags, as one plain dict of flag values."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    explicit = _explicit_dests(parser, argv)
    config = vars(args)
    if args.config:
        if str(args.config).endswith(".py"):  # seed 002's mmcls configs
            from onebit.models.mmcls_config import load_mmcls_config

            recipe = load_mmcls_config(args.config)
        else:
            recipe = load_recipe(args.config)
        known = set(config) | RECIPE_KEYS
        for key, value in recipe.items():
            if key not in known:
                raise ValueError(f"unknown key {key!r} in {args.config}{suggest(key, known)}")
            if key not in explicit:
                config[key] = _coerce(parser, key, value)
        explicit |= set(recipe)
    config.setdefault("model_kwargs", dict(MODEL_DEFAULTS["model_kwargs"]))
    _seed003_aliases(config, explicit)
    if config["model"] is None:
        from onebit.models.inputs import DEFAULT_MODELS

        config["model"] = DEFAULT_MODELS[config["dataset"]]
    _method_temperature_defaults(config)
    _adopt_checkpoint_config(config, explicit)
    return config


def _seed003_aliases(config: dict[str, Any], explicit: set[str]) -> None:
    """Seed 003's command line: ``--save-dir DIR`` names the run folder; ``-e --model FILE``
    evaluates the checkpoint FILE (its own model definition comes from the file)."""
    if config.get("save_dir"):
        folder = Path(config.pop("save_dir"))
        config["results_dir"], config["save"] = str(folder.parent), folder.name
        explicit |= {"results_dir", "save"}
    config.pop("save_dir", None)
    model_is_file = config["model"] is not None and Path(config["model"]).is_file()
    if config["evaluate"] is True:
        if not model_is_file:
            raise ValueError("-e without a FILE evaluates the checkpoint given as --model FILE; "
                             f"{config['model']!r} is not a file")
        config["evaluate"] = config["model"]
    elif model_is_file:
        raise ValueError(f"--model {config['model']}: a checkpoint file is only accepted with -e (evaluate); "
                         "to train, --model takes a registered name (onebit models)")
    if model_is_file:
        config["model"] = None  # the data set's default until the checkpoint's config is adopted
        explicit.discard("model")


def _method_temperature_defaults(config: dict[str, Any]) -> None:
    """``--Tmin/--Tmax`` not set anywhere take the method's reference values (IR-Net: 0.1, 10), or the
    seeds' 1e-2 and 10 for a method without its own range."""
    from onebit.models import get_entry
    from onebit.quant import get_method

    method = get_method(config["method"] or get_entry(config["model"]).default_method)
    for key, value in zip(("Tmin", "Tmax"), method.temperature_range or TEMPERATURE):
        if config[key] is None:
            config[key] = value


def _adopt_checkpoint_config(config: dict[str, Any], explicit: set[str]) -> None:
    """``--resume`` continues the saved run (its whole config, but for flags given now);
    ``-e FILE`` rebuilds the saved network and evaluates it on its data set (its model keys and
    ``dataset``, but for flags given now)."""
    from onebit.models.checkpoint import load
    from onebit.train import checkpoint as ckpt_io

    if config["resume"]:
        path = ckpt_io.find_resume_checkpoint(config["resume"], config["results_dir"], config["save"],
                                              config["model"], config["dataset"])
        keys = None
    elif config["evaluate"]:
        path, keys = Path(config["evaluate"]), MODEL_KEYS + ("dataset",)
    elif config["bn_retrain"]:
        path, keys = Path(config["bn_retrain"]), MODEL_KEYS + ("dataset",)
    else:
        return
    saved = load(path).get("config") or {}
    for key, value in saved.items():
        if key in config and key not in explicit and key not in ("resume", "evaluate") and (keys is None or key in keys):
            config[key] = value
    if config["resume"]:
        config["resume"] = str(path)
    elif config["bn_retrain"]:
        _bn_retrain_defaults(config, explicit, saved)


def _bn_retrain_defaults(config: dict[str, Any], explicit: set[str], saved: dict[str, Any]) -> None:
    """``--bn_retrain``: one epoch, and the temperature the checkpoint's last epoch trained with."""
    from onebit.quant.schedules import log_linear_temperature

    if config["stage1"]:
        raise ValueError("--bn_retrain and --stage1 both name the starting weights: give one")
    if "epochs" not in explicit:
        config["epochs"] = 1
    if {"Tmin", "Tmax"} & explicit or not {"Tmin", "Tmax", "epochs"} <= saved.keys():
        return
    t = log_linear_temperature(saved["epochs"] - 1, saved["epochs"], saved["Tmin"], saved["Tmax"])
    config["Tmin"] = config["Tmax"] = t


def _explicit_dests(parser: argparse.ArgumentParser, argv) -> set[str]:
    """Names of the flags given on the command line (they win over the recipe).

    argparse only fills in a default where the namespace lacks the attribute, so a
    namespace pre-filled with a marker shows which flags the parse actually set.
    """
    unset = object()
    ns = argparse.Namespace(**{a.dest: unset for a in parser._actions if a.dest != "help"})
    parser.parse_known_args(argv, ns)
    return {k for k, v in vars(ns).items() if v is not unset}


def _coerce(parser: argparse.ArgumentParser, key: str, value: Any) -> Any:
    """Check a recipe value with the flag's own type/choices, so a recipe fails like a flag."""
    action = next((a for a in parser._actions if a.dest == key), None)
    if action is None or value is None or action.type is None:
        return value
    values = value if isinstance(value, list) else [value]
    try:
        out = [action.type(v) if not isinstance(v, bool) else v for v in values]
    except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
        raise ValueError(f"bad value for {key!r} in config: {e}") from None
    if action.choices is not None and any(v not in action.choices for v in out):
        raise ValueError(f"bad value for {key!r} in config: {value!r} (choose from {list(action.choices)})")
    return out if isinstance(value, list) else out[0]


def save_config(config: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config, sort_keys=True))
