"""KV-cached greedy and beam search, and the strategies that run them.

Against the full model (naive argmax loop, teacher-forced scores), on
scripted step functions (a fake second-order Markov "model" whose logits
depend on the state, so a state that is not reordered with the beams gives
wrong scores), and under XLA.
"""

import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_s2s import decoding
from keras_s2s.decoding import (
    Beam,
    Greedy,
    Sampling,
    beam_search,
    decode,
    gnmt_length_penalty,
    greedy_search,
    grow_cache_state,
    model_step_fn,
    search_in_graph,
)
from keras_s2s.layers import GrowingCache
from tests.helpers import make_model

START = 1
MAX_LENGTH = 8


# --------------------------------------------------------------------------
# Helpers: a batch with different source lengths, and the full model.
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    # Module scope keeps the file fast; the decoding never changes weights.
    keras.utils.set_random_seed(7)
    return make_model(num_decoder_layers=2)


@pytest.fixture(scope="module")
def sources():
    rng = np.random.default_rng(3)
    lengths = (6, 3, 1, 5)
    tokens = np.zeros((len(lengths), 7), "int32")  # (B, S)
    for row, length in enumerate(lengths):
        tokens[row, :length] = rng.integers(1, 40, size=length)
    return tokens


def greedy_decode(model, encoder_tokens, **options):
    """The ids of `decode` with `Greedy()`."""
    return decode(model, encoder_tokens, Greedy(), **options)[0]


def beam_decode(model, encoder_tokens, *, beam_size=4, length_penalty=0.6, **options):
    """`decode` with `Beam(beam_size, length_penalty)`: (ids, scores)."""
    return decode(model, encoder_tokens, Beam(beam_size, length_penalty), **options)


