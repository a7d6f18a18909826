"""``onebit plot``: PNG figures of training runs from their ``metrics.jsonl`` (and ``weight_hist/``).

    onebit plot RUN_DIR                 # RUN_DIR/plots/*.png
    onebit plot RUN_A RUN_B -o cmp/     # the runs overlaid, one colour per run

Figures: ``curves.png`` (train/test loss and top-1 per epoch), ``schedule.png`` (learning rate
and, when the method has one, the temperature t), ``sign_flips.png`` (per binary layer, the
share of binary weights whose sign changed during the epoch; with several runs, the mean
over layers with the min-max band) and, for runs trained with ``--weight_hist N``,
``weight_hist[_RUN].png`` (each layer's latent-weight histogram at every recorded epoch).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Run", "read_run", "plot_runs"]


@dataclass
class Run:
    name: str
    path: Path
    epochs: list[dict]
    """The rows of ``metrics.jsonl``, in epoch order (the last row of an epoch logged twice wins)."""

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """Epochs (1-based) and values of ``key`` where the run logged it."""
        rows = [r for r in self.epochs if isinstance(r.get(key), (int, float))]
        return [r["epoch"] + 1 for r in rows], [float(r[key]) for r in rows]


def read_run(path: str | Path) -> Run:
    """A run folder (or its ``metrics.jsonl``); ``ValueError`` naming the problem otherwise."""
    path = Path(path)
    folder = path.parent if path.name == "metrics.jsonl" else path
    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        raise ValueError(f"{path}: no metrics.jsonl (not a run folder of onebit train?)")
    rows = {}
    for n, line in enumerate(metrics.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[int(row["epoch"])] = row  # a resumed epoch logged again replaces the first
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ValueError(f"{metrics}: line {n} is not a metrics record") from None
    if not rows:
        raise ValueError(f"{metrics}: no epoch recorded yet")
    return Run(folder.name, folder, [rows[e] for e in sorted(rows)])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _curves(runs: list[Run], out: Path, plt) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, run in enumerate(runs):
        color = f"C{i}"
        label = f"{run.name} " if len(runs) > 1 else ""
        for ax, what in zip(axes, ("loss", "top1")):
            ax.plot(*run.series(f"train_{what}"), "--", color=color, label=f"{label}train")
            ax.plot(*run.series(f"test_{what}"), "-", color=color, label=f"{label}test")
    axes[0].set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    axes[1].set(xlabel="epoch", ylabel="top-1 (%)", title="top-1 accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
        _legend(ax)
    return _save(fig, out / "curves.png", plt)


def _schedule(runs: list[Run], out: Path, plt) -> Path:
    with_t = [r for r in runs if r.series("t")[0]]
    fig, axes = plt.subplots(1, 2 if with_t else 1, figsize=(10 if with_t else 5, 3.5), squeeze=False)
    for i, run in enumerate(runs):
        axes[0, 0].plot(*run.series("lr"), color=f"C{i}", label=run.name if len(runs) > 1 else None)
        if run in with_t:
            axes[0, 1].plot(*run.series("t"), color=f"C{i}", label=run.name if len(runs) > 1 else None)
    axes[0, 0].set(xlabel="epoch", ylabel="learning rate", title="learning rate")
    if with_t:
        axes[0, 1].set(xlabel="epoch", ylabel="t", title="temperature t (--Tmin/--Tmax)", yscale="log")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        _legend(ax)
    return _save(fig, out / "schedule.png", plt)


def _flip_table(run: Run) -> tuple[list[int], dict[str, list[float]]]:
    rows = [r for r in run.epochs if isinstance(r.get("flip_ratio"), dict) and r["flip_ratio"]]
    layers = list(rows[0]["flip_ratio"]) if rows else []
    return [r["epoch"] + 1 for r in rows], {n: [float(r["flip_ratio"].get(n, float("nan"))) for r in rows]
                                             for n in layers}


def _sign_flips(runs: list[Run], out: Path, plt) -> Path | None:
    tables = [(run, *_flip_table(run)) for run in runs]
    tables = [t for t in tables if t[2]]
    if not tables:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(runs) == 1:
        run, epochs, layers = tables[0]
        cmap = plt.get_cmap("viridis")
        for j, (name, ratios) in enumerate(layers.items()):
            ax.plot(epochs, [100 * r for r in ratios], color=cmap(j / max(len(layers) - 1, 1)), label=name, lw=1)
        if len(layers) <= 12:
            ax.legend(fontsize=6, ncol=2)
        else:
            ax.set_title(f"{len(layers)} binary layers, colour from first (purple) to last (yellow)", fontsize=8)
    else:
        import numpy as np

        for i, (run, epochs, layers) in enumerate(tables):
            table = 100 * np.array(list(layers.values()))
            ax.plot(epochs, np.nanmean(table, 0), color=f"C{i}", label=f"{run.name} (mean of layers)")
            ax.fill_between(epochs, np.nanmin(table, 0), np.nanmax(table, 0), color=f"C{i}", alpha=0.15)
        ax.legend(fontsize=7)
    ax.set(xlabel="epoch", ylabel="weights whose sign flipped (%)")
    ax.set_yscale("symlog", linthresh=0.01)  # 0 (frozen weights) stays on the plot
    fig.suptitle("weight-sign flips per binary layer and epoch")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, out / "sign_flips.png", plt)


def _weight_hist(run: Run, out: Path, plt, suffix: str) -> Path | None:
    files = sorted((run.path / "weight_hist").glob("epoch_*.json"))
    if not files:
        return None
    records = [(int(f.stem.split("_")[1]), json.loads(f.read_text())) for f in files]
    layers = list(records[-1][1])
    cols = min(4, len(layers))
    rows = (len(layers) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    cmap = plt.get_cmap("plasma")
    for ax, name in zip(axes.flat, layers):
        for k, (epoch, hist) in enumerate(records):
            if name in hist:
                ax.stairs(hist[name]["counts"], hist[name]["edges"], color=cmap(k / max(len(records) - 1, 1)),
                          label=f"epoch {epoch + 1}" if len(records) <= 6 else None)
        ax.set_title(name, fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    if len(records) <= 6:
        axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"{run.name}: latent weights at epochs {records[0][0] + 1}..{records[-1][0] + 1} "
                 "(early: purple, late: yellow)", fontsize=9)
    return _save(fig, out / f"weight_hist{suffix}.png", plt)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_runs(paths: list[str | Path], out_dir: str | Path | None = None) -> list[Path]:
    """Write the figures of one run (default folder ``RUN/plots``) or of several overlaid
    (default ``./plots``); returns the files written."""
    runs = [read_run(p) for p in paths]
    names = [r.name for r in runs]
    for run in runs:  # same folder name in different places: keep them apart
        if names.count(run.name) > 1:
            run.name = f"{run.name} ({run.path.parent.name or run.path})"
    out = Path(out_dir) if out_dir else (runs[0].path / "plots" if len(runs) == 1 else Path("plots"))
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    written = [_curves(runs, out, plt), _schedule(runs, out, plt), _sign_flips(runs, out, plt)]
    for run in runs:
        written.append(_weight_hist(run, out, plt, "" if len(runs) == 1 else f"_{run.path.name}"))
    return [p for p in written if p is not None]


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders of onebit train (several: overlaid)")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="folder of the PNGs (default: RUN_DIR/plots for one run, ./plots for several)")


def main(args) -> int:
    try:
        written = plot_runs(args.runs, args.output)
    except ValueError as e:
        print(f"onebit plot: error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
