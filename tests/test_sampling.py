"""Sampling search: its draws follow the model's distribution after temperature, top-k
and top-p; it is greedy at top_k=1, reproducible with a seed, and fresh without one.

The frequency tests draw the first token of 4000 rows in one batch from a
scripted step function (fixed logits, PAD the likeliest) and compare the
counts with the expected distribution by a chi-square bound; each also
checks that the bound rejects the distribution a search ignoring the
temperature or the cuts would follow, so the test can fail.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_s2s.decoding import Greedy, Sampling, decode, sampling_search
from tests.helpers import make_model

START, END, PAD = 1, 2, 0
MAX_LENGTH = 8
ROWS = 4000
# Logits of a scripted step function: PAD would be drawn most, and the rest
# decrease so that temperature, top-k and top-p all change the distribution.
LOGITS = np.array([3.0, -0.5, 0.2, 1.8, 1.4, 1.0, 0.6, 0.2, -0.2, -0.6, -1.0, -1.4], "float32")
VOCABULARY = len(LOGITS)


def constant_step_fn(ids, state):
    """The same logits for every row at every step; END (id 2) is rare."""
    logits = tf.tile(tf.constant(LOGITS)[None], [tf.shape(ids)[0], 1])  # (N, V)
    return logits, state


def first_tokens(strategy, rows=ROWS, max_length=1):
    ids, scores = sampling_search(
        constant_step_fn, tf.fill([rows], START), {"unused": tf.zeros([rows])},
        temperature=strategy.temperature, top_k=strategy.top_k, top_p=strategy.top_p,
        seed=strategy.seed, end_id=END, max_length=max_length,
    )
    return np.asarray(ids), np.asarray(scores)


def expected_distribution(temperature=1.0, top_k=0, top_p=1.0):
    """Softmax of LOGITS / temperature without PAD, cut to the top k, then to the nucleus."""
    scaled = LOGITS.astype("float64") / temperature
    scaled[PAD] = -np.inf
    order = np.argsort(-scaled, kind="stable")
    keep = np.zeros(VOCABULARY, bool)
    keep[order[: top_k or VOCABULARY]] = True
    keep[PAD] = False
    probs = np.where(keep, np.exp(scaled - scaled[keep].max()), 0.0)
    probs /= probs.sum()
    mass_before = np.cumsum(probs[order]) - probs[order]
    nucleus = np.zeros(VOCABULARY, bool)
    nucleus[order[mass_before < top_p]] = True
    probs = np.where(nucleus & keep, probs, 0.0)
    return probs / probs.sum()


def chi_square(counts, probs):
    """Pearson's statistic over the tokens of non-zero probability, and its degrees of freedom."""
    support = probs > 0
    expected = counts.sum() * probs[support]
    return float((((counts[support] - expected) ** 2) / expected).sum()), int(support.sum()) - 1


def chi_square_bound(dof, z=3.719):
    """The chi-square quantile at 1 - 1e-4 (z of the normal), Wilson-Hilferty approximation."""
    return dof * (1 - 2 / (9 * dof) + z * np.sqrt(2 / (9 * dof))) ** 3


# --------------------------------------------------------------------------
# Frequencies of the first drawn token.
# --------------------------------------------------------------------------


CASES = [
    dict(),
    dict(temperature=0.5),
    dict(temperature=2.0),
    dict(top_k=3),
    dict(top_p=0.6),
    dict(temperature=0.7, top_k=5, top_p=0.8),
]


@pytest.mark.parametrize("options", CASES, ids=lambda o: str(o) or "plain")
def test_first_token_frequencies_follow_the_cut_tempered_softmax(options):
    strategy = Sampling(seed=11, **options)
    ids, _ = first_tokens(strategy)
    counts = np.bincount(ids[:, 0], minlength=VOCABULARY)
    probs = expected_distribution(**options)
    assert counts[PAD] == 0  # the likeliest logit, never drawn
    assert counts[probs == 0].sum() == 0, counts  # nothing outside the top k / nucleus
    statistic, dof = chi_square(counts, probs)
    assert statistic < chi_square_bound(dof), (statistic, counts, ROWS * probs)

    # The bound has the power to see a search that ignored an option.
    ignoring = []
    if options.get("temperature", 1.0) != 1.0:
        ignoring.append(dict(options, temperature=1.0))
    if options.get("top_k") or options.get("top_p", 1.0) < 1.0:
        ignoring.append(dict(temperature=options.get("temperature", 1.0)))
    for wrong in ignoring:
        wrong_probs = expected_distribution(**wrong)
        wrong_statistic = (
            chi_square(counts, wrong_probs)[0] + ROWS * wrong_probs[counts == 0].sum()
        )  # tokens never drawn but likely under the wrong distribution count too
        assert wrong_statistic > chi_square_bound(int((wrong_probs > 0).sum()) - 1), wrong


def test_every_step_and_row_draws_anew():
    # Without the step folded into the noise, constant logits would give
    # each row the same token at every step.
    ids, _ = first_tokens(Sampling(seed=5), rows=2000, max_length=4)
    continuing = (ids[:, :2] != END).all(axis=1)  # rows that drew two tokens
    same = (ids[continuing, 0] == ids[continuing, 1]).mean()
    probs = expected_distribution()
    assert abs(same - (probs**2).sum() / (1 - probs[END]) ** 2) < 0.05, same
    assert len(np.unique(ids[:, 0])) == VOCABULARY - 1  # rows differ too


def test_scores_are_the_models_log_probabilities_of_the_drawn_tokens():
    ids, scores = first_tokens(Sampling(seed=3, temperature=2.0, top_k=4), rows=50, max_length=3)
    logprobs = LOGITS - np.log(np.exp(LOGITS).sum())  # untempered, over the whole vocabulary
    expected = [logprobs[row[row != PAD]].sum() for row in ids]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