def full_logits(model, encoder_tokens, decoder_tokens):
    return np.asarray(
        model({"encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens})
    )


def naive_greedy(model, encoder_tokens, end_id, max_length):
    """Runs the full model on the whole prefix at every step; argmax without PAD."""
    batch_size = len(encoder_tokens)
    generated = np.zeros((batch_size, 0), "int32")
    finished = np.zeros(batch_size, bool)
    for _ in range(max_length):
        decoder_tokens = np.concatenate(
            [np.full((batch_size, 1), START, "int32"), generated], axis=1
        )
        last = full_logits(model, encoder_tokens, decoder_tokens)[:, -1]  # (B, V)
        next_ids = last[:, 1:].argmax(-1) + 1  # PAD (0) is never generated
        next_ids = np.where(finished, 0, next_ids).astype("int32")
        generated = np.concatenate([generated, next_ids[:, None]], axis=1)
        finished |= next_ids == end_id
        if finished.all():
            break
    return generated


def graph_search(model, sources, jit_compile=False, **options):
    """`search_in_graph` in a `tf.function` of its own: (ids, scores)."""
    return tf.function(
        lambda tokens: search_in_graph(model, tokens, **options), jit_compile=jit_compile
    )(tf.constant(sources))


def hypothesis_length(ids):
    """Generated tokens of one row, END included: its non-PAD ids."""
    return int(np.count_nonzero(ids))


def teacher_forced_score(model, encoder_tokens, ids, alpha):
    """The full model's log p(ids | source) / GNMT penalty, one row at a time."""
    scores = []
    for row in range(len(ids)):
        tokens = ids[row][: hypothesis_length(ids[row])]
        decoder_tokens = np.concatenate([[START], tokens[:-1]])[None].astype("int32")
        logits = full_logits(model, encoder_tokens[row : row + 1], decoder_tokens)[0]
        logprobs = np.asarray(tf.nn.log_softmax(logits))  # (T, V)
        total = logprobs[np.arange(len(tokens)), tokens].sum()
        scores.append(total / ((5 + len(tokens)) / 6) ** alpha)
    return np.array(scores)


@pytest.fixture(scope="module")
def ends(model, sources):
    """An END id the random model emits (row 0's third greedy token), and one it never emits."""
    free_run = naive_greedy(model, sources, end_id=-1, max_length=MAX_LENGTH)
    unused = sorted(set(range(1, 50)) - set(free_run.ravel().tolist()))
    return {"emitted": int(free_run[0, 2]), "absent": unused[0]}


def assert_pad_after_end(ids, end_id):
    for row in np.asarray(ids):
        length = hypothesis_length(row)
        assert (row[:length] != 0).all(), row
        assert (row[length:] == 0).all(), row
        assert end_id not in row[: length - 1].tolist(), row


# --------------------------------------------------------------------------
# Greedy search against the full model.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("end_choice", ["emitted", "absent"])
def test_cached_greedy_equals_naive_full_model_loop(model, sources, ends, end_choice):
    end_id = ends[end_choice]
    expected = naive_greedy(model, sources, end_id, MAX_LENGTH)
    got = np.asarray(
        greedy_decode(
            model,
            sources,
            start_id=START,
            end_id=end_id,
            max_length=MAX_LENGTH,
            jit_compile=False,
        )
    )
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int32
    assert_pad_after_end(got, end_id)
    if end_choice == "emitted":
        assert (got[0] == end_id).any()  # row 0 finished: finishing is exercised
    else:
        assert got.shape == (len(sources), MAX_LENGTH)


def test_greedy_decode_stops_at_per_row_limits(model, sources, ends):
    ids = np.asarray(
        greedy_decode(
            model,
            sources,
            start_id=START,
            end_id=ends["absent"],
            max_length=MAX_LENGTH,
            max_length_ratio=1.0,
            max_length_offset=1,
            jit_compile=False,
        )
    )
    source_lengths = np.count_nonzero(sources, axis=1)
    lengths = [hypothesis_length(row) for row in ids]
    np.testing.assert_array_equal(lengths, np.minimum(source_lengths + 1, MAX_LENGTH))


# --------------------------------------------------------------------------
# Beam search against the full model.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.6, 0.0, 1.5])
def test_beam_score_is_the_full_models_penalised_log_probability(model, sources, ends, alpha):
    end_id = ends["emitted"]
    ids, scores = beam_decode(
        model,
        sources,
        start_id=START,
        end_id=end_id,
        max_length=MAX_LENGTH,
        beam_size=3,
        length_penalty=alpha,
        jit_compile=False,
    )
    ids, scores = np.asarray(ids), np.asarray(scores)
    assert scores.dtype == np.float32 and scores.shape == (len(sources),)
    assert_pad_after_end(ids, end_id)
    assert (ids == end_id).any()  # some hypothesis finished with END
    np.testing.assert_allclose(
        scores, teacher_forced_score(model, sources, ids, alpha), rtol=1e-5, atol=1e-5
    )


def test_beam_per_row_max_length_from_source_length(model, sources, ends):
    end_id = ends["absent"]
    ids, scores = beam_decode(
        model,
        sources,
        start_id=START,
        end_id=end_id,
        max_length=MAX_LENGTH,
        beam_size=2,
        max_length_ratio=0.5,
        max_length_offset=2,
        jit_compile=False,
    )
    ids = np.asarray(ids)
    limits = np.minimum(np.floor(0.5 * np.count_nonzero(sources, axis=1) + 2), MAX_LENGTH)
    lengths = np.array([hypothesis_length(row) for row in ids])
    ended = (ids == end_id).any(axis=1)
    assert (lengths <= limits).all() and (lengths[~ended] == limits[~ended]).all()
    assert (~ended & (limits < MAX_LENGTH)).any()  # a row was cut by its own limit
    np.testing.assert_allclose(
        np.asarray(scores), teacher_forced_score(model, sources, ids, 0.6), atol=1e-5
    )


@pytest.mark.parametrize("end_choice", ["emitted", "absent"])
def test_beam_size_one_without_length_penalty_is_greedy(model, sources, ends, end_choice):
    # With a length penalty, width 1 may rightly keep extending a beam whose
    # normalised score can still beat an earlier END; without one it cannot.
    # (`Beam(size=1)` runs greedy search; this is `beam_search` itself.)
    end_id = ends[end_choice]
    step_fn, state = model_step_fn(model, sources, max_length=MAX_LENGTH)
    starts = tf.fill([len(sources)], START)
    options = dict(end_id=end_id, max_length=MAX_LENGTH)
    greedy, _ = greedy_search(step_fn, starts, state, **options)
    beam, _ = beam_search(step_fn, starts, state, beam_size=1, length_penalty=0.0, **options)
    np.testing.assert_array_equal(np.asarray(beam)[:, 0], np.asarray(greedy))


@pytest.mark.parametrize("end_choice", ["emitted", "absent"])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_greedy_scores_are_the_full_models_log_probabilities(model, sources, ends, end_choice,
                                                             jit_compile):
    # Greedy search returns only ids; the strategy sums the log-probabilities
    # of the picked tokens (the state leaves the loop through the growth hook).
    end_id = ends[end_choice]
    options = dict(start_id=START, end_id=end_id, max_length=MAX_LENGTH, jit_compile=jit_compile)
    ids, scores = decode(model, sources, Greedy(), **options)
    ids, scores = np.asarray(ids), np.asarray(scores)
    np.testing.assert_array_equal(ids, naive_greedy(model, sources, end_id, MAX_LENGTH))
    assert scores.dtype == np.float32 and scores.shape == (len(sources),)
    np.testing.assert_allclose(scores, teacher_forced_score(model, sources, ids, 0.0), atol=1e-4)
    # Beam(size=1): the same ids as greedy (as the Translator always had), penalised scores.
    beam_ids, beam_scores = decode(model, sources, Beam(size=1, length_penalty=0.6), **options)
    np.testing.assert_array_equal(np.asarray(beam_ids), ids)
    np.testing.assert_allclose(
        np.asarray(beam_scores), teacher_forced_score(model, sources, ids, 0.6), atol=1e-4
    )


def test_greedy_scores_stop_at_per_row_limits(model, sources, ends):
    # Rows cut by their own limit count the tokens they have, not the steps
    # that other rows still ran.
    ids, scores = decode(model, sources, Greedy(), start_id=START, end_id=ends["absent"],
                         max_length=MAX_LENGTH, max_length_ratio=0.5, max_length_offset=1,
                         jit_compile=False)
    ids = np.asarray(ids)
    assert len({hypothesis_length(row) for row in ids}) > 1
    np.testing.assert_allclose(
        np.asarray(scores), teacher_forced_score(model, sources, ids, 0.0), atol=1e-4
    )


# --------------------------------------------------------------------------
# Scripted step functions: no model at all.
# --------------------------------------------------------------------------

PAD, END, A, B, C, D, E = 0, 2, 3, 4, 5, 6, 7
VOCABULARY = 8
EPSILON = 1e-4

# Next-token probabilities given (previous fed token, fed token). Tokens
# after END get all the mass so that extending a finished hypothesis would
# show. Unlisted contexts use DEFAULT, which never ends.
RULES = {
    (PAD, START): {A: 0.6, B: 0.4},
    (START, A): {C: 0.55, D: 0.45},
    (START, B): {END: 0.95, C: 0.05},
    (A, C): {END: 1.0},
    (A, D): {END: 1.0},
    (B, END): {A: 1.0},
    (C, END): {A: 1.0},
    (D, END): {A: 1.0},
    # ... and B END A END would outscore B END if it were extended.
    (END, A): {END: 1.0},
    (PAD, D): {END: 0.7, A: 0.3},
    (PAD, C): {PAD: 0.6, B: 0.4},  # PAD is the likeliest, and must still not be chosen
}
DEFAULT = {A: 0.5, B: 0.3, C: 0.2}


def markov_table():
    """Logits (V, V, V) indexed by (previous, fed, next)."""
    table = np.full((VOCABULARY, VOCABULARY, VOCABULARY), EPSILON)
    for token, probability in DEFAULT.items():
        table[:, :, token] = probability
    for (previous, fed), probabilities in RULES.items():
        table[previous, fed] = EPSILON
        for token, probability in probabilities.items():
            table[previous, fed, token] = probability
    return np.log(table).astype("float32")


TABLE = markov_table()
LOGPROBS = np.asarray(tf.nn.log_softmax(TABLE))


class ScriptedModel:
    """`step_fn` over TABLE; state {"previous": (N,) int32, "calls": rank-0}.

    `calls` is a rank-0 state entry (shared by all rows, never reordered);
    `eager_calls` counts Python calls, which equals loop steps when the
    search runs eagerly (tf.while_loop is then a Python loop).
    """

    def __init__(self):
        self.table = tf.constant(TABLE)
        self.eager_calls = 0

    def step_fn(self, ids, state):
        self.eager_calls += 1
        logits = tf.gather_nd(self.table, tf.stack([state["previous"], ids], axis=-1))  # (N, V)
        return logits, {"previous": ids, "calls": state["calls"] + 1}

    @staticmethod
    def initial_state(rows):
        return {"previous": tf.zeros([rows], tf.int32), "calls": tf.constant(0)}


def scripted_score(start, ids, alpha):
    """log p(ids | start) under TABLE / GNMT penalty."""
    previous, fed, total = PAD, start, 0.0
    tokens = ids[: hypothesis_length(ids)]
    for token in tokens:
        total += LOGPROBS[previous, fed, token]
        previous, fed = fed, token
    return total / ((5 + len(tokens)) / 6) ** alpha


def padded(*tokens, length=6):
    return list(tokens) + [0] * (length - len(tokens))


def scripted_greedy(starts, **kwargs):
    scripted = ScriptedModel()
    ids, _ = greedy_search(
        scripted.step_fn,
        tf.constant(starts, tf.int32),
        ScriptedModel.initial_state(len(starts)),
        end_id=END,
        **kwargs,
    )
    return np.asarray(ids), scripted.eager_calls


def scripted_beam(starts, beam_size, **kwargs):
    scripted = ScriptedModel()
    ids, scores = beam_search(
        scripted.step_fn,
        tf.constant(starts, tf.int32),
        ScriptedModel.initial_state(len(starts) * beam_size),
        beam_size=beam_size,
        end_id=END,
        **kwargs,
    )
    return np.asarray(ids), np.asarray(scores), scripted.eager_calls


def test_scripted_greedy_finishes_rows_pads_and_stops_early():
    ids, calls = scripted_greedy([START, D], max_length=6)
    # Row D ends at once; after END it emits PAD although TABLE then favours A.
    np.testing.assert_array_equal(ids, [padded(A, C, END), padded(END)])
    assert calls == 3  # stopped when both rows had finished, not at max_length
    np.testing.assert_array_equal(decoding.trim_ids(ids), [[A, C, END], [END, 0, 0]])


def test_scripted_greedy_truncates_at_max_length_and_per_row_limits():
    ids, calls = scripted_greedy([E, E, START], max_length=6, max_lengths=[2, 9, 1])
    np.testing.assert_array_equal(ids, [padded(A, A), padded(*[A] * 6), padded(A)])
    assert calls == 6


def test_scripted_beam_finds_what_greedy_misses():
    greedy_ids, _ = scripted_greedy([START], max_length=6)
    np.testing.assert_array_equal(greedy_ids, [padded(A, C, END)])
    ids, scores, _ = scripted_beam([START], beam_size=2, max_length=6)
    np.testing.assert_array_equal(ids[0], [padded(B, END), padded(A, C, END)])
    assert scripted_score(START, ids[0, 0], 0.6) > scripted_score(START, greedy_ids[0], 0.6)
    np.testing.assert_allclose(
        scores[0], [scripted_score(START, row, 0.6) for row in ids[0]], rtol=1e-6
    )


def test_scripted_beam_reorders_state_and_never_extends_finished():
    ids, scores, calls = scripted_beam([START, E], beam_size=3, max_length=6)
    # Sentence 0: B END finished at step 2 while the search went on; it keeps
    # its ids (PAD, not TABLE's A, after END) and its length-2 score.
    np.testing.assert_array_equal(
        ids[0], [padded(B, END), padded(A, C, END), padded(A, D, END)]
    )
    assert calls == 6  # sentence 1 never ends, so the loop ran to max_length
    # Every score is TABLE's log-probability with the true (previous, fed)
    # history: A D END scores right only if the state followed its beam.
    for sentence, start in enumerate([START, E]):
        np.testing.assert_allclose(
            scores[sentence],
            [scripted_score(start, row, 0.6) for row in ids[sentence]],
            rtol=1e-6,
        )
    # Sentence 1 never emits END: its hypotheses are cut at max_length.
    assert [hypothesis_length(row) for row in ids[1]] == [6, 6, 6]
    assert (ids[1] != END).all()


def test_scripted_beam_stops_early_when_no_alive_beam_can_win():
    # Without a length penalty B END (0.38) beats every alive beam (<= 0.33)
    # as soon as it is found: the search stops after two steps.
    ids, scores, calls = scripted_beam([START], beam_size=2, max_length=6, length_penalty=0.0)
    assert calls == 2
    np.testing.assert_array_equal(ids[0, 0], padded(B, END))
    np.testing.assert_allclose(scores[0, 0], scripted_score(START, ids[0, 0], 0.0), rtol=1e-6)


def test_beam_early_stopping_stops_at_k_finished_and_exact_search_runs_on():
    # Every step: END 0.3, A 0.7 (the first step END 0.4, A 0.6). With K=2,
    # END and A END have finished after two steps. A steep length penalty
    # (alpha 3) then favours longer hypotheses, so an alive beam could still
    # win: the exact search runs to max_length and returns the longest one;
    # early stopping ends the sentence at its K-th finished hypothesis.
    calls = []

    def step_fn(ids, state):
        calls.append(1)
        first = tf.equal(state["step"], 0)
        probabilities = tf.where(first, [EPSILON, EPSILON, 0.4, 0.6], [EPSILON, EPSILON, 0.3, 0.7])
        logits = tf.math.log(tf.tile(probabilities[None, :], [tf.shape(ids)[0], 1]))  # (N, 4)
        return logits, {"step": state["step"] + 1}

    results = {}
    for early_stopping in (True, False):
        calls.clear()
        ids, scores = beam_search(
            step_fn, tf.constant([START], tf.int32), {"step": tf.constant(0)}, beam_size=2,
            end_id=END, max_length=6, length_penalty=3.0, early_stopping=early_stopping,
        )
        results[early_stopping] = (np.asarray(ids)[0, 0], len(calls))
    np.testing.assert_array_equal(results[True][0], padded(END))
    assert results[True][1] == 2
    np.testing.assert_array_equal(results[False][0], [A] * 6)
    assert results[False][1] == 6


def test_scripted_beam_per_row_limits():
    ids, scores, _ = scripted_beam([E, E], beam_size=2, max_length=6, max_lengths=[2, 4])
    assert [hypothesis_length(row) for row in ids[:, 0]] == [2, 4]
    np.testing.assert_array_equal(ids[:, 0], [padded(A, A), padded(A, A, A, A)])
    np.testing.assert_allclose(
        scores[:, 0], [scripted_score(E, row, 0.6) for row in ids[:, 0]], rtol=1e-6
    )


def test_pad_is_never_generated():
    greedy_ids, _ = scripted_greedy([C], max_length=2)
    np.testing.assert_array_equal(greedy_ids, [[B, A]])
    beam_ids, _, _ = scripted_beam([C], beam_size=2, max_length=2)
    assert (beam_ids[0, :, 0] == B).all()


def test_length_penalty_counts_end():
    np.testing.assert_allclose(gnmt_length_penalty(2, 0.6), (7 / 6) ** 0.6, rtol=1e-6)


# --------------------------------------------------------------------------
# XLA: the same ids with and without jit_compile.
# --------------------------------------------------------------------------


def test_scripted_searches_compile_with_xla():
    starts = tf.constant([START, E, D], tf.int32)

    def run(starts):
        scripted = ScriptedModel()
        greedy = greedy_search(
            scripted.step_fn, starts, ScriptedModel.initial_state(3), end_id=END, max_length=6
        )
        beam = beam_search(
            scripted.step_fn,
            starts,
            ScriptedModel.initial_state(3 * 2),
            beam_size=2,
            end_id=END,
            max_length=6,
        )
        return greedy, beam

    eager = run(starts)
    compiled = tf.function(run, jit_compile=True)(starts)
    tf.nest.map_structure(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6),
        eager,
        compiled,
    )


@pytest.mark.parametrize("beam_size", [None, 3])
def test_model_step_fn_searches_compile_with_xla(model, sources, ends, beam_size):
    end_id = ends["emitted"]

    def run(encoder_tokens):
        starts = tf.fill([tf.shape(encoder_tokens)[0]], START)
        if beam_size is None:
            step_fn, state = model_step_fn(model, encoder_tokens, max_length=MAX_LENGTH)
            return greedy_search(step_fn, starts, state, end_id=end_id, max_length=MAX_LENGTH)
        step_fn, state = model_step_fn(
            model, encoder_tokens, max_length=MAX_LENGTH, beam_size=beam_size
        )
        return beam_search(
            step_fn, starts, state, beam_size=beam_size, end_id=end_id, max_length=MAX_LENGTH
        )

    plain = tf.function(run)(tf.constant(sources))
    compiled = tf.function(run, jit_compile=True)(tf.constant(sources))
    tf.nest.map_structure(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5),
        plain,
        compiled,
    )


