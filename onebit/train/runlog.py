"""What a run writes into its folder: ``log.txt``, ``metrics.jsonl``, TensorBoard scalars
and weight histograms. Only the main process writes; the others get a silent logger."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


class _TqdmHandler(logging.StreamHandler):
    """Console handler that prints above an active progress bar instead of through it."""

    def emit(self, record):
        tqdm.write(self.format(record), file=sys.stdout)


class RunLog:
    def __init__(self, run_dir: Path | None, tensorboard: bool = True):
        self.run_dir = run_dir
        self.logger = logging.getLogger(f"onebit.run.{id(self)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.writer = None
        self._file = None
        if run_dir is None:
            self.logger.addHandler(logging.NullHandler())
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        console = _TqdmHandler()
        console.setFormatter(logging.Formatter("%(message)s"))
        file = logging.FileHandler(run_dir / "log.txt")
        file.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        self.logger.addHandler(console)
        self.logger.addHandler(file)
        self._file = file
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def info(self, message: str) -> None:
        self.logger.info(message)

    def detail(self, message: str) -> None:
        """A line for ``log.txt`` only (the console shows the progress bar instead)."""
        if self._file is not None:
            self._file.handle(self.logger.makeRecord(self.logger.name, logging.INFO, "", 0, message, None, None))

    def metrics(self, epoch: int, values: dict) -> None:
        if self.run_dir is None:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epoch, **values}) + "\n")
        if self.writer:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, epoch)
            self.writer.flush()

    def weight_histograms(self, model: nn.Module, epoch: int) -> None:
        """Latent weights of the binary layers: TensorBoard histograms, one PNG and the counts
        (``weight_hist/epoch_NNNN.json``: per layer 80 bin ``edges`` and ``counts``, read by ``onebit plot``)."""
        if self.run_dir is None:
            return
        layers = [(n, m.weight.detach().cpu().flatten()) for n, m in model.named_modules()
                  if getattr(m, "weight_quantizer", None) is not None]
        if not layers:
            return
        for name, w in layers:
            if self.writer:
                self.writer.add_histogram(f"weights/{name}", w, epoch)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = self.run_dir / "weight_hist"
        out.mkdir(exist_ok=True)
        hists = {name: np.histogram(w.numpy(), bins=80) for name, w in layers}
        (out / f"epoch_{epoch:04d}.json").write_text(json.dumps(
            {name: {"edges": edges.tolist(), "counts": counts.tolist()} for name, (counts, edges) in hists.items()}))
        cols = min(4, len(layers))
        rows = (len(layers) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
        for ax, (name, (counts, edges)) in zip(axes.flat, hists.items()):
            ax.stairs(counts, edges, fill=True, color="tab:blue")
            ax.set_title(name, fontsize=7)
            ax.tick_params(labelsize=6)
        for ax in list(axes.flat)[len(layers):]:
            ax.axis("off")
        fig.suptitle(f"latent weights, epoch {epoch}")
        fig.tight_layout()
        fig.savefig(out / f"epoch_{epoch:04d}.png", dpi=90)
        plt.close(fig)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        for h in list(self.logger.handlers):
            h.close()
            self.logger.removeHandler(h)


def progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, disable=not enabled,
                leave=False, dynamic_ncols=True, mininterval=0.5)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
