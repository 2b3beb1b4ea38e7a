"""The argument checks: what each accepts, and a message naming the argument and echoing the value."""

import math

import numpy as np
import pytest

from keras_s2s import checks


@pytest.mark.parametrize(
    "check, args, good",
    [
        (checks.check_positive_int, (), [1, 7, 10**12, np.int32(3)]),
        (checks.check_non_negative_int, (), [0, 1, 9, np.int64(0)]),
        (checks.check_real, (), [0, -2.5, math.inf, np.float32(0.5)]),
        (checks.check_positive_number, (), [1, 0.5, 1e-9]),
        (checks.check_non_negative_number, (), [0, 0.0, 2.5]),
        (checks.check_number_in, ("[0, 1)",), [0, 0.0, 0.999]),
        (checks.check_number_in, ("(0, 1]",), [1, 1.0, 1e-6]),
        (checks.check_number_in, ("[0, 1]",), [0, 1]),
        (checks.check_bool, (), [True, False]),
        (checks.check_choice, (("pre", "post"),), ["pre", "post"]),
    ],
)
def test_valid_values_pass(check, args, good):
    for value in good:
        check("x", value, *args)


@pytest.mark.parametrize(
    "check, args, value, message",
    [
        (checks.check_positive_int, (), 0, r"`x` must be a positive integer; received x=0"),
        (checks.check_positive_int, (), True, r"`x` must be a positive integer; received x=True"),
        (checks.check_positive_int, (), 2.0, r"`x` must be a positive integer; received x=2.0"),
        (checks.check_positive_int, (" (how many)",), -1,
         r"`x` must be a positive integer \(how many\); received x=-1"),
        (checks.check_positive_int, (), np.float64(2.0), r"`x` must be a positive integer; received x=np.float64\(2.0\)"),
        (checks.check_real, (), "1", r"`x` must be a real number; received x='1'"),
        (checks.check_real, (), False, r"`x` must be a real number; received x=False"),
        (checks.check_non_negative_int, (), -1, r"`x` must be a non-negative integer; received x=-1"),
        (checks.check_non_negative_int, (), "3", r"`x` must be a non-negative integer; received x='3'"),
        (checks.check_positive_number, (), 0.0, r"`x` must be a positive number; received x=0.0"),
        (checks.check_positive_number, (), math.nan, r"`x` must be a positive number; received x=nan"),
        (checks.check_non_negative_number, (), -0.1, r"`x` must be a non-negative number; received x=-0.1"),
        (checks.check_non_negative_number, (), False, r"`x` must be a non-negative number; received x=False"),
        (checks.check_number_in, ("[0, 1)",), 1.0, r"`x` must be a number in \[0, 1\); received x=1.0"),
        (checks.check_number_in, ("[0, 1)",), -0.5, r"`x` must be a number in \[0, 1\); received x=-0.5"),
        (checks.check_number_in, ("(0, 1]",), 0, r"`x` must be a number in \(0, 1\]; received x=0"),
        (checks.check_number_in, ("(0, 1]",), math.nan, r"`x` must be a number in \(0, 1\]; received x=nan"),
        (checks.check_number_in, ("(0, 1]",), "1", r"`x` must be a number in \(0, 1\]; received x='1'"),
        (checks.check_bool, (), 1, r"`x` must be True or False; received x=1"),
        (checks.check_bool, (), "yes", r"`x` must be True or False; received x='yes'"),
        (checks.check_choice, (("pre", "post"),), "mid",
         r"`x` must be one of \['pre', 'post'\]; received x='mid'"),
    ],
)
def test_invalid_values_raise_a_message_naming_the_argument(check, args, value, message):
    with pytest.raises(ValueError, match=rf"^{message}$"):
        check("x", value, *args)