@pytest.mark.parametrize("strategy", [Greedy(), Beam(), Sampling(seed=5)], ids=str)
def test_decode_gives_the_same_ids_with_xla(model, sources, ends, strategy):
    options = dict(start_id=START, end_id=ends["emitted"], max_length=MAX_LENGTH)
    plain = decode(model, sources, strategy, jit_compile=False, **options)
    compiled = decode(model, sources, strategy, jit_compile=True, **options)
    tf.nest.map_structure(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5),
        plain,
        compiled,
    )


# --------------------------------------------------------------------------
# The traced search: cached per model, freed with it, core ops only.
# --------------------------------------------------------------------------


def test_decode_runs_without_xla_by_default_as_the_translator_does(rng):
    # One default for the low-level call, `Translator` and the SavedModel:
    # without XLA, where finished sentences leave the batch.
    local_model = make_model(num_decoder_layers=1)
    tokens = rng.integers(1, 40, size=(2, 5))
    decode(local_model, tokens, Greedy(), start_id=START, end_id=END, max_length=4)
    assert [key[2] for key in decoding._SEARCHES[local_model]] == [False]


def test_search_is_traced_once_per_model_and_options_and_freed_with_the_model(rng):
    local_model = make_model(num_decoder_layers=1)
    options = dict(start_id=START, end_id=END, max_length=4, jit_compile=False)
    for batch_size, source_length in [(2, 5), (3, 2)]:
        tokens = rng.integers(1, 40, size=(batch_size, source_length))
        assert greedy_decode(local_model, tokens, **options).shape[0] == batch_size
    (search,) = decoding._SEARCHES[local_model].values()
    assert search.experimental_get_tracing_count() == 1
    reference = weakref.ref(local_model)
    del local_model, search
    gc.collect()
    assert reference() is None


