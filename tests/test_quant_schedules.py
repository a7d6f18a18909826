"""Per-epoch schedules against their closed forms and the reference codes' values."""
import math

import pytest

from onebit.quant.schedules import fda_noise_weight, fda_num_terms, log_linear_temperature, recu_tau, surrogate_scale


@pytest.mark.parametrize(
    "epoch, t, k",
    [(0, 0.0100, 100.0), (333, 0.0998, 10.02), (500, 0.316, 3.16), (667, 1.002, 1.0), (999, 9.93, 1.0)],
)
def test_rbnn_table_for_1000_epochs(epoch, t, k):
    got = log_linear_temperature(epoch, 1000, 1e-2, 1e1)
    assert got == pytest.approx(t, rel=2e-3)
    assert surrogate_scale(got) == pytest.approx(k, rel=2e-3)


def test_temperature_crosses_one_at_two_thirds_and_imagenet_last_epoch():
    assert log_linear_temperature(100, 150, 1e-2, 1e1) == pytest.approx(1.0)
    assert log_linear_temperature(149, 150, 1e-2, 1e1) == pytest.approx(9.55, rel=1e-3)
    # IR-Net ResNet-20 1w1a script: Tmin 1e-3, E = 400 -> t = 1 at epoch 300
    assert log_linear_temperature(300, 400, 1e-3, 1e1) == pytest.approx(1.0)
    # k t = 1 while t < 1 (near-identity surrogate), k = 1 afterwards
    for e in range(0, 1000, 37):
        t = log_linear_temperature(e, 1000, 1e-2, 1e1)
        assert surrogate_scale(t) * t == pytest.approx(max(t, 1.0))


def test_schedule_errors_name_the_problem():
    with pytest.raises(ValueError, match="epochs"):
        log_linear_temperature(0, 0, 1e-2, 10)
    with pytest.raises(ValueError, match="Tmin"):
        log_linear_temperature(0, 10, 0.0, 10)


def test_recu_tau_from_min_to_max():
    assert recu_tau(0, 200) == pytest.approx(0.85)
    a = (0.99 - 0.85) / (math.e - 1)
    assert recu_tau(100, 200) == pytest.approx(a * math.exp(0.5) + 0.85 - a)
    assert recu_tau(200, 200) == pytest.approx(0.99)


def test_fda_schedules():
    assert [fda_num_terms(e, 100) for e in (0, 11, 12, 50, 99)] == [9, 9, 10, 13, 17]
    assert fda_noise_weight(0, 100) == pytest.approx(0.05 * (1 + math.cos(math.pi / 100)))
    assert fda_noise_weight(99, 100) == pytest.approx(0.0, abs=1e-12)


def test_set_epoch_temperature_is_seed_002s_ede_hook_for_any_model():
    import torch

    from onebit.layers import BinaryConv2d
    from onebit.quant import EdeSign, MagnitudeAwareSign
    from onebit.quant.schedules import set_epoch_temperature

    # EDE activations inside a Bi-Real-weight layer: the schedule reaches them anyway
    model = torch.nn.Sequential(BinaryConv2d(2, 2, 3, input_quantizer=EdeSign(), weight_quantizer=MagnitudeAwareSign()))
    ede = model[0].input_quantizer
    t = set_epoch_temperature(model, 25, 100)  # EDEHook(total_epoch=100): t = 0.1 * 10^(2e/E), k = max(1/t, 1)
    assert t == pytest.approx(10 ** -0.5) and float(ede.t) == pytest.approx(t) and float(ede.k) == pytest.approx(1 / t)
    t = set_epoch_temperature(model, 99, 100)
    assert t == pytest.approx(10 ** (2 * 99 / 100 - 1)) and float(ede.k) == 1.0
