"""The training engine behind ``onebit train``.

One epoch, in order (RBNN's main.py, made exact and resumable):

1. seed every generator from ``(seed, epoch)``; set the learning rate (closed form);
2. ``set_temperature(t(epoch))`` on every scheduled quantizer (``--Tmin/--Tmax``);
3. ``on_epoch_start(epoch, epochs)`` on every module that has it (e.g. rotation updates);
4. train over the epoch's batches (``after_step()`` on modules that have it, after each
   optimizer step: weight clipping and the like);
5. evaluate top-1/top-5, keep the best model, write ``checkpoint.pth`` atomically.

SIGTERM/SIGINT finish the current batch, write a mid-epoch checkpoint and stop; ``--resume``
continues from it (skipping the batches already done) with the same result as a run that
was never interrupted.
"""
from __future__ import annotations

import math
import random
import signal
from contextlib import contextmanager
from dataclasses import replace
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onebit.data import build_data
from onebit.data.sharding import ShardBatches
from onebit.models.checkpoint import load, load_model_state
from onebit.models.config import MODEL_KEYS, build_model
from onebit.quant.schedules import after_step_hooks, start_epoch
from onebit.train import checkpoint as ckpt_io
from onebit.models.frozen import frozen_for_bn_retrain
from onebit.train.config import save_config
from onebit.train.importer import check_preprocessing
from onebit.train.distill import DistillationLoss, FeatureHooks, Teacher, block_names
from onebit.train.distributed import Distributed, Parallel
from onebit.train.flips import SignFlips
from onebit.train.losses import ClassificationLoss
from onebit.train.optim import build_optimizer, per_batch, set_lr
from onebit.train.precision import MixedPrecision
from onebit.train.runlog import RunLog, count_params, describe_device, progress
from onebit.train.speed import SpeedOptions
from onebit.train.stages import load_stage1

def select_device(gpus: str | None, local_rank: int, warn) -> torch.device:
    """``--gpus 0,1`` picks CUDA devices (the local rank's one under torchrun); without CUDA, the CPU."""
    if not torch.cuda.is_available():
        if gpus:
            warn(f"--gpus {gpus} given but CUDA is not available: running on the CPU")
        return torch.device("cpu")
    ids = [int(i) for i in gpus.split(",")] if gpus else list(range(torch.cuda.device_count()))
    return torch.device("cuda", ids[local_rank % len(ids)])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % 2**63


