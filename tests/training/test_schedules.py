import itertools

import numpy as np
import pytest

from keras_s2s.training.schedules import WarmupCosine, WarmupInverseSqrt


def test_inverse_sqrt_warms_up_then_decays():
    schedule = WarmupInverseSqrt(1e-3, warmup_steps=100)
    lrs = [float(schedule(step)) for step in (0, 49, 99, 399)]
    np.testing.assert_allclose(lrs, [1e-5, 5e-4, 1e-3, 5e-4], rtol=1e-5)


def test_cosine_warms_up_then_reaches_zero():
    schedule = WarmupCosine(1e-3, warmup_steps=10, total_steps=110)
    np.testing.assert_allclose(float(schedule(4)), 5e-4, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(59)), 5e-4, rtol=1e-5)
    assert float(schedule(200)) == 0.0


def test_cosine_needs_a_horizon_after_warmup():
    with pytest.raises(ValueError, match=r"`total_steps` must exceed `warmup_steps`.*total_steps=5, warmup_steps=10"):
        WarmupCosine(1e-3, warmup_steps=10, total_steps=5)


def test_config_round_trip():
    schedule = WarmupInverseSqrt(2e-3, 30)
    assert WarmupInverseSqrt(**schedule.get_config()).get_config() == schedule.get_config()


@pytest.mark.parametrize("make", [
    lambda init: WarmupInverseSqrt(1e-3, 100, warmup_init_learning_rate=init),
    lambda init: WarmupCosine(1e-3, 100, 1000, warmup_init_learning_rate=init),
])
def test_warmup_rises_linearly_from_the_initial_rate(make):
    schedule = make(1e-7)
    # Step s (counted from 0) is update s + 1 of the warm-up.
    np.testing.assert_allclose(float(schedule(0)), 1e-7 + (1e-3 - 1e-7) / 100, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(49)), 1e-7 + (1e-3 - 1e-7) * 0.5, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(99)), 1e-3, rtol=1e-6)
    # After the warm-up, the schedule does not depend on the initial rate.
    for step in (100, 399, 999):
        assert float(schedule(step)) == float(make(0.0)(step))
    # The learning rate only rises during warm-up.
    rates = [float(schedule(step)) for step in range(100)]
    assert all(a < b for a, b in itertools.pairwise(rates))


def test_fairseq_inverse_sqrt_with_warmup_init_lr():
    # fairseq's inverse_sqrt: lr = init + update * (peak - init) / warmup while
    # update < warmup, then peak * sqrt(warmup / update); 1-based updates.
    peak, warmup, init = 5e-3, 2000, 1e-7
    schedule = WarmupInverseSqrt(peak, warmup, warmup_init_learning_rate=init)
    for update in (1, 1000, 1999, 2000, 8000):
        expected = init + update * (peak - init) / warmup if update < warmup else (
            peak * (warmup / update) ** 0.5)
        np.testing.assert_allclose(float(schedule(update - 1)), expected, rtol=1e-5)


def test_zero_initial_rate_is_the_schedule_of_before():
    # Default 0: bit-for-bit the formulas the tests above pin.
    old = WarmupInverseSqrt(1e-3, warmup_steps=100)
    new = WarmupInverseSqrt(1e-3, warmup_steps=100, warmup_init_learning_rate=0.0)
    for step in (0, 49, 99, 399):
        assert float(old(step)) == float(new(step))


def test_initial_rate_above_the_peak_is_an_error():
    with pytest.raises(ValueError, match=r"`warmup_init_learning_rate` must be in \[0, peak learning rate\]; received warmup_init_learning_rate=0.01"):
        WarmupInverseSqrt(1e-3, 10, warmup_init_learning_rate=1e-2)
    from keras_s2s.config import TrainConfig

    with pytest.raises(ValueError, match=r"`warmup_init_learning_rate` must not exceed `learning_rate`"):
        TrainConfig(learning_rate=1e-3, warmup_init_learning_rate=1e-2)
    with pytest.raises(ValueError, match=r"`warmup_init_learning_rate` must be a non-negative number"):
        TrainConfig(warmup_init_learning_rate=-1.0)


def test_warmup_init_config_round_trip():
    schedule = WarmupCosine(2e-3, 30, 300, warmup_init_learning_rate=1e-7)
    assert WarmupCosine(**schedule.get_config()).get_config() == schedule.get_config()
    assert schedule.get_config()["warmup_init_learning_rate"] == 1e-7


def test_make_optimizer_passes_the_initial_rate():
    from keras_s2s.config import TrainConfig
    from keras_s2s.training.trainer import make_optimizer

    for name in ("inverse_sqrt", "cosine"):
        config = TrainConfig(schedule=name, warmup_init_learning_rate=1e-7, epochs=2)
        schedule = make_optimizer(config, steps_per_epoch=2000)._learning_rate
        assert schedule.warmup_init_learning_rate == 1e-7
