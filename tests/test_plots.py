"""Weight-sign flips logged by the engine, and ``onebit plot``."""
from __future__ import annotations

import json

import pytest
import torch

from onebit.analysis.plots import plot_runs, read_run
from onebit.models import create_model
from onebit.quant.schedules import log_linear_temperature
from onebit.train import run
from onebit.train.flips import SignFlips, binary_weight_signs

pytestmark = pytest.mark.usefixtures("one_thread")

PNG = b"\x89PNG\r\n\x1a\n"


def test_flip_ratio_counts_the_changed_signs():
    model = create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8, method="bnn")
    flips = SignFlips(model)
    layers = list(binary_weight_signs(model))
    first = dict(model.named_modules())[layers[0]]
    with torch.no_grad():
        first.weight.view(-1)[:37] *= -1  # BNN: the binary weight is sign(W)
        first.weight.view(-1)[:37] += torch.where(first.weight.view(-1)[:37] >= 0, 1e-3, -1e-3)  # no zeros
    ratios = flips.update(model)
    assert ratios[layers[0]] == pytest.approx(37 / first.weight.numel())
    assert all(ratios[n] == 0.0 for n in layers[1:])
    assert all(r == 0.0 for r in flips.update(model).values())  # measured since the previous call


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    fast = ["--dataset", "digits", "--model", "cnn_small_1w1a", "-b", "64", "--print_freq", "0", "--epochs", "2",
            "--results_dir", str(root)]
    run([*fast, "--method", "irnet", "--save", "irnet", "--weight_hist", "1"])
    run([*fast, "--method", "bireal", "--save", "bireal"])
    return root / "irnet", root / "bireal"


def test_engine_logs_t_and_flip_ratios(two_runs):
    irnet, bireal = two_runs
    rows = [json.loads(l) for l in (irnet / "metrics.jsonl").read_text().splitlines()]
    for e, row in enumerate(rows):
        assert row["t"] == pytest.approx(log_linear_temperature(e, 2, 0.1, 10.0))  # IR-Net's EDE range
        assert set(row["flip_ratio"]) == {"block1.0", "block2.0"}
        assert all(0.0 < r < 1.0 for r in row["flip_ratio"].values())
    assert "t" not in json.loads((bireal / "metrics.jsonl").read_text().splitlines()[0])  # no temperature
    assert f"onebit plot {irnet}" in (irnet / "log.txt").read_text()  # the run log points at the plots


def test_plot_one_run_and_overlay(two_runs, tmp_path):
    from onebit.cli import main

    irnet, bireal = two_runs
    written = plot_runs([irnet])
    assert sorted(p.name for p in written) == ["curves.png", "schedule.png", "sign_flips.png", "weight_hist.png"]
    assert all(p.parent == irnet / "plots" and p.read_bytes()[:8] == PNG for p in written)
    r = read_run(irnet)
    assert r.series("test_top1")[0] == [1, 2] and len(r.epochs) == 2
    assert main(["plot", str(irnet), str(bireal), "-o", str(tmp_path / "cmp")]) == 0
    names = sorted(p.name for p in (tmp_path / "cmp").iterdir())
    assert names == ["curves.png", "schedule.png", "sign_flips.png", "weight_hist_irnet.png"]


def test_plot_errors_are_one_line(tmp_path, capsys):
    from onebit.cli import main

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text("{not json\n")
    for target, message in ((tmp_path, "no metrics.jsonl"), (tmp_path / "bad", "line 1 is not a metrics record")):
        assert main(["plot", str(target)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