def accuracy_counts(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """Number of samples whose label is the top-1 / among the top-5 predictions."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top.eq(labels[:, None])
    return int(hit[:, 0].sum()), int(hit.any(dim=1).sum())


class Trainer:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.dist = Distributed.from_env(use_cuda=torch.cuda.is_available() and config["gpus"] != "cpu")
        self.warnings: list[str] = []
        self.device = select_device(config["gpus"], self.dist.local_rank, self.warnings.append)
        seed_everything(config["seed"])
        self.data = build_data(
            config["dataset"], config["data_path"],
            batch_size=config["batch_size"], batch_size_test=config["batch_size_test"],
            workers=config["workers"], device=self.device, seed=config["seed"],
            rank=self.dist.rank, world_size=self.dist.world_size, use_dali=config["use_dali"],
            drop_last=config["drop_last"],
        )
        if not self.dist.enabled and config["shards"] > 1 and not config["evaluate"]:  # the shards of S processes
            self.data = replace(self.data, train=ShardBatches([self._shard_data(i, config["shards"]).train
                                                               for i in range(config["shards"])]))
        self.speed = SpeedOptions(config, self.device)
        self.model = self.speed.prepare(build_model(config, *self.data.info.shape).to(self.device))
        self.stage1 = load_stage1(self.model, config["stage1"]) if config["stage1"] and not config["resume"] else None
        self.frozen_layers = self._start_bn_retrain() if config["bn_retrain"] and not config["resume"] else None
        self.loss = ClassificationLoss(config["labelsmooth"], config["mixup"])
        self.precision = MixedPrecision(config.get("amp"), self.device, eager=config.get("eager", False))
        self.student_features: FeatureHooks | None = None
        self.teacher, self.distill = self._build_teacher() if config["teacher"] else (None, None)
        self.stop_signal: int | None = None
        self.parallel: Parallel | None = None
        self._model_summary = None

    def _start_bn_retrain(self) -> list[str]:
        """``--bn_retrain CKPT``: its weights, binarized and frozen (onebit.models.frozen)."""
        load_model_state(self.model, load(self.config["bn_retrain"]), self.config["model"])
        self.config["frozen_weights"] = True  # the run's checkpoints rebuild the frozen network
        return frozen_for_bn_retrain(self.model)

    def _build_teacher(self) -> tuple[Teacher, DistillationLoss]:
        """A frozen teacher from ``--teacher_ckpt`` (rebuilt from its own saved config when it
        is an onebit checkpoint) and the distillation criterion."""
        c, info = self.config, self.data.info
        if not c["teacher_ckpt"]:
            raise ValueError("--teacher needs --teacher_ckpt: the teacher's trained weights")
        if c["mixup"]:
            raise ValueError("--mixup with a teacher is not supported")
        state = load(c["teacher_ckpt"])
        saved = state.get("config")
        at_layers = block_names if c["at_weight"] > 0 else (lambda m: ())
        if saved:
            model = build_model({**c, **{k: saved[k] for k in MODEL_KEYS if k in saved}}, *info.shape)
            load_model_state(model, state, c["teacher"])
            teacher = Teacher(model, at_layers(model))
        else:
            teacher = Teacher.from_checkpoint(c["teacher"], state, info.num_classes, in_channels=info.in_channels,
                                              image_size=info.image_size)
            if c["at_weight"] > 0:
                teacher = Teacher(teacher.model, at_layers(teacher.model))
        loss = DistillationLoss(c["distill"], c["distill_temperature"], c["distill_alpha"], c["at_weight"])
        self.student_features = FeatureHooks(self.model, block_names(self.model)) if c["at_weight"] > 0 else None
        return teacher.to(self.device), loss

    def _shard_data(self, rank: int, world_size: int):
        c = self.config
        return build_data(c["dataset"], c["data_path"], batch_size=c["batch_size"], batch_size_test=c["batch_size_test"],
                          workers=c["workers"], device=self.device, seed=c["seed"], rank=rank, world_size=world_size,
                          use_dali=c["use_dali"], drop_last=c["drop_last"])

    def _autocast_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        """``_loss`` under ``--amp``'s autocast (a no-op context without it)."""
        with self.precision.autocast():
            return self._loss(model, images, labels)

    def _loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        """Logits and loss of one batch: classification, or distillation when a teacher is set."""
        images = self.speed.images(images)
        if self.teacher is None:
            images, labels_a, labels_b, lam = self.loss.mix(images, labels)
            logits = model(images)
            loss = self.loss(logits, labels_a, labels_b, lam)
        else:
            logits = model(images)
            teacher_logits = self.teacher(images)
            feats = (self.student_features.outputs(), self.teacher.features()) if self.student_features else (None, None)
            loss = self.distill(logits, labels, teacher_logits, *feats)
        if self.speed.eager and not torch.isfinite(loss):  # otherwise checked where the metrics are read
            raise FloatingPointError(f"loss is {float(loss)}: lower --lr?")
        return logits, loss

    # ------------------------------------------------------------------ helpers
    @property
    def net(self) -> nn.Module:
        """The bare model (DDP unwrapped)."""
        return getattr(self.model, "module", self.model)

    def _wrap_distributed(self) -> None:
        c = self.config
        if c["shards"] > 1 and not self.dist.enabled and self.student_features is not None:
            raise ValueError("--shards in one process does not support --at_weight (feature hooks of one model)")
        self.parallel = Parallel(self.model, self.dist, shards=c["shards"], exact=c["exact_reduce"],
                                 sync_bn=c["sync_bn"], device=self.device)
        self.model = self.parallel.model  # evaluation runs it eagerly; training steps the compiled forward
        reason = ("shards summed in order (--shards, torchrun --exact_reduce)" if self.parallel.exact
                  else "--at_weight's feature hooks" if self.student_features is not None else "")
        training_macs = None
        if self.speed.compile is None:  # without --compile/--no-compile: from the run's length
            totals = self._summary().totals
            training_macs = (totals["bops"] + totals["flops"]) * self.data.info.train_size * c["epochs"]
        self.parallel.model = self.speed.training_forward(self.model, c["batch_size"] // self.dist.world_size, reason,
                                                          training_macs)

    def _run_dir(self) -> Path:
        c = self.config
        if c["resume"]:  # resolved to the checkpoint file by the config
            return Path(c["resume"]).parent
        name = c["save"] or f"{c['model']}_{c['dataset']}_{datetime.now():%Y%m%d-%H%M%S}"
        return Path(c["results_dir"]) / name

    def _scheduled(self) -> bool:
        """The model has temperature-scheduled quantizers."""
        return any(callable(getattr(m, "set_temperature", None)) for m in self.net.modules())

    def _start_epoch(self, epoch: int, resumed: bool) -> float:
        """Learning rate, temperature and (unless ``resumed`` mid-epoch) the epoch-start hooks of ``epoch``."""
        lr = set_lr(self.optimizer, epoch, self.config)
        self.temperature = start_epoch(self.net, epoch, self.config["epochs"], self.config["Tmin"], self.config["Tmax"],
                                       resumed=resumed)
        return lr

    def _on_signal(self, signum, frame):
        self.stop_signal = signum
        signal.signal(signum, signal.SIG_DFL)  # a second signal stops at once

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        loss_sum = top1 = top5 = n = 0.0
        for images, labels in self.data.test:
            logits = self.model(images)  # float32 even with --amp: the accuracy the exported network has
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            c1, c5 = accuracy_counts(logits, labels)
            top1, top5, n = top1 + c1, top5 + c5, n + labels.numel()
        loss_sum, top1, top5, n = self.dist.sum([loss_sum, top1, top5, n])
        return {"test_loss": loss_sum / n, "test_top1": 100.0 * top1 / n, "test_top5": 100.0 * top5 / n}

    def evaluate_checkpoint(self, path: str) -> dict[str, float]:
        """``-e FILE``: the config already holds the checkpoint's model keys (see config.resolve)."""
        checkpoint = load(path)
        check_preprocessing(checkpoint, self.data.info.mean, self.data.info.std)
        load_model_state(self.net, checkpoint, self.config["model"])
        result = self.evaluate()
        if self.dist.is_main:
            print(f"{path}: {self.config['model']} on {self.config['dataset']} test: "
                  f"top-1 {result['test_top1']:.2f}%  top-5 {result['test_top5']:.2f}%  loss {result['test_loss']:.4f}")
        self.dist.close()
        return result

    # ------------------------------------------------------------------ training
    def _train_epoch(self, epoch: int, start_step: int, sums: list[float], log: RunLog) -> list[float]:
        """Train one epoch from batch ``start_step``; ``sums`` = [loss*n, correct, n] so far.

        The loss and correct sums stay on the device (float64) and are read every batch with
        ``--eager``, else every ``--print_freq`` batches and at the end (no host sync per step)."""
        c = self.config
        self.model.train()
        after_step = after_step_hooks(self.net)
        loader = self.data.train
        loader.set_epoch(epoch, start_step)
        total = self.data.info.train_size
        bar = progress(total, f"epoch {epoch + 1}/{c['epochs']}", self.dist.is_main)
        bar.update(min(start_step * c["batch_size"], total))
        running = torch.tensor(sums[:2], dtype=torch.float64, device=self.device)
        count, step = sums[2], start_step
        for step, batch in enumerate(loader, start_step):
            if per_batch(c):
                set_lr(self.optimizer, epoch, c, step, len(loader))
            self.optimizer.zero_grad(set_to_none=True)
            try:
                shards = self.parallel.step(self._autocast_loss, batch)
            except FloatingPointError as e:
                raise FloatingPointError(f"at epoch {epoch}, batch {step}: {e}") from None
            self.optimizer.step()
            for hook in after_step:
                hook()
            for logits, loss, labels in shards:
                n = labels.numel()
                running[0] += loss.detach().double() * n
                running[1] += (logits.argmax(1) == labels).sum()
                count += n
                bar.update(n * self.dist.world_size)
            printing = c["print_freq"] and (step + 1) % c["print_freq"] == 0
            if printing or self.speed.eager:
                sums = self._read_sums(running, count, epoch, step)
                bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", top1=f"{100 * sums[1] / sums[2]:.1f}")
            if printing:
                log.detail(f"epoch {epoch + 1} batch {step + 1}/{len(loader)} loss {sums[0] / sums[2]:.4f} "
                           f"top-1 {100 * sums[1] / sums[2]:.2f}")
            if self._should_stop():
                self._stop_step = step + 1
                break
        bar.close()
        return self._read_sums(running, count, epoch, step)

    @staticmethod
    def _read_sums(running: torch.Tensor, count: int, epoch: int, step: int) -> list[float]:
        """``[loss*n, correct, n]`` on the host; a non-finite loss sum is an error."""
        loss_sum, correct = running.tolist()
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"by epoch {epoch + 1}, batch {step + 1}: the training loss is {loss_sum}: lower --lr?")
        return [loss_sum, correct, float(count)]

    def _should_stop(self) -> bool:
        """A signal was received (by any process: all stop after the same batch)."""
        stop = float(self.stop_signal is not None)
        return self.dist.sum([stop])[0] > 0 if self.dist.enabled else bool(stop)

    def _checkpoint(self, epoch: int, step: int, sums: list[float], best: float) -> dict[str, Any]:
        return {
            "format_version": ckpt_io.FORMAT_VERSION,
            "model_name": self.config["model"],
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "train_sums": sums,
            "best_top1": best,
            "rng": ckpt_io.rng_state(),
            "config": self.config,
        }

    @contextmanager
    def _stop_on_signals(self):
        """SIGTERM/SIGINT (cluster preemption, Ctrl-C) end the run after the current batch, with a checkpoint."""
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)

    def fit(self) -> dict[str, Any]:
        with self._stop_on_signals():
            try:
                return self._fit()
            finally:
                if self.parallel is not None:
                    self.parallel.close()

    def _fit(self) -> dict[str, Any]:
        c = self.config
        main = self.dist.is_main
        run_dir = self._run_dir()
        log = RunLog(run_dir if main else None)
        for w in self.warnings:
            log.info(f"warning: {w}")
        self.optimizer = build_optimizer(self.model, c)
        start_epoch, start_step, sums, best = 0, 0, [0.0, 0.0, 0.0], 0.0
        resume_rng = None
        if c["resume"]:
            state = load(c["resume"])
            load_model_state(self.model, state, c["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            start_epoch, start_step, best = state["epoch"], state["step"], state["best_top1"]
            sums = list(state["train_sums"]) if start_step else sums
            resume_rng = state["rng"] if start_step else None
            log.info(f"resumed from {state['path']} at epoch {start_epoch}" + (f", batch {start_step}" if start_step else ""))
        self._wrap_distributed()
        if main:
            save_config(c, run_dir / "config.yaml")
        info = self.data.info
        log.info(f"onebit train: {c['model']} ({count_params(self.net) / 1e6:.3f}M params) on {info.name} "
                 f"({info.train_size} train / {info.test_size} test, {info.num_classes} classes), "
                 f"{describe_device(self.device)}, {self.dist.world_size} process(es)")
        log.info(f"run folder: {run_dir}")
        for note in self.speed.notes:
            log.info(note)
        log.info(self.speed.describe())
        if self.precision.describe():
            log.info(self.precision.describe())
        if self.stage1:
            log.info(f"initialised from stage 1 {c['stage1']}: {len(self.stage1.loaded)} tensors loaded"
                     + (f", new quantizer state: {len(self.stage1.new)}" if self.stage1.new else ""))
        if self.frozen_layers is not None:
            trainable = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
            t = f", t = {c['Tmax']:.4g}" if self._scheduled() else ""
            log.info(f"BN retraining from {c['bn_retrain']}: {len(self.frozen_layers)} binary layers fixed to their "
                     f"binarized weights, {trainable} BatchNorm parameters train{t}")
        if any(callable(getattr(m, "set_temperature", None)) for m in self.net.modules()):
            log.info(f"temperature t: {c['Tmin']:g} at epoch 1, log-linear towards {c['Tmax']:g} (--Tmin/--Tmax)")
        if self.teacher is not None:
            log.info(f"distillation from teacher {c['teacher']} ({c['teacher_ckpt']}): {self.distill.extra_repr()}")
        self._log_model_summary(log)

        t_start, result = time.time(), self._bn_retrain_baseline(log)
        flips = SignFlips(self.net)
        scheduled = self._scheduled()
        for epoch in range(start_epoch, c["epochs"]):
            t0 = time.time()
            if resume_rng is not None:  # mid-epoch resume: the epoch's hooks already ran
                lr = self._start_epoch(epoch, resumed=True)
                ckpt_io.set_rng_state(resume_rng)
                resume_rng = None
            else:
                seed_everything(epoch_seed(c["seed"], epoch))
                lr = self._start_epoch(epoch, resumed=False)
                self.dist.broadcast_buffers(self.net)  # epoch-start updates run once, on rank 0
                start_step, sums = 0, [0.0, 0.0, 0.0]
            self._stop_step = 0
            sums = self._train_epoch(epoch, start_step, sums, log)
            if self._stop_step:
                if main:
                    ckpt_io.save_atomic(self._checkpoint(epoch, self._stop_step, sums, best), run_dir / ckpt_io.CHECKPOINT)
                log.info(f"stopped by a signal at epoch {epoch + 1}, batch "
                         f"{self._stop_step}; checkpoint written, continue with --resume {run_dir}")
                result = {"interrupted": True}
                break
            tr_loss, tr_correct, tr_n = self.dist.sum(sums)
            metrics = {"lr": lr, "train_loss": tr_loss / tr_n, "train_top1": 100 * tr_correct / tr_n, **self.evaluate()}
            metrics["epoch_seconds"] = time.time() - t0
            if scheduled:
                metrics["t"] = self.temperature
            metrics["flip_ratio"] = flips.update(self.net)
            is_best = metrics["test_top1"] > best
            best = max(best, metrics["test_top1"])
            if main:
                state = self._checkpoint(epoch + 1, 0, [0.0, 0.0, 0.0], best)
                ckpt_io.save_atomic(state, run_dir / ckpt_io.CHECKPOINT)
                if is_best:
                    ckpt_io.save_atomic({k: state[k] for k in ("format_version", "model_name", "model", "config",
                                                                "best_top1", "epoch")}, run_dir / ckpt_io.BEST)
                if c.get("save_every") and (epoch + 1) % c["save_every"] == 0:
                    ckpt_io.save_atomic(state, run_dir / f"checkpoint_epoch{epoch + 1}.pth")
                log.metrics(epoch, metrics)
                if c["weight_hist"] and (epoch + 1) % c["weight_hist"] == 0:
                    log.weight_histograms(self.net, epoch)
            log.info(f"epoch {epoch + 1}/{c['epochs']}  lr {lr:.5f}  train loss {metrics['train_loss']:.4f} "
                     f"top-1 {metrics['train_top1']:.2f}  |  test loss {metrics['test_loss']:.4f} "
                     f"top-1 {metrics['test_top1']:.2f} top-5 {metrics['test_top5']:.2f}  (best {best:.2f})  "
                     f"{metrics['epoch_seconds']:.1f}s")
            if c["time_estimate"] and (epoch + 1) % c["time_estimate"] == 0 and epoch + 1 < c["epochs"]:
                per_epoch = (time.time() - t_start) / (epoch + 1 - start_epoch)
                left = per_epoch * (c["epochs"] - epoch - 1)
                log.info(f"  {per_epoch:.1f}s/epoch, projected finish {datetime.now() + timedelta(seconds=left):%Y-%m-%d %H:%M} "
                         f"(in {timedelta(seconds=round(left))})")
            result.update(final_top1=metrics["test_top1"], final_top5=metrics["test_top5"])
        seconds = time.time() - t_start
        result.update({"best_top1": best, "seconds": seconds, "run_dir": str(run_dir)})
        if "interrupted" not in result:
            log.info(f"done: best test top-1 {best:.2f}% in {seconds:.0f}s; run folder: {run_dir}")
            log.info(f"plots (curves, lr and t, sign flips, weight histograms): onebit plot {run_dir}")
        log.close()
        self.parallel.close()
        self.model = self.net  # the DDP wrapper, if any, goes before its process group
        self.dist.close()
        return result

    def _bn_retrain_baseline(self, log: RunLog) -> dict[str, float]:
        """``--bn_retrain``: the frozen network's test top-1 before training (the checkpoint's own)."""
        if self.frozen_layers is None:
            return {}
        before = self.evaluate()
        log.info(f"before BN retraining: test top-1 {before['test_top1']:.2f} top-5 {before['test_top5']:.2f}")
        return {"top1_before": before["test_top1"]}

    def _summary(self):
        """The model's parameter and MAC counts (logged; the MACs decide whether compiling pays), once."""
        from onebit.analysis import summary

        if self._model_summary is None:
            info = self.data.info
            self._model_summary = summary(self.net, (1, info.in_channels, info.image_size, info.image_size))
        return self._model_summary

    def _log_model_summary(self, log: RunLog) -> None:
        log.info(self._summary().totals_text())