# --------------------------------------------------------------------------
# On a model: greedy at top_k=1, seeds, cuts at every step.
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(7)
    return make_model(num_decoder_layers=2)


@pytest.fixture(scope="module")
def sources():
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 8, size=32)
    tokens = np.zeros((len(lengths), 8), "int32")  # (B, S)
    for row, length in enumerate(lengths):
        tokens[row, :length] = rng.integers(1, 40, size=length)
    return tokens


def sample(model, sources, strategy, jit_compile=False, end_id=END):
    ids, scores = decode(model, sources, strategy, start_id=START, end_id=end_id,
                         max_length=MAX_LENGTH, jit_compile=jit_compile)
    return np.asarray(ids), np.asarray(scores)


def full_logprobs(model, sources, ids):
    """(B, L, V) log-probabilities of the full model, teacher-forced on `ids`."""
    decoder = np.concatenate([np.full((len(ids), 1), START, "int32"), ids[:, :-1]], axis=1)
    logits = model({"encoder_tokens": sources, "decoder_tokens": decoder})
    return np.asarray(tf.nn.log_softmax(logits))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_top_k_one_is_greedy(model, sources, jit_compile):
    for end_id in (END, 49):
        greedy = sample(model, sources, Greedy(), jit_compile, end_id)
        sampled = sample(model, sources, Sampling(top_k=1), jit_compile, end_id)
        np.testing.assert_array_equal(sampled[0], greedy[0])
        np.testing.assert_allclose(sampled[1], greedy[1], rtol=1e-6)


def test_a_seed_reproduces_with_and_without_xla_and_no_seed_does_not(model, sources):
    hot = dict(temperature=3.0)  # a flat distribution: two draws of 32 rows never agree
    first = sample(model, sources, Sampling(seed=21, **hot))
    np.testing.assert_array_equal(sample(model, sources, Sampling(seed=21, **hot))[0], first[0])
    np.testing.assert_array_equal(
        sample(model, sources, Sampling(seed=21, **hot), jit_compile=True)[0], first[0]
    )
    assert (sample(model, sources, Sampling(seed=22, **hot))[0] != first[0]).any()
    unseeded = Sampling(**hot)
    assert (sample(model, sources, unseeded)[0] != sample(model, sources, unseeded)[0]).any()
    assert (sample(model, sources, unseeded, jit_compile=True)[0]
            != sample(model, sources, unseeded, jit_compile=True)[0]).any()


def test_a_row_draws_the_same_whatever_the_batch_size(model, sources):
    # The Translator pads batches to a power of two under XLA: rows must not care.
    strategy = Sampling(seed=4, temperature=2.0)
    whole = sample(model, sources, strategy)[0]
    half = sample(model, sources[:16], strategy)[0]
    np.testing.assert_array_equal(half, whole[:16, : half.shape[1]])


@pytest.mark.parametrize("options", [dict(top_k=3), dict(top_p=0.5), dict(top_k=4, top_p=0.7)],
                         ids=str)
def test_cut_tokens_are_never_drawn_at_any_step(model, sources, options):
    temperature = 2.0  # spreads the draws over many tokens, so the cut matters
    ids, scores = sample(model, sources, Sampling(seed=8, temperature=temperature, **options))
    logprobs = full_logprobs(model, sources, ids)  # (B, L, V)
    np.testing.assert_allclose(
        scores, [logprobs[b, np.arange(len(ids[b])), ids[b]][ids[b] != PAD].sum()
                 for b in range(len(ids))], atol=1e-4,
    )
    checked = 0
    for b, t in zip(*np.nonzero(ids)):
        scaled = logprobs[b, t] / temperature
        scaled[PAD] = -np.inf
        order = np.argsort(-scaled)
        rank = int(np.nonzero(order == ids[b, t])[0][0])
        assert rank < options.get("top_k", VOCABULARY + 50), (b, t, rank)
        if "top_p" in options:
            kept = order[: options.get("top_k", len(order))]
            probs = np.exp(scaled[kept] - scaled[kept].max())
            probs /= probs.sum()
            assert probs[:rank].sum() < options["top_p"] + 1e-5, (b, t, rank)
        checked += 1
    assert checked > 100
    assert (ids != 0).sum(axis=1).min() >= 1 and not (ids[:, 0] == PAD).any()


# --------------------------------------------------------------------------
# Arguments.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(temperature=0), r"`temperature` must be a finite number > 0.*received temperature=0"),
        (dict(temperature=-1.5), r"received temperature=-1.5"),
        (dict(temperature="hot"), r"`temperature` must be a real number; received temperature='hot'"),
        (dict(top_k=-1), r"`top_k` must be an integer >= 0 .*received top_k=-1"),
        (dict(top_k=2.0), r"received top_k=2.0"),
        (dict(top_p=0.0), r"`top_p` must be in \(0, 1\] .*received top_p=0.0"),
        (dict(top_p=1.2), r"received top_p=1.2"),
        (dict(seed=-3), r"`seed` must be None or an integer in \[0, 2\*\*63\); received seed=-3"),
        (dict(seed="7"), r"received seed='7'"),
        (dict(seed=True), r"received seed=True"),
    ],
)
def test_bad_arguments_name_themselves(options, match):
    with pytest.raises(ValueError, match=match):
        Sampling(**options)
    arguments = dict(dict(temperature=1.0, top_k=0, top_p=1.0, seed=None), **options)
    with pytest.raises(ValueError, match=match):
        sampling_search(constant_step_fn, [START], {}, end_id=END, max_length=2, **arguments)