def _op_types(concrete_function):
    graph_def = concrete_function.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


@pytest.mark.parametrize(
    "strategy", [Greedy(), Beam(size=2), Sampling(top_k=3, top_p=0.9), Sampling(seed=1)], ids=str
)
def test_exported_search_graph_uses_core_ops_only(model, strategy):
    # KNOWN_TRAPS 8: stock TF Serving has no Addons ops, no Python, and does
    # not compile XLA-only ops (e.g. XlaDynamicUpdateSlice) on CPU.
    options = dict(
        start_id=START, end_id=END, max_length=4, max_length_ratio=None, max_length_offset=0
    )
    search = decoding._compiled_search(model, strategy, options, jit_compile=False)
    types = _op_types(search.get_concrete_function())
    assert "While" in types
    forbidden = {t for t in types if t.startswith(("Xla", "Addons")) or "PyFunc" in t}
    assert not forbidden, forbidden


# --------------------------------------------------------------------------
# Bad arguments name themselves.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(beam_size=0), r"`size` must be a positive integer; received size=0"),
        (dict(max_length=16), r"`max_length` must be at most 15 .* received max_length=16"),
        (dict(max_length=0), r"received max_length=0"),
        (dict(end_id=0), r"`end_id` .* received end_id=0"),
        (dict(start_id=50), r"`start_id` .* received start_id=50"),
        (dict(length_penalty="0.6"), r"`length_penalty` .* received length_penalty='0.6'"),
        (dict(max_length_ratio=-1.0), r"received max_length_ratio=-1.0"),
    ],
)
def test_beam_decode_rejects_bad_arguments(model, sources, overrides, match):
    arguments = dict(start_id=START, end_id=END, max_length=MAX_LENGTH, beam_size=2)
    with pytest.raises(ValueError, match=match):
        beam_decode(model, sources, **dict(arguments, **overrides))


