"""Decoding strategies as objects: checks, dicts, hashing, and the CLI flags that make them.

The searches themselves are tested in tests/test_decoding.py (greedy, beam)
and tests/test_sampling.py (sampling).
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from keras_s2s import decoding
from keras_s2s.decoding import Beam, Greedy, Sampling, strategy_from_dict, strategy_from_flags
from tests.helpers import REPO_ROOT
from training import STRATEGY_FLAGS, evaluate, export, strategy_options, translate

ALL = [Greedy(), Beam(), Beam(size=1, length_penalty=0), Sampling(),
       Sampling(temperature=0.7, top_k=40, top_p=0.95, seed=2**40 + 3)]


# --------------------------------------------------------------------------
# The objects.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ALL, ids=str)
def test_dict_round_trip_through_json(strategy):
    values = json.loads(json.dumps(strategy.to_dict()))
    assert values["name"] == strategy.name
    assert strategy_from_dict(values) == strategy


def test_strategies_are_frozen_hashable_values():
    assert Beam(4, 1) == Beam(size=4, length_penalty=1.0)
    assert hash(Beam(4, 1)) == hash(Beam(4, 1.0))  # one traced search for both
    assert len({Beam(), Beam(), Greedy(), Sampling(seed=1), Sampling(seed=2)}) == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        Beam().size = 5
    assert Beam(size=3).rows_per_sentence == 3 and Sampling().rows_per_sentence == 1


def test_dicts_fill_defaults_and_reject_unknown_names_and_fields():
    assert strategy_from_dict({"name": "beam", "size": 5}) == Beam(5, 0.6)
    assert strategy_from_dict({"name": "sampling", "top_p": 0.9}) == Sampling(top_p=0.9)
    with pytest.raises(ValueError, match=r"needs a `name`, one of greedy, beam, sampling; "
                                         r"received \{'name': 'topk'\}"):
        strategy_from_dict({"name": "topk"})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['beam_size'\] of strategy 'beam'"):
        strategy_from_dict({"name": "beam", "beam_size": 5})


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Beam(size=0), r"`size` must be a positive integer; received size=0"),
        (lambda: Beam(size=2.0), r"received size=2.0"),
        (lambda: Beam(length_penalty=-0.2), r"`length_penalty` must be a finite number >= 0 "
                                            r".*received length_penalty=-0.2"),
        (lambda: Beam(length_penalty="0.6"), r"received length_penalty='0.6'"),
    ],
)
def test_beam_rejects_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_runs_strategy_comes_from_its_train_config():
    assert Beam.from_train_settings({"beam_size": 5, "length_penalty": 1.0}) == Beam(5, 1.0)
    assert Beam.from_train_settings({"beam_size": 1}) == Beam(1, 0.6)  # greedy ids
    assert Beam.from_train_settings({}) == Beam(4, 0.6)  # a run from before either setting


# --------------------------------------------------------------------------
# The CLI flags of evaluate, translate and export.
# --------------------------------------------------------------------------

CLIS = {
    "evaluate": (evaluate, ["--run-dir", "r"]),
    "translate": (translate, ["--run-dir", "r", "a sentence"]),
    "export": (export, ["--run-dir", "r", "--name", "n"]),
}
RUN = Beam(size=5, length_penalty=1.0)  # what a run's train config holds


def test_the_cli_flag_table_is_the_strategies_own():
    # training/ spells it out so that parsing flags does not import TensorFlow.
    assert STRATEGY_FLAGS == {name: tuple(cls.FLAGS) for name, cls in decoding.STRATEGIES.items()}


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], RUN),
        (["--beam-size", "1"], Beam(1, 1.0)),
        (["--length-penalty", "0"], Beam(5, 0.0)),
        (["--strategy", "greedy"], Greedy()),
        (["--strategy", "beam", "--beam-size", "3"], Beam(3, 1.0)),
        (["--strategy", "sampling"], Sampling()),
        (["--strategy", "sampling", "--temperature", "0.8", "--top-k", "10", "--top-p", "0.9",
          "--seed", "7"], Sampling(temperature=0.8, top_k=10, top_p=0.9, seed=7)),
    ],
)
@pytest.mark.parametrize("cli", CLIS)
def test_flags_give_the_strategy_defaulting_to_the_runs(cli, flags, expected):
    module, required = CLIS[cli]
    args = module.parse_args(required + flags)
    assert strategy_from_flags(args.strategy, strategy_options(args), RUN) == expected


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--top-k", "5"],
         "--top-k is an option of --strategy sampling, not of the run's strategy (beam); "
         "drop --top-k or pass --strategy sampling"),
        (["--strategy", "greedy", "--beam-size", "2"],
         "--beam-size is an option of --strategy beam, not of --strategy greedy"),
        (["--strategy", "beam", "--seed", "1"],
         "--seed is an option of --strategy sampling, not of --strategy beam"),
        (["--strategy", "sampling", "--length-penalty", "1"],
         "--length-penalty is an option of --strategy beam, not of --strategy sampling"),
        (["--strategy", "nucleus"], "argument --strategy: invalid choice: 'nucleus'"),
    ],
)
@pytest.mark.parametrize("cli", CLIS)
def test_a_flag_of_another_strategy_is_an_error_naming_it(cli, flags, message, capsys):
    module, required = CLIS[cli]
    with pytest.raises(SystemExit) as exited:
        module.parse_args(required + flags)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_the_package_names_the_flag_too():
    # For callers of `strategy_from_flags` that did not parse with the CLIs.
    with pytest.raises(ValueError, match=r"--top-p is an option of --strategy sampling, not of "
                                         r"--strategy greedy; drop --top-p"):
        strategy_from_flags("greedy", {"top_p": 0.5}, RUN)
    with pytest.raises(ValueError, match=r"`top_p` must be in \(0, 1\] .*received top_p=1.5 "
                                         r"\(from --top-p 1.5\)"):
        strategy_from_flags("sampling", {"top_p": 1.5, "seed": None}, RUN)
    with pytest.raises(ValueError, match=r"received size=0 \(from --beam-size 0\)"):
        strategy_from_flags(None, {"beam_size": 0}, RUN)


def test_evaluate_with_a_saved_model_takes_no_strategy_flags(capsys):
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--run-dir", "r", "--saved-model", "s", "--strategy", "sampling",
                             "--seed", "3"])
    assert "the strategy fixed at export: drop --strategy/--seed" in capsys.readouterr().err


def test_bad_values_exit_with_the_error_before_loading_the_run(tmp_path):
    (tmp_path / "train_config.json").write_text(json.dumps({"beam_size": 2}))
    result = subprocess.run(
        [sys.executable, "-m", "training.translate", "--run-dir", str(tmp_path),
         "--strategy", "sampling", "--temperature", "0", "x"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 1
    assert "error: `temperature` must be a finite number > 0" in result.stderr
    assert "(from --temperature 0.0)" in result.stderr


# --------------------------------------------------------------------------
# End to end, on a trained run.
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_translate_cli_samples_reproducibly_with_a_seed(tiny_run):
    from keras_s2s.translator import Translator

    sentences = ["The big dogs do not see a red cat.", "The woman sleeps.", "A man eats apples."]
    command = [sys.executable, "-m", "training.translate", "--run-dir", tiny_run,
               "--strategy", "sampling", "--temperature", "1.5", "--seed", "4", *sentences]

    def run():
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.splitlines()

    printed = run()
    assert run() == printed
    translator = Translator.from_run_dir(tiny_run)
    assert translator.translate(sentences, Sampling(temperature=1.5, seed=4)) == printed
    assert translator.translate(sentences, Greedy()) != printed  # it did sample
