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