def test_greedy_decode_rejects_bad_arguments(model, sources):
    with pytest.raises(ValueError, match=r"`max_length` must be at most 15 .* max_length=16"):
        greedy_decode(model, sources, start_id=START, end_id=END, max_length=16)
    with pytest.raises(ValueError, match=r"`encoder_tokens` must be .* received shape \(7,\)"):
        greedy_decode(model, sources[0], start_id=START, end_id=END, max_length=4)
    with pytest.raises(ValueError, match=r"received jit_compile='yes'"):
        greedy_decode(model, sources, start_id=START, end_id=END, max_length=4, jit_compile="yes")
    with pytest.raises(ValueError, match=r"`strategy` must be a decoding strategy.*strategy='beam'"):
        decode(model, sources, "beam", start_id=START, end_id=END, max_length=4)


def test_search_functions_reject_bad_arguments(model, sources):
    scripted = ScriptedModel()
    with pytest.raises(ValueError, match=r"received beam_size=0"):
        beam_search(
            scripted.step_fn, [START], ScriptedModel.initial_state(1),
            beam_size=0, end_id=END, max_length=4,
        )
    with pytest.raises(ValueError, match=r"received max_length=0"):
        greedy_search(
            scripted.step_fn, [START], ScriptedModel.initial_state(1), end_id=END, max_length=0
        )
    with pytest.raises(ValueError, match=r"received max_length=20"):
        model_step_fn(model, sources, max_length=20)


@pytest.mark.parametrize("tie", ["target", "all"])
def test_cached_greedy_equals_naive_loop_with_tied_embeddings(tie, sources):
    from tests.helpers import make_tied_model

    keras.utils.set_random_seed(11)
    tied = make_tied_model(tie)
    end_id = 49
    expected = naive_greedy(tied, sources, end_id, max_length=MAX_LENGTH)
    for jit_compile in (False, True):
        ids = greedy_decode(
            tied, sources, start_id=START, end_id=end_id, max_length=MAX_LENGTH,
            jit_compile=jit_compile,
        )
        np.testing.assert_array_equal(np.asarray(ids), expected)


def test_beam_search_ignores_extra_source_padding(model, sources, ends):
    # The K beams of a sentence share one cross-attention cache and one
    # source-mask row (KNOWN_TRAPS 1 and 4 on the grouped path): padding
    # appended to the source changes no hypothesis and no score.
    options = dict(start_id=START, end_id=ends["emitted"], max_length=MAX_LENGTH,
                   beam_size=3, length_penalty=0.6, jit_compile=False)
    ids, scores = beam_decode(model, sources, **options)
    padded_ids, padded_scores = beam_decode(model, np.pad(sources, ((0, 0), (0, 5))), **options)
    np.testing.assert_array_equal(np.asarray(padded_ids), np.asarray(ids))
    np.testing.assert_allclose(np.asarray(padded_scores), np.asarray(scores), atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_beam_ranking_of_two_steps_equals_the_exhaustive_one(seed):
    # Beam search ranks each beam's best tokens first and only then the
    # survivors: the K best two-token hypotheses must still be those of the
    # exhaustive ranking over (first token among the K alive) x (any token),
    # also when they all extend one beam, and PAD (the likeliest) never wins.
    rng = np.random.default_rng(seed)
    vocabulary, beams = 9, 3
    first = rng.normal(size=vocabulary).astype("float32")
    second = (3.0 * rng.normal(size=(vocabulary, vocabulary))).astype("float32")
    first[END] = second[:, END] = -30.0  # nothing finishes before the limit
    first[PAD] = second[:, PAD] = 6.0

    def step_fn(ids, state):
        logits = tf.where(
            state["step"] == 0, tf.gather(first[None], tf.zeros_like(ids)), tf.gather(second, ids)
        )  # (N, V)
        return logits, {"step": state["step"] + 1}

    ids, scores = beam_search(step_fn, tf.constant([START]), {"step": tf.constant(0)},
                              beam_size=beams, end_id=END, max_length=2, length_penalty=0.0)
    first_logprob = np.asarray(tf.nn.log_softmax(first))
    second_logprob = np.asarray(tf.nn.log_softmax(second))
    alive = [t for t in np.argsort(-first_logprob) if t != PAD][:beams]
    ranked = sorted(
        ((first_logprob[a] + second_logprob[a, b], a, b)
         for a in alive for b in range(vocabulary) if b != PAD),
        reverse=True,
    )[:beams]
    np.testing.assert_array_equal(np.asarray(ids)[0], [[a, b] for _, a, b in ranked])
    np.testing.assert_allclose(np.asarray(scores)[0], [s for s, _, _ in ranked], rtol=1e-6)


@pytest.mark.parametrize("vocabulary", [130, 1000, 8000])
def test_block_ranking_gives_the_tokens_of_top_k_ties_included(vocabulary):
    # Beam search ranks 64-token blocks by their maxima, then the tokens of
    # the best blocks; rounded logits make many ties, which must still go to
    # the lower id, as in tf.math.top_k.
    logits = np.round(np.random.default_rng(vocabulary).normal(size=(7, vocabulary)), 1)
    logits = tf.constant(logits.astype("float32"))
    values, tokens, row_max = decoding._top_tokens(logits, 9, pad_id=None)
    expected_values, expected_tokens = tf.math.top_k(logits, k=9)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(expected_tokens))
    np.testing.assert_array_equal(np.asarray(values), np.asarray(expected_values))
    np.testing.assert_array_equal(np.asarray(row_max)[:, 0], np.max(np.asarray(logits), axis=1))
    _, tokens_with_pad, _ = decoding._top_tokens(logits, 9, pad_id=int(expected_tokens[0, 0]))
    assert np.asarray(tokens_with_pad)[0, 0] == int(expected_tokens[0, 0])  # kept, at -inf


# --------------------------------------------------------------------------
# The self-attention cache grown in segments.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", [Greedy(), Beam(size=3)], ids=str)
@pytest.mark.parametrize("jit_compile", [False, True])
def test_cache_grown_in_segments_gives_the_same_search(model, sources, ends, strategy,
                                                       jit_compile):
    # Boundaries inside the search (steps 2 and 5 of 8) and an END that is
    # never emitted, so every segment runs and both growths happen.
    options = dict(strategy=strategy, start_id=START, end_id=ends["absent"],
                   max_length=MAX_LENGTH)

    whole, grown = (graph_search(model, sources, jit_compile=jit_compile, cache_segments=segments,
                                 **options) for segments in ((), (2, 5)))
    np.testing.assert_array_equal(np.asarray(grown[0]), np.asarray(whole[0]))
    np.testing.assert_allclose(np.asarray(grown[1]), np.asarray(whole[1]), atol=1e-6)
    if strategy == Greedy():
        np.testing.assert_array_equal(
            np.asarray(grown[0]), naive_greedy(model, sources, ends["absent"], MAX_LENGTH)
        )
        assert (np.asarray(grown[0]) != 0).all()  # ran all 8 steps: through both growths


@pytest.mark.parametrize("strategy", [Greedy(), Beam(size=3), Sampling(seed=7)], ids=str)
def test_growing_cache_gives_the_same_search_as_the_fixed_cache(model, sources, ends, strategy):
    # An END never emitted: every step runs, the cache grows to all 8 positions.
    options = dict(strategy=strategy, start_id=START, end_id=ends["absent"],
                   max_length=MAX_LENGTH)

    fixed, growing = (graph_search(model, sources, growing_cache=growing, **options)
                      for growing in (False, True))
    np.testing.assert_array_equal(np.asarray(growing[0]), np.asarray(fixed[0]))
    np.testing.assert_allclose(np.asarray(growing[1]), np.asarray(fixed[1]), atol=1e-5)
    if not isinstance(strategy, Sampling):  # a draw may pick the END the argmax never does
        assert (np.asarray(growing[0]) != 0).all()


def test_growing_cache_holds_exactly_the_decoded_positions(model, sources):
    step_fn, state = model_step_fn(
        model, sources, max_length=MAX_LENGTH, beam_size=2, growing_cache=True
    )
    rows = 2 * len(sources)
    for positions in (0, 1, 2):
        for layer_cache in state["self_attention"]:
            assert isinstance(layer_cache, GrowingCache)
            assert [(t.shape[0], t.shape[2]) for t in layer_cache] == [(rows, positions)] * 2
        _, state = step_fn(tf.fill([rows], START), state)


def test_grow_cache_state_pads_only_the_slot_axis_with_zeros(model, sources):
    _, state = model_step_fn(model, sources, max_length=MAX_LENGTH, cache_capacity=3)
    grown = grow_cache_state(state, MAX_LENGTH + 1)
    assert int(grown["index"]) == int(state["index"])
    for before, after in zip(tf.nest.flatten(state["self_attention"]),
                             tf.nest.flatten(grown["self_attention"])):
        assert after.shape == (*before.shape[:2], MAX_LENGTH + 1, before.shape[3])
        np.testing.assert_array_equal(after[:, :, :3], before)
        assert not np.asarray(after[:, :, 3:]).any()


def test_segmented_loop_rejects_unordered_boundaries(model, sources, ends):
    with pytest.raises(ValueError, match=r"`state_growth` boundaries must be increasing"):
        search_in_graph(model, tf.constant(sources), strategy=Greedy(), start_id=START,
                        end_id=ends["absent"], max_length=MAX_LENGTH, cache_segments=(5, 2))


# --------------------------------------------------------------------------
# Dropping finished sentences from the batch (the searches without XLA).
# --------------------------------------------------------------------------


def favourite_step_fn(rows_seen):
    """A `step_fn` that strongly prefers each row's own token, state {"favourite": (N,)} per row.

    It records how many rows it was fed (the eager searches call it once a
    step). A row matched with another row's state emits that row's token.
    """

    def step_fn(ids, state):
        rows_seen.append(int(tf.shape(ids)[0]))
        return 4.0 * tf.one_hot(state["favourite"], VOCABULARY), state  # (N, V)

    return step_fn


# Three sentences; the middle one stops after one step, so the last one's
# rows move down in the batch for the four steps after.
FAVOURITES, LIMITS = [C, D, E], [5, 1, 5]
EXPECTED = [[C] * 5, padded(D, length=5), [E] * 5]


def test_greedy_drops_finished_rows_and_gives_the_same_ids():
    results = {}
    for drop_finished in (False, True):
        rows_seen = []
        ids, scores = greedy_search(
            favourite_step_fn(rows_seen), tf.fill([3], START),
            {"favourite": tf.constant(FAVOURITES)}, end_id=END, max_length=5,
            max_lengths=LIMITS, drop_finished=drop_finished,
        )
        results[drop_finished] = (np.asarray(ids), np.asarray(scores), rows_seen)
    np.testing.assert_array_equal(results[True][0], EXPECTED)
    np.testing.assert_array_equal(results[False][0], EXPECTED)
    np.testing.assert_array_equal(results[True][1], results[False][1])
    assert results[False][2] == [3, 3, 3, 3, 3]
    assert results[True][2] == [3, 2, 2, 2, 2]


@pytest.mark.parametrize("early_stopping", [True, False])
def test_beam_drops_stopped_sentences_and_gives_the_same_hypotheses(early_stopping):
    results = {}
    for drop_finished in (False, True):
        rows_seen = []
        ids, scores = beam_search(
            favourite_step_fn(rows_seen), tf.fill([3], START),
            {"favourite": tf.repeat(tf.constant(FAVOURITES), 2)}, beam_size=2, end_id=END,
            max_length=5, max_lengths=LIMITS, early_stopping=early_stopping,
            drop_finished=drop_finished,
        )
        results[drop_finished] = (np.asarray(ids), np.asarray(scores), rows_seen)
    np.testing.assert_array_equal(results[True][0][:, 0], EXPECTED)
    np.testing.assert_array_equal(results[True][0], results[False][0])
    np.testing.assert_array_equal(results[True][1], results[False][1])
    assert results[False][2] == [6, 6, 6, 6, 6]
    assert results[True][2] == [6, 4, 4, 4, 4]


def test_beam_gathers_the_per_sentence_state_when_it_drops_sentences():
    # Each sentence's favourite token is in the per-sentence state (B,), shared
    # by its K rows. Sentence 0 stops first; if the survivors' rows were not
    # matched with their own entry, sentence 1 would be fed sentence 0's.
    favourites = tf.constant([C, D], tf.int32)  # (B,)

    def step_fn(ids, state):
        favourite = state[decoding.SENTENCE_STATE]["favourite"]  # (b,)
        rows_per_sentence = tf.shape(ids)[0] // tf.shape(favourite)[0]
        logits = 4.0 * tf.one_hot(tf.repeat(favourite, rows_per_sentence), VOCABULARY)
        return logits, state  # (b*K, V)

    state = {decoding.SENTENCE_STATE: {"favourite": favourites}, "rows": tf.zeros([4])}
    ids, _ = beam_search(
        step_fn, tf.constant([START, START], tf.int32), state, beam_size=2, end_id=END,
        max_length=5, max_lengths=[1, 5], drop_finished=True,
    )
    np.testing.assert_array_equal(np.asarray(ids)[:, 0], [padded(C, length=5), [D] * 5])


@pytest.mark.parametrize(
    "strategy", [Greedy(), Beam(size=3), Beam(size=3, early_stopping=False), Sampling(seed=7)],
    ids=str,
)
def test_model_search_without_xla_drops_sentences_and_gives_the_same_ids(model, sources, ends,
                                                                           strategy):
    # An emitted END and per-sentence limits, so sentences stop at different
    # steps: the search without XLA (growing cache, dropping) against the
    # fixed cache that keeps every sentence to the end.
    options = dict(strategy=strategy, start_id=START, end_id=ends["emitted"],
                   max_length=MAX_LENGTH, max_length_ratio=1.0, max_length_offset=1)

    kept, dropped = (graph_search(model, sources, growing_cache=growing, **options)
                     for growing in (False, True))
    np.testing.assert_array_equal(np.asarray(dropped[0]), np.asarray(kept[0]))
    np.testing.assert_allclose(np.asarray(dropped[1]), np.asarray(kept[1]), atol=1e-5)
    lengths = {hypothesis_length(row) for row in np.asarray(dropped[0])}
    assert len(lengths) > 1, lengths  # sentences stopped at different steps


def test_search_in_graph_drops_finished_sentences_without_xla_only(model, sources, ends,
                                                                    monkeypatch):
    seen = []
    search = decoding.beam_search

    def recording(*args, drop_finished, **kwargs):
        seen.append(drop_finished)
        return search(*args, drop_finished=drop_finished, **kwargs)

    monkeypatch.setattr(decoding, "beam_search", recording)
    for growing_cache in (False, True):
        graph_search(model, sources, growing_cache=growing_cache, strategy=Beam(size=2),
                     start_id=START, end_id=ends["emitted"], max_length=MAX_LENGTH)
    assert seen == [False, True]
