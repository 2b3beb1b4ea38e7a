"""Greedy, beam and sampling search over a step function, with the model's KV cache.

A decoding strategy is a small frozen object, `Greedy()`, `Beam(size,
length_penalty)` or `Sampling(temperature, top_k, top_p, seed)`, that runs
its search over a step function; `decode(model, encoder_tokens, strategy,
...)` is the one entry point for a batch, and the Translator, evaluation,
the export and the CLIs take a strategy as it is.

The searches never see the model (STYLE 8). They call
`step_fn(ids, state) -> (logits, state)` once per generated token: `ids` are
the tokens fed at this step (the start token first, then the previous
step's output), `state` is a nest of tensors the step function threads
through. `model_step_fn` builds that function for a model made by
`build_transformer`: the source is encoded once, the cross-attention
keys/values are projected once per sentence, and each step runs the very
decoder code path used in training (`TransformerParts.decode` with a cache)
on one token against a fixed-size self-attention cache.

Under XLA everything inside the loops has a fixed shape (preallocated id
buffers, fixed-size caches, masks instead of growing tensors), so the
searches compile with `tf.function(jit_compile=True)`; and they use core TensorFlow
ops only (no Addons `GatherTree`, no `py_function`), so a SavedModel made
from them runs in stock TF Serving (KNOWN_TRAPS 8). The default export has
no XLA function: TF Serving JIT-compiles them on CPU only when started with
`--xla_cpu_compilation_enabled` (`export_run(jit_compile=True)`).

The model's searches grow the self-attention cache between loop segments
(`CACHE_SEGMENTS`, `_segmented_loop`) instead of allocating all `L + 1`
slots at the start: the same steps in the same order, on a smaller cache
while the batch is short. Without XLA, where shapes may change from step
to step, the cache grows by one position a step (`GrowingCache`) and
finished sentences leave the batch (`drop_finished`, `Dropping`): a batch
then costs what its sentences need, not its slowest sentence's steps
times its size. Every form gives the same ids.

Returned ids follow one format everywhere: the tokens generated after the
start token, `end_id` last where a hypothesis finished, then PAD (0). PAD
itself is never generated, so a row's length is its count of non-PAD ids.

Shape legend: B batch, K beam size, N rows fed to `step_fn` (B for greedy
and sampling, B*K for beam search, row `i*K + k` is beam k of sentence i), b
rows (sentences) still searched by a search that drops finished ones, S source
length, L max length (generated tokens), C cache slots (L + 1), V target
vocabulary, D hidden dim, H heads, Dh head dim.
"""

from __future__ import annotations

import abc
import dataclasses
import numbers
import weakref
from typing import Any, ClassVar, NamedTuple

import tensorflow as tf

from keras_s2s.checks import check_bool, check_positive_int, check_real
from keras_s2s.layers.attention import GrowingCache
from keras_s2s.layers.masks import PAD_ID
from keras_s2s.models import DecoderCache, TransformerParts

_NEG_INF = float("-inf")


# --------------------------------------------------------------------------
# Search over a step function (knows nothing about the model).
# --------------------------------------------------------------------------


def gnmt_length_penalty(length, alpha):
    """The GNMT length penalty `((5 + length) / 6) ** alpha` (Wu et al. 2016).

    Args:
        length: number of generated tokens, END included (int or tensor).
        alpha: the exponent; 0 disables length normalisation.

    Returns:
        float32 tensor shaped like `length`.
    """
    length = tf.cast(length, tf.float32)
    return tf.pow((5.0 + length) / 6.0, tf.cast(alpha, tf.float32))


def expand_to_beams(state, beam_size):
    """Repeats every row of a nest of tensors `beam_size` times.

    Row b becomes rows `b*K .. b*K + K-1`, the layout `beam_search` expects.
    Rank-0 tensors (shared by all rows, e.g. a step counter) are kept as is.

    Args:
        state: nest of tensors with a leading batch axis (B, ...).
        beam_size: K.

    Returns:
        The same nest with leading axis B*K.
    """
    check_positive_int("beam_size", beam_size)

    def expand(tensor):
        tensor = tf.convert_to_tensor(tensor)
        if tensor.shape.rank == 0:
            return tensor
        return tf.repeat(tensor, beam_size, axis=0)  # (B*K, ...)

    return tf.nest.map_structure(expand, state)


# The per-sentence part of a search state: `state[SENTENCE_STATE]`, if the
# state is a dict that has it, holds tensors with one row per sentence (B, ...)
# that the K beam rows of a sentence share (the model's encoder output and
# cross-attention keys/values). The searches reorder every other tensor of
# rank >= 1 by row; these they only gather when they drop finished sentences.
SENTENCE_STATE = "per_sentence"


def reorder_state(state, rows, sentences=None):
    """The state's per-row tensors gathered at `rows` (N',), per-sentence ones at `sentences` (B',).

    Rank-0 tensors are shared by all rows and kept; `sentences=None` keeps
    the per-sentence tensors as they are.
    """

    def gather(indices):
        return lambda t: t if indices is None or t.shape.rank == 0 else tf.gather(t, indices)

    if isinstance(state, dict) and SENTENCE_STATE in state:
        return {
            key: tf.nest.map_structure(gather(sentences if key == SENTENCE_STATE else rows), value)
            for key, value in state.items()
        }
    return tf.nest.map_structure(gather(rows), state)


class Dropping(NamedTuple):
    """The rows a search still runs, and the results of those that left (`drop_finished`).

    A search that drops its finished rows (sentences, for beam search)
    carries this through its loop: b rows are still searched, of B. A row's
    results are written when it leaves; every row has left by step L (the
    limits are at most L), and `results` adds any still searched when the
    loop ends.
    """

    rows: tf.Tensor  # int32 (b,): each searched row's index in the batch (0..B-1)
    limits: tf.Tensor  # int32 (b,): their length limits
    ids: tf.Tensor  # int32 (B, ...): the ids of the rows that left
    scores: tf.Tensor  # float32 (B, ...): their scores

    @classmethod
    def start(cls, limits, ids, scores):
        """Every row searched; the result buffers start as the empty `ids` and `scores` (B, ...)."""
        return cls(tf.range(tf.shape(limits)[0]), limits, ids, scores)

    def drop(self, stopped, ids, scores):
        """Writes out the results of the `stopped` (b,) rows.

        Returns:
            `(dropping, keep)`: the rows still searched, and keep (b',) int32,
            their indices among the b, for the caller to gather its tensors.
        """
        done = tf.cast(tf.where(stopped)[:, 0], tf.int32)  # (d,)
        keep = tf.cast(tf.where(tf.logical_not(stopped))[:, 0], tf.int32)  # (b',)
        at = tf.gather(self.rows, done)[:, None]  # (d, 1)
        dropping = Dropping(
            rows=tf.gather(self.rows, keep),
            limits=tf.gather(self.limits, keep),
            ids=tf.tensor_scatter_nd_update(self.ids, at, tf.gather(ids, done)),
            scores=tf.tensor_scatter_nd_update(self.scores, at, tf.gather(scores, done)),
        )
        return dropping, keep

    def results(self, ids, scores):
        """All B rows' `(ids, scores)`: those that left and those still searched (b, ...)."""
        at = self.rows[:, None]  # (b, 1)
        return (
            tf.tensor_scatter_nd_update(self.ids, at, ids),
            tf.tensor_scatter_nd_update(self.scores, at, scores),
        )


class TokenLoopState(NamedTuple):
    """The loop state of the one-row-per-sentence searches (greedy, sampling), one field per loop variable.

    b rows are still searched: b = B, or fewer with `drop_finished`.
    """

    step: tf.Tensor  # int32 (): tokens generated so far
    ids: tf.Tensor  # int32 (b, L): generated ids, PAD after END and in steps not run
    last: tf.Tensor  # int32 (b,): the tokens fed to `step_fn` at this step
    finished: tf.Tensor  # bool (b,): emitted END or reached its length limit
    scores: tf.Tensor  # float32 (b,): sum of the model's log-probabilities of the generated ids
    # A `Dropping` with `drop_finished`; otherwise (), no loop variables: the
    # rows never change, and under XLA constant buffers passed through the
    # segmented loops unchanged failed to compile ("Cannot find body
    # function ..._const_0", TensorFlow 2.21).
    dropping: Any
    state: Any  # the nest of `step_fn`; last, where `_segmented_loop` grows it


def _token_loop(step_fn, pick, initial_ids, initial_state, *, end_id, max_length, max_lengths,
                pad_id, state_growth, drop_finished=False):
    """One token a step per row, chosen by `pick`: the loop of greedy search and sampling.

    `pick(logits, step, rows) -> ids`: float32 (b, V) logits and int32 (b,)
    batch indices of the rows -> int32 (b,) tokens, never PAD. Rows stop at
    `end_id` or their limit; the loop when all have. With `drop_finished`
    (see `beam_search`) finished rows leave the loop's batch.

    Returns:
        `(ids (B, L), scores (B,))`, scores the sum of the model's own
        log-probabilities (over the whole vocabulary, PAD included) of each
        row's ids.
    """
    check_positive_int("max_length", max_length)
    check_bool("drop_finished", drop_finished)
    initial_ids = tf.convert_to_tensor(initial_ids, tf.int32)  # (B,)
    batch_size = tf.shape(initial_ids)[0]
    all_limits = _row_limits(max_lengths, batch_size, max_length)  # (B,)
    columns = tf.range(max_length)[None, :]  # (1, L)
    pad = tf.cast(pad_id, tf.int32)

    def not_done(*loop_vars):
        loop = TokenLoopState(*loop_vars)
        return tf.logical_and(
            loop.step < max_length, tf.logical_not(tf.reduce_all(loop.finished))
        )

    def body(*loop_vars):
        loop = TokenLoopState(*loop_vars)
        if drop_finished:
            rows, limits = loop.dropping.rows, loop.dropping.limits  # (b,), (b,)
        else:
            rows, limits = tf.range(batch_size), all_limits
        logits, state = step_fn(loop.last, loop.state)  # (b, V)
        logits = tf.cast(logits, tf.float32)
        next_ids = pick(logits, loop.step, rows)  # (b,)
        logprob = tf.gather(logits, next_ids, batch_dims=1) - tf.reduce_logsumexp(
            logits, axis=-1
        )  # (b,)
        scores = loop.scores + tf.where(loop.finished, 0.0, logprob)
        next_ids = tf.where(loop.finished, pad, next_ids)
        # Writing column `step` through a mask keeps the buffer's shape fixed.
        ids = tf.where(columns == loop.step, next_ids[:, None], loop.ids)  # (b, L)
        finished = loop.finished | tf.equal(next_ids, end_id) | (loop.step + 1 >= limits)
        loop = loop._replace(
            step=loop.step + 1, ids=ids, last=next_ids, finished=finished, scores=scores,
            state=state,
        )
        if drop_finished:
            dropping, keep = loop.dropping.drop(finished, ids, scores)

            def kept_rows():
                return loop._replace(
                    ids=tf.gather(ids, keep), last=tf.gather(next_ids, keep),
                    finished=tf.gather(finished, keep), scores=tf.gather(scores, keep),
                    state=reorder_state(state, keep, sentences=keep),
                )

            # Gathers only on the steps where a row finished.
            loop = tf.cond(tf.reduce_any(finished), kept_rows, lambda: loop)._replace(
                dropping=dropping
            )
        return tuple(loop)

    ids = tf.fill([batch_size, max_length], pad)  # (B, L)
    scores = tf.zeros([batch_size], tf.float32)  # (B,)
    # A plain tuple: `tf.while_loop` and `_segmented_loop` take positional loop variables.
    loop_vars = tuple(
        TokenLoopState(
            step=tf.constant(0, tf.int32),
            ids=ids,
            last=initial_ids,
            finished=tf.zeros([batch_size], tf.bool),
            scores=scores,
            dropping=Dropping.start(all_limits, ids, scores) if drop_finished else (),
            state=initial_state,
        )
    )
    final = TokenLoopState(
        *_segmented_loop(not_done, body, loop_vars, max_length, state_growth,
                         dynamic_rows=drop_finished)
    )
    if drop_finished:
        return final.dropping.results(final.ids, final.scores)
    return final.ids, final.scores


def greedy_search(
    step_fn,
    initial_ids,
    initial_state,
    *,
    end_id,
    max_length,
    max_lengths=None,
    pad_id=PAD_ID,
    state_growth=None,
    drop_finished=False,
):
    """Greedy decoding: the most likely next token at every step.

    The loop stops as soon as every row has finished (emitted `end_id` or
    reached its length limit). The result keeps the fixed width
    `max_length` so that it compiles under XLA; `trim_ids` cuts it to the
    longest row.

    Args:
        step_fn: `step_fn(ids, state) -> (logits, state)`, ids (B,) int32,
            logits (B, V). Rows that have finished keep being fed PAD
            (their outputs are ignored), or leave with `drop_finished`.
        initial_ids: (B,) int, the start token of each row.
        initial_state: nest of tensors for `step_fn`; with `drop_finished`
            every tensor of rank >= 1 has one row per row of the batch (B,
            ...) and is gathered with the rows (see `reorder_state`).
        end_id: the END token id.
        max_length: L, most tokens generated per row (python int).
        max_lengths: optional (B,) int, per-row limits; capped by
            `max_length`, at least 1.
        pad_id: the PAD id: never generated, written after a row finishes.
        state_growth: optional `(boundaries, grow)`; see `_segmented_loop`.
        drop_finished: finished rows leave the batch, as in `beam_search`
            (not under XLA); `step_fn` then sees b <= B rows.

    Returns:
        `(ids, scores)`: int32 (B, L) generated ids, `end_id` last where a
        row finished, PAD after it and in steps that were not run; float32
        (B,) the sum of their log-probabilities (normalised over the whole
        vocabulary, PAD included, as in beam search).
    """
    def pick(logits, step, rows):
        return tf.argmax(_forbid_pad(logits, pad_id), axis=-1, output_type=tf.int32)  # (b,)

    return _token_loop(
        step_fn, pick, initial_ids, initial_state, end_id=end_id, max_length=max_length,
        max_lengths=max_lengths, pad_id=pad_id, state_growth=state_growth,
        drop_finished=drop_finished,
    )


class BeamLoopState(NamedTuple):
    """The loop state of `beam_search`, one field per loop variable.

    b sentences are still searched: b = B, or fewer with `drop_finished`.
    """

    step: tf.Tensor  # int32 (): tokens generated so far
    last: tf.Tensor  # int32 (b*K,): the tokens fed to `step_fn` at this step
    alive_ids: tf.Tensor  # int32 (b, K, L): the alive beams' ids
    alive_logprob: tf.Tensor  # float32 (b, K): their log-probabilities, -inf if not alive
    finished_ids: tf.Tensor  # int32 (b, K, L): the K best finished hypotheses
    finished_scores: tf.Tensor  # float32 (b, K): their penalised scores, -inf in empty slots
    dropping: Any  # a `Dropping` of sentences with `drop_finished`, else () (see `TokenLoopState`)
    state: Any  # the nest of `step_fn`; last, where `_segmented_loop` grows it


def beam_search(
    step_fn,
    initial_ids,
    initial_state,
    *,
    beam_size,
    end_id,
    max_length,
    length_penalty=0.6,
    early_stopping=True,
    max_lengths=None,
    pad_id=PAD_ID,
    state_growth=None,
    drop_finished=False,
):
    """Beam search with the GNMT length penalty and per-sentence finished lists.

    Each sentence keeps K alive beams and the K best finished hypotheses.
    At every step the 2K best extensions of the alive beams are ranked;
    those among the top K that end with `end_id` (or reach the sentence's
    length limit) become finished hypotheses, scored
    `log p / ((5 + len) / 6) ** length_penalty` with `len` counting END, and
    are never extended again; the K best extensions that did not finish stay
    alive. Only top-K extensions may finish, as in a width-K beam, so that
    `beam_size=1, length_penalty=0` is exactly greedy search.

    A sentence stops (its alive beams are dropped) once no alive beam can
    beat its best finished hypothesis: log-probabilities only fall as a
    hypothesis grows, so an alive beam's best reachable score is its
    log-probability under the largest penalty of the lengths it can still
    reach. That bound is loose when the penalty grows with the length (an
    alive beam could still win at `max_length`), so the exact search runs
    long after the best hypothesis has been found; with `early_stopping`
    (the default) a sentence also stops once it has K finished hypotheses,
    the rule of fairseq and Marian (Hugging Face's `early_stopping=True`).
    The loop ends when every sentence has stopped or after `max_length`
    steps. When beams are re-ranked, every tensor of rank >= 1
    in `state` is reordered along its leading (B*K) axis with `tf.gather`,
    except the per-sentence tensors under `state[SENTENCE_STATE]` (B, ...).

    With `drop_finished`, a sentence that stops leaves the batch: its
    hypotheses move to the output and the later steps run on the sentences
    still searched only, so a batch costs what its sentences need instead
    of its longest sentence's length times its size. The results are the
    same; the batch axis of the loop's tensors then changes from step to
    step, which XLA cannot compile (use it without XLA).

    Args:
        step_fn: `step_fn(ids, state) -> (logits, state)`, ids (B*K,) int32,
            logits (B*K, V), raw: they are normalised with log-softmax here.
            With `drop_finished`, ids and logits have b*K rows, b <= B.
        initial_ids: (B,) int, the start token of each sentence.
        initial_state: nest of tensors for B*K rows (see `expand_to_beams`);
            rank-0 tensors are shared by all rows and never reordered; a
            dict's `SENTENCE_STATE` entry holds per-sentence tensors (B, ...).
        beam_size: K.
        end_id: the END token id.
        max_length: L, most tokens generated per hypothesis (python int).
        length_penalty: alpha of the GNMT penalty; 0 ranks by log-probability.
        early_stopping: also stop a sentence once it has K finished
            hypotheses (fast; measured on Multi30k test2016 with alpha 1:
            2x the sentences/s, 6 of 1000 best hypotheses differ, same BLEU).
            False: only the exact bound stops a sentence (Hugging Face's
            `early_stopping="never"`).
        max_lengths: optional (B,) int, per-sentence limits; capped by
            `max_length`, at least 1. A hypothesis reaching its limit without
            END is finished as it is.
        pad_id: the PAD id: never generated, written after END.
        state_growth: optional `(boundaries, grow)`; see `_segmented_loop`.
        drop_finished: drop stopped sentences from the batch (not under XLA).

    Returns:
        `(ids, scores)`: int32 (B, K, L) finished hypotheses, best first,
        PAD after END; float32 (B, K) their length-penalised
        log-probabilities, -inf (and PAD ids) in slots left empty.
    """
    check_positive_int("beam_size", beam_size)
    check_positive_int("max_length", max_length)
    check_real("length_penalty", length_penalty)
    check_bool("early_stopping", early_stopping)
    check_bool("drop_finished", drop_finished)
    beams = beam_size
    initial_ids = tf.convert_to_tensor(initial_ids, tf.int32)  # (B,)
    batch_size = tf.shape(initial_ids)[0]
    columns = tf.range(max_length)[None, None, :]  # (1, 1, L)
    all_limits = _row_limits(max_lengths, batch_size, max_length)  # (B,)
    # Rank of each of the 2K candidates: only the top K may finish.
    in_beam = tf.range(2 * beams)[None, :] < beams  # (1, 2K)
    pad = tf.cast(pad_id, tf.int32)

    def penalised(logprob, length):
        return logprob / gnmt_length_penalty(length, length_penalty)

    def not_done(*loop_vars):
        loop = BeamLoopState(*loop_vars)
        # Stopped sentences have only -inf alive beams (or are gone).
        any_alive = tf.reduce_any(loop.alive_logprob > _NEG_INF)
        return tf.logical_and(loop.step < max_length, any_alive)

    def body(*loop_vars):
        loop = BeamLoopState(*loop_vars)
        step = loop.step
        sentences = tf.shape(loop.alive_logprob)[0]  # b
        limits = loop.dropping.limits if drop_finished else all_limits  # (b,)
        logits, state = step_fn(loop.last, loop.state)  # (b*K, V)
        logits = tf.cast(logits, tf.float32)
        # The 2K best extensions of a sentence are among the 2K best tokens of
        # each of its beams, so each row is ranked first and only those K*2K
        # are normalised and ranked again: no (b*K, V) log-probabilities are
        # written. 2K + 1: PAD may be one of them.
        row_logits, row_tokens, row_max = _top_tokens(logits, 2 * beams + 1, pad_id)  # (b*K, R)
        # Normalise over the whole vocabulary, PAD included, so scores are
        # the model's log-probabilities (logsumexp, with the row maxima that
        # the ranking found).
        log_normalizer = row_max + tf.math.log(
            tf.reduce_sum(tf.exp(logits - row_max), axis=-1, keepdims=True)
        )  # (b*K, 1)
        per_beam = row_logits.shape[-1]  # R, static: XLA and the loop's shapes need it
        candidates = loop.alive_logprob[:, :, None] + tf.reshape(
            row_logits - log_normalizer, [sentences, beams, per_beam]
        )  # (b, K, R)
        top_logprob, top_index = tf.math.top_k(
            tf.reshape(candidates, [sentences, beams * per_beam]), k=2 * beams  # (b, K*R)
        )  # (b, 2K)
        top_beam = top_index // per_beam  # (b, 2K)
        top_token = tf.gather(
            tf.reshape(row_tokens, [sentences, beams * per_beam]), top_index, batch_dims=1
        )  # (b, 2K)
        top_ids = tf.gather(loop.alive_ids, top_beam, batch_dims=1)  # (b, 2K, L)
        top_ids = tf.where(columns == step, top_token[:, :, None], top_ids)  # (b, 2K, L)

        length = step + 1
        at_limit = (length >= limits)[:, None]  # (b, 1)
        is_end = tf.equal(top_token, end_id)  # (b, 2K)

        # Alive: the K best extensions that neither ended nor hit the limit
        # (there are always K among 2K, since at most K of them end).
        continuing = tf.logical_not(is_end | at_limit)
        alive_logprob, pick = tf.math.top_k(
            tf.where(continuing, top_logprob, _NEG_INF), k=beams
        )  # (b, K)
        alive_ids = tf.gather(top_ids, pick, batch_dims=1)  # (b, K, L)
        last = tf.gather(top_token, pick, batch_dims=1)  # (b, K)
        # Row offsets turn a beam index within a sentence into a b*K row index.
        row_offsets = tf.range(sentences)[:, None] * beams  # (b, 1)
        rows = tf.gather(top_beam, pick, batch_dims=1) + row_offsets  # (b, K)

        # Finished: merge the new ones into the K best so far. Existing
        # entries come first, so on equal scores the older one is kept.
        finishing = in_beam & (is_end | at_limit)  # (b, 2K)
        new_scores = tf.where(finishing, penalised(top_logprob, length), _NEG_INF)
        finished_scores, pick = tf.math.top_k(
            tf.concat([loop.finished_scores, new_scores], axis=1), k=beams  # (b, 3K)
        )  # (b, K)
        finished_ids = tf.gather(
            tf.concat([loop.finished_ids, top_ids], axis=1), pick, batch_dims=1  # (b, 3K, L)
        )  # (b, K, L)

        # Early stop per sentence: drop its alive beams once none can beat
        # its best finished hypothesis. The penalty is monotone in the
        # length, so its largest reachable value is at one end of the range.
        largest_penalty = tf.maximum(
            gnmt_length_penalty(length + 1, length_penalty),
            gnmt_length_penalty(limits, length_penalty),
        )  # (b,)
        best_reachable = alive_logprob[:, 0] / largest_penalty  # (b,)
        stopped = finished_scores[:, 0] >= best_reachable  # (b,)
        if early_stopping:
            stopped |= finished_scores[:, -1] > _NEG_INF  # K finished
        searched = (alive_ids, alive_logprob, finished_ids, finished_scores, last, rows)
        if drop_finished:
            # Stopped sentences leave the batch with their finished
            # hypotheses; the others' rows are kept in the same gather that
            # reorders the beams.
            dropping, keep = loop.dropping.drop(stopped, finished_ids, finished_scores)

            def kept_sentences():
                kept = tuple(tf.gather(t, keep) for t in searched)
                return kept, reorder_state(state, tf.reshape(kept[-1], [-1]), sentences=keep)

            def every_sentence():
                return searched, reorder_state(state, tf.reshape(rows, [-1]))

            # Gathers the sentences only on the steps where one stopped.
            searched, state = tf.cond(tf.reduce_any(stopped), kept_sentences, every_sentence)
        else:
            dropping = ()
            searched = (*searched[:1], tf.where(stopped[:, None], _NEG_INF, alive_logprob),
                        *searched[2:])
            state = reorder_state(state, tf.reshape(rows, [-1]))
        alive_ids, alive_logprob, finished_ids, finished_scores, last, rows = searched
        return tuple(
            BeamLoopState(
                step + 1, tf.reshape(last, [-1]), alive_ids, alive_logprob, finished_ids,
                finished_scores, dropping, state,
            )
        )

    # One live beam per sentence at first: the K copies of the start state
    # are identical, and -inf keeps K-1 of them from being ranked.
    first_alive = tf.concat(
        [tf.zeros([1], tf.float32), tf.fill([beams - 1], _NEG_INF)], axis=0
    )  # (K,)
    empty_ids = tf.fill([batch_size, beams, max_length], pad)  # (B, K, L)
    no_scores = tf.fill([batch_size, beams], _NEG_INF)  # (B, K)
    loop_vars = tuple(
        BeamLoopState(
            step=tf.constant(0, tf.int32),
            last=tf.repeat(initial_ids, beams),  # (B*K,)
            alive_ids=empty_ids,
            alive_logprob=tf.tile(first_alive[None, :], [batch_size, 1]),  # (B, K)
            finished_ids=empty_ids,
            finished_scores=no_scores,
            dropping=Dropping.start(all_limits, empty_ids, no_scores) if drop_finished else (),
            state=initial_state,
        )
    )
    final = BeamLoopState(
        *_segmented_loop(not_done, body, loop_vars, max_length, state_growth,
                         dynamic_rows=drop_finished)
    )
    finished_ids, finished_scores = final.finished_ids, final.finished_scores
    if drop_finished:
        finished_ids, finished_scores = final.dropping.results(finished_ids, finished_scores)
    # Empty slots may hold the ids of -inf candidates; make them PAD.
    finished_ids = tf.where(
        (finished_scores > _NEG_INF)[:, :, None], finished_ids, pad
    )  # (B, K, L)
    return finished_ids, finished_scores


def sampling_search(
    step_fn,
    initial_ids,
    initial_state,
    *,
    temperature,
    top_k,
    top_p,
    seed,
    end_id,
    max_length,
    max_lengths=None,
    pad_id=PAD_ID,
    state_growth=None,
    drop_finished=False,
):
    """Ancestral sampling: each next token drawn from the model's distribution.

    At every step the logits are divided by `temperature`, cut to the
    `top_k` most likely tokens and then to the nucleus (the fewest most
    likely tokens whose probability reaches `top_p`; the most likely token
    always stays), and one token is drawn from the rest (Gumbel-max: the
    argmax of logits plus Gumbel noise). PAD is never drawn. Tokens tied
    with the last one kept by `top_k` or `top_p` are kept too.

    The noise is a counter hash of (seed, step, row, token) in core integer
    ops, not TensorFlow's stateless random ops, whose XLA kernels draw other
    numbers than their TensorFlow ones: with a seed, the same rows give the
    same ids with and without XLA, in process and in a SavedModel, and a row
    draws the same noise whatever the batch size (a row's draws do depend on
    its position in the batch). `seed=None` draws a fresh seed in the graph
    at every call (a stateful core op, so it also does in TF Serving).

    Args:
        step_fn: `step_fn(ids, state) -> (logits, state)`, ids (B,) int32,
            logits (B, V). Rows that have finished keep being fed PAD,
            or leave with `drop_finished`.
        initial_ids: (B,) int, the start token of each row.
        initial_state: nest of tensors for `step_fn` (see `greedy_search`).
        temperature: > 0; the logits are divided by it before sampling.
        top_k: sample among the k most likely tokens; 0 = all (python int).
        top_p: nucleus mass in (0, 1]; 1 = no nucleus cut (python float).
        seed: python int in [0, 2**63), or None for a new seed per call.
        end_id: the END token id.
        max_length: L, most tokens generated per row (python int).
        max_lengths: optional (B,) int, per-row limits; capped by
            `max_length`, at least 1.
        pad_id: the PAD id: never sampled, written after a row finishes.
        state_growth: optional `(boundaries, grow)`; see `_segmented_loop`.
        drop_finished: finished rows leave the batch (see `greedy_search`).

    Returns:
        `(ids, scores)`: int32 (B, L) sampled ids, `end_id` last where a
        row finished, PAD after it; float32 (B,) the sum of the model's own
        log-probabilities (before temperature and cuts) of each row's ids.
    """
    _check_sampling_options(temperature, top_k, top_p, seed)
    if seed is None:
        key = tf.bitcast(
            tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32), tf.uint32
        )  # (2,)
    else:
        key = tf.constant([seed >> 32, seed & 0xFFFFFFFF], tf.uint32)  # (2,)

    def pick(logits, step, rows):
        allowed = _cut_logits(_forbid_pad(logits, pad_id) / temperature, top_k, top_p)  # (b, V)
        noise = _gumbel_noise(key, step, rows, logits.shape[-1] or tf.shape(logits)[-1])  # (b, V)
        return tf.argmax(allowed + noise, axis=-1, output_type=tf.int32)  # (b,)

    return _token_loop(
        step_fn, pick, initial_ids, initial_state, end_id=end_id, max_length=max_length,
        max_lengths=max_lengths, pad_id=pad_id, state_growth=state_growth,
        drop_finished=drop_finished,
    )


def _cut_logits(logits, top_k, top_p):
    """(N, V) logits with the tokens outside the top k and the top-p nucleus at -inf."""
    if top_k:
        k = min(top_k, logits.shape[-1] or top_k)
        kth = tf.math.top_k(logits, k=k).values[:, -1:]  # (N, 1)
        logits = tf.where(logits < kth, _NEG_INF, logits)
    if top_p < 1.0:
        ranked = tf.sort(logits, axis=-1, direction="DESCENDING")  # (N, V)
        mass_before = tf.math.cumsum(tf.nn.softmax(ranked), axis=-1, exclusive=True)  # (N, V)
        # The nucleus: every token whose more likely tokens hold less than top_p.
        smallest = tf.reduce_min(
            tf.where(mass_before < top_p, ranked, float("inf")), axis=-1, keepdims=True
        )  # (N, 1)
        logits = tf.where(logits < smallest, _NEG_INF, logits)
    return logits


def _gumbel_noise(key, step, rows, vocabulary):
    """Gumbel(0, 1) noise (N, V) hashed from the key (2,) uint32, the step and (row, token).

    `rows` (N,) int32 are the rows' indices in the batch, so a row gets the
    same noise whichever rows are still in the loop's batch.
    """
    counter = rows[:, None] * vocabulary + tf.range(vocabulary)[None, :]  # (N, V)
    xor = tf.bitwise.bitwise_xor
    step_key = _mix32(xor(key[0], _mix32(xor(key[1], _mix32(tf.bitcast(step, tf.uint32) * _GOLDEN)))))
    bits = _mix32(xor(_mix32(xor(tf.bitcast(counter, tf.uint32), step_key)), key[1]))  # (N, V)
    # 24 random bits, centred in their interval: uniform in (0, 1), never 0 or 1.
    uniform = (tf.cast(_shift(bits, 8), tf.float32) + 0.5) * (1.0 / (1 << 24))
    return -tf.math.log(-tf.math.log(uniform))


_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: spreads consecutive steps over the 32 bits


def _mix32(x):
    """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability ~1/2."""
    x = tf.bitwise.bitwise_xor(x, _shift(x, 16)) * tf.constant(0x85EBCA6B, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, _shift(x, 13)) * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(x, _shift(x, 16))


def _shift(x, bits):
    return tf.bitwise.right_shift(x, tf.constant(bits, tf.uint32))


def trim_ids(ids, pad_id=PAD_ID):
    """Cuts (B, L) ids to the longest row, (B, L') with L' <= L.

    Not for use under XLA: the result's width depends on the values.
    """
    ids = tf.convert_to_tensor(ids)
    lengths = tf.reduce_sum(tf.cast(tf.not_equal(ids, pad_id), tf.int32), axis=1)  # (B,)
    return ids[:, : tf.maximum(tf.reduce_max(lengths), 0)]


def _segmented_loop(not_done, body, loop_vars, max_length, state_growth, dynamic_rows=False):
    """`tf.while_loop` over the search's steps, its state grown between segments.

    `loop_vars` is `(step, ..., state)`. Without `state_growth` this is one
    loop of at most `max_length` steps. With `(boundaries, grow)`, boundaries
    `b_1 < b_2 < ...` (python ints below `max_length`): the first loop runs
    while `step < b_1`, then `state = grow(state, 0)`, the next while
    `step < b_2`, then `grow(state, 1)`, ..., the last while `step <
    max_length`; each loop also stops when `not_done` does. The steps run
    and their order are those of the single loop, so the result is the
    same; what changes is that each loop has fixed shapes of its own. The
    model's search uses it to start with a small self-attention cache and
    enlarge it only for the batches that run long (`CACHE_SEGMENTS`): every
    step reads, writes and (beam search) reorders the whole cache, so its
    cost grows with the capacity, not with the step. Segments after the
    loop finished run no step.

    `dynamic_rows`: the leading axis of the loop's tensors may change from
    step to step (searches that drop finished rows).
    """
    if state_growth is None:
        return tf.while_loop(
            not_done,
            body,
            loop_vars,
            maximum_iterations=max_length,
            shape_invariants=_loop_shapes(loop_vars, dynamic_rows),
        )
    boundaries, grow = state_growth
    boundaries = [b for b in boundaries if b < max_length]
    if boundaries != sorted(set(boundaries)) or (boundaries and boundaries[0] < 1):
        raise ValueError(
            "`state_growth` boundaries must be increasing positive step counts; "
            f"received {state_growth[0]!r}"
        )
    for segment, end in enumerate([*boundaries, max_length]):

        def segment_not_done(step, *rest, end=end):
            return tf.logical_and(step < end, not_done(step, *rest))

        loop_vars = tf.while_loop(
            segment_not_done,
            body,
            loop_vars,
            maximum_iterations=end,
            shape_invariants=_loop_shapes(loop_vars, dynamic_rows),
        )
        if segment < len(boundaries):
            loop_vars = (*loop_vars[:-1], grow(loop_vars[-1], segment))
    return loop_vars


def _loop_shapes(loop_vars, dynamic_rows=False):
    """`tf.while_loop`'s shape invariants, None (shapes fixed) when nothing changes shape.

    The slot axis of every `GrowingCache` is unknown; with `dynamic_rows`,
    the leading axis of every tensor of rank >= 1 too.
    """
    found = []

    def invariant(tensor, slot_axis=None):
        shape = tf.convert_to_tensor(tensor).shape
        if shape.rank is None:
            return shape
        dims = list(shape)
        if dynamic_rows and dims:
            dims[0] = None
        if slot_axis is not None:
            dims[slot_axis] = None
        return tf.TensorShape(dims)

    def shapes(value):
        if isinstance(value, GrowingCache):
            found.append(value)
            return GrowingCache(*(invariant(t, slot_axis=2) for t in value))
        if isinstance(value, dict):
            return {key: shapes(item) for key, item in value.items()}
        if isinstance(value, (tuple, list)):
            items = [shapes(item) for item in value]
            return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
        return invariant(value)

    invariants = shapes(loop_vars)
    return invariants if found or dynamic_rows else None


# Vocabulary block of `_top_tokens`: a row's k best tokens lie in its k blocks
# with the highest maxima, so only those k*64 logits are ranked exactly.
_RANKING_BLOCK = 64


def _top_tokens(logits, k, pad_id):
    """The k highest logits of each row, their tokens and the row maximum.

    `tf.math.top_k` over whole rows of a large vocabulary was most of beam
    search's own cost (8-11 ms a step for 256 rows x 8000 on a 2-core CPU,
    with and without XLA). Ranking 64-token blocks by their maxima first and
    then only the tokens of the k best blocks gives the same tokens in the
    same order (ties to the lower id, as `top_k`), at about 4 ms.

    Args:
        logits: float32 (N, V); V must be static.
        k: how many per row; capped at V.
        pad_id: its logit is ranked as -inf (never chosen), or None.

    Returns:
        `(values, tokens, row_max)`: float32 and int32 (N, R), R = min(k, V),
        in decreasing order of the logits (a PAD among them keeps its place
        with value -inf); float32 (N, 1) the maximum of each row, PAD included.
    """
    vocabulary = logits.shape[-1]
    if vocabulary is None:
        raise ValueError("beam search needs the vocabulary size (the logits' last axis) "
                         "to be known when the search is traced")
    k = min(k, vocabulary)
    blocks = -(-vocabulary // _RANKING_BLOCK)
    if blocks <= 2 * k:  # too few blocks to save anything: rank the rows whole
        values, tokens = tf.math.top_k(logits, k=k)
        row_max = tf.reduce_max(logits, axis=-1, keepdims=True)
    else:
        padded = tf.pad(
            logits, [[0, 0], [0, blocks * _RANKING_BLOCK - vocabulary]], constant_values=_NEG_INF
        )
        rows = tf.shape(logits)[0]
        blocked = tf.reshape(padded, [rows, blocks, _RANKING_BLOCK])  # (N, V/64, 64)
        block_max = tf.reduce_max(blocked, axis=-1)  # (N, V/64)
        row_max = tf.reduce_max(block_max, axis=-1, keepdims=True)  # (N, 1)
        _, best_blocks = tf.math.top_k(block_max, k=k)  # (N, k)
        # In id order, so that ties among the gathered logits go to the lower id.
        best_blocks = tf.sort(best_blocks, axis=-1)
        gathered = tf.reshape(
            tf.gather(blocked, best_blocks, batch_dims=1), [rows, k * _RANKING_BLOCK]
        )  # (N, k*64)
        values, position = tf.math.top_k(gathered, k=k)  # (N, k)
        tokens = (
            tf.gather(best_blocks, position // _RANKING_BLOCK, batch_dims=1) * _RANKING_BLOCK
            + position % _RANKING_BLOCK
        )
    if pad_id is not None:
        values = tf.where(tokens == pad_id, _NEG_INF, values)
    return values, tokens, row_max


def _forbid_pad(scores, pad_id):
    """Sets the PAD column of (..., V) scores to -inf."""
    if pad_id is None:
        return scores
    vocabulary = tf.shape(scores)[-1]
    return tf.where(tf.range(vocabulary) == pad_id, _NEG_INF, scores)


def _row_limits(max_lengths, batch_size, max_length):
    """Per-row limits (B,) int32 in [1, max_length]."""
    if max_lengths is None:
        return tf.fill([batch_size], tf.constant(max_length, tf.int32))
    return tf.clip_by_value(tf.cast(max_lengths, tf.int32), 1, max_length)


# --------------------------------------------------------------------------
# The model's step function and its cache.
# --------------------------------------------------------------------------


def model_step_fn(
    model, encoder_tokens, *, max_length, beam_size=1, cache_capacity=None, growing_cache=False
):
    """Encodes the source once and returns the model's `(step_fn, initial_state)`.

    Step i feeds the token at position i (the start token at position 0)
    and returns the logits of position i + 1. The self-attention cache has
    `max_length + 1` slots, so the target positional embedding of the
    model must hold `max_length + 1` positions.

    The encoder output, source mask and cross-attention keys/values do not
    change during the search; they keep one row per sentence (B), also for
    beam search (`CrossAttention` lets the K rows of a sentence share
    them), in the state's per-sentence part (`SENTENCE_STATE`), so beam
    search reorders only the self-attention caches and a search that drops
    finished sentences can drop theirs. Build both inside the
    `tf.function` that runs the search.

    Args:
        model: a model from `build_transformer` (or reloaded from `.keras`),
            or its `TransformerParts`.
        encoder_tokens: int (B, S) source ids, PAD = 0.
        max_length: L, most tokens the search will generate.
        beam_size: K; the state has B*K rows (1 for greedy search).
        cache_capacity: C, self-attention cache slots of the initial state
            (default `max_length + 1`, enough for the whole search); a
            smaller cache must be grown (`grow_cache_state`) before step C.
        growing_cache: self-attention caches that grow by one position a
            step (`GrowingCache`, (N, H, t, Dh) after t steps) instead of
            fixed-size ones; faster without XLA, which cannot compile them.

    Returns:
        `(step_fn, initial_state)`. `state` is
        `{"index": int32 scalar position of the next fed token,
        "self_attention": tuple, per decoder layer, of (keys, values), each
        (N, H, C, Dh), heads-major, SENTENCE_STATE: {"encoder_output":
        (B, S, D), "source_mask": (B, S), "cross_attention": tuple, per
        layer, of (keys, values), each (B, H, S, Dh)}}`.
    """
    parts = model if isinstance(model, TransformerParts) else TransformerParts.from_model(model)
    check_positive_int("beam_size", beam_size)
    _check_max_length(parts, max_length)
    encoder_tokens = tf.convert_to_tensor(encoder_tokens, tf.int32)
    encoder_output, source_mask = parts.encode(encoder_tokens)  # (B, S, D), (B, S)
    cache = parts.initial_cache(
        encoder_output, cache_capacity or max_length + 1, growing=growing_cache
    )
    self_attention = cache.self_attention  # per layer 2 x (B, H, C, Dh)
    if beam_size > 1:
        self_attention = expand_to_beams(self_attention, beam_size)  # 2 x (B*K, H, C, Dh)
    # Projected once per sentence and never repeated: cross-attention lets
    # the K beam rows of sentence b share its keys, values and source mask.
    sentences = {
        "encoder_output": encoder_output,  # (B, S, D)
        "source_mask": source_mask,  # (B, S)
        "cross_attention": tuple(cache.cross_attention),  # per layer 2 x (B, H, S, Dh)
    }

    def step_fn(ids, state):
        sentences = state[SENTENCE_STATE]
        logits, new_cache = parts.decode(
            ids[:, None],  # (N, 1)
            sentences["encoder_output"],
            sentences["source_mask"],
            caches=DecoderCache(
                tuple(state["self_attention"]), tuple(sentences["cross_attention"])
            ),
            cache_index=state["index"],
        )  # (N, 1, V)
        new_state = {
            **state,
            "index": state["index"] + 1,
            "self_attention": tuple(new_cache.self_attention),
        }
        return logits[:, 0], new_state  # (N, V)

    initial_state = {
        "index": tf.constant(0, tf.int32),
        "self_attention": tuple(self_attention),
        SENTENCE_STATE: sentences,
    }
    return step_fn, initial_state


def grow_cache_state(state, capacity):
    """The state of `model_step_fn` with its self-attention caches padded to `capacity` slots.

    The new slots are zeros, like the unwritten slots of a fresh cache: the
    causal mask hides every slot after the position being decoded.
    """

    def grow(cache):
        slots = cache.shape[2] if cache.shape[2] is not None else tf.shape(cache)[2]
        extra = capacity - slots
        return tf.pad(cache, [[0, 0], [0, 0], [0, extra], [0, 0]])  # (N, H, capacity, Dh)

    return {**state, "self_attention": tf.nest.map_structure(grow, state["self_attention"])}


# The model's searches start with this many self-attention cache slots and
# grow to the next capacity, then to the full `max_length + 1`, only when a
# batch runs that long (`_segmented_loop`). A step's cost grows with the cache
# (beam search reorders all of it every step), and short sentences finish in
# the first segment. Three segments: each is a loop of its own in the graph.
CACHE_SEGMENTS = (16, 32, 64)


# --------------------------------------------------------------------------
# Decoding strategies: what to search with, as small immutable objects.
# --------------------------------------------------------------------------


class Strategy(abc.ABC):
    """A decoding strategy: its options, and its search over a step function.

    Strategies are frozen dataclasses: hashable (traced searches are cached
    per strategy), comparable, and written as plain dicts (`to_dict`,
    `strategy_from_dict`) in a run's metrics and an export's metadata.
    Adding one is a subclass here (its `name`, `FLAGS`, checks in
    `__post_init__` and `search`) and its tests; `decode`, the Translator,
    evaluation, the export and the CLIs take it as it is.

    Class attributes:
        name: what `to_dict` and `--strategy` call it.
        FLAGS: its command-line options (argparse dests, e.g. "beam_size")
            -> its fields (e.g. "size"); see `strategy_from_flags`.
    """

    name: ClassVar[str]
    FLAGS: ClassVar[dict[str, str]]

    @property
    def rows_per_sentence(self) -> int:
        """Rows fed to `step_fn` per sentence: the initial state has B times this many."""
        return 1

    @abc.abstractmethod
    def search(
        self,
        step_fn,
        initial_ids,
        initial_state,
        *,
        end_id,
        max_length,
        max_lengths=None,
        pad_id=PAD_ID,
        state_growth=None,
        drop_finished=False,
    ):
        """Runs the search, in the graph: the arguments of `greedy_search`.

        `initial_state` holds B * `rows_per_sentence` rows (B in its
        `SENTENCE_STATE` part).

        Returns:
            `(ids, scores)`: int32 (B, L) one hypothesis per sentence, in the
            format of `greedy_search`; float32 (B,) its score.
        """

    def to_dict(self) -> dict[str, Any]:
        """`{"name": ..., **fields}`, plain JSON values; `strategy_from_dict` reads it back."""
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class Greedy(Strategy):
    """The most likely token at every step; scores are log-probability sums.

    Example:
    >>> ids, scores = decode(model, encoder_tokens, Greedy(), start_id=2, end_id=3, max_length=40)
    """

    name: ClassVar[str] = "greedy"
    FLAGS: ClassVar[dict[str, str]] = {}

    def search(self, step_fn, initial_ids, initial_state, *, end_id, max_length,
               max_lengths=None, pad_id=PAD_ID, state_growth=None, drop_finished=False):
        return greedy_search(
            step_fn, initial_ids, initial_state, end_id=end_id, max_length=max_length,
            max_lengths=max_lengths, pad_id=pad_id, state_growth=state_growth,
            drop_finished=drop_finished,
        )


@dataclasses.dataclass(frozen=True)
class Beam(Strategy):
    """Beam search (`beam_search`): K beams, the GNMT length penalty.

    Scores are length-penalised log-probabilities. `size=1` is greedy search
    (the same ids as `Greedy()`), scored with the length penalty.

    Args:
        size: K, the beam size.
        length_penalty: alpha of the GNMT penalty `((5 + len) / 6) ** alpha`, >= 0.
        early_stopping: a sentence stops once it has K finished hypotheses
            (fairseq's and Marian's rule); False runs each sentence until no
            alive beam can beat its best finished one (exact, slower). See
            `beam_search`.
    """

    size: int = 4
    length_penalty: float = 0.6
    early_stopping: bool = True
    name: ClassVar[str] = "beam"
    FLAGS: ClassVar[dict[str, str]] = {"beam_size": "size", "length_penalty": "length_penalty"}

    def __post_init__(self):
        check_positive_int("size", self.size)
        check_real("length_penalty", self.length_penalty)
        if not 0 <= self.length_penalty < float("inf"):
            raise ValueError(
                "`length_penalty` must be a finite number >= 0 (0 ranks by log-probability); "
                f"received length_penalty={self.length_penalty!r}"
            )
        object.__setattr__(self, "length_penalty", float(self.length_penalty))
        check_bool("early_stopping", self.early_stopping)

    @classmethod
    def from_train_settings(cls, settings: dict) -> Beam:
        """A run's strategy from its train config dict (`beam_size`, `length_penalty`).

        Runs store no strategy, only those two (size 1: greedy); missing ones
        take the defaults, so every run directory loads.
        """
        return cls(
            size=settings.get("beam_size", cls.size),
            length_penalty=settings.get("length_penalty", cls.length_penalty),
        )

    @property
    def rows_per_sentence(self) -> int:
        return self.size

    def search(self, step_fn, initial_ids, initial_state, *, end_id, max_length,
               max_lengths=None, pad_id=PAD_ID, state_growth=None, drop_finished=False):
        if self.size == 1:
            # As the Translator always did: greedy ids (a width-1 beam with a
            # length penalty may prefer a longer hypothesis), penalised scores.
            ids, logprobs = greedy_search(
                step_fn, initial_ids, initial_state, end_id=end_id, max_length=max_length,
                max_lengths=max_lengths, pad_id=pad_id, state_growth=state_growth,
                drop_finished=drop_finished,
            )
            lengths = tf.reduce_sum(tf.cast(tf.not_equal(ids, pad_id), tf.int32), axis=1)  # (B,)
            return ids, logprobs / gnmt_length_penalty(lengths, self.length_penalty)
        ids, scores = beam_search(
            step_fn, initial_ids, initial_state, beam_size=self.size, end_id=end_id,
            max_length=max_length, length_penalty=self.length_penalty,
            early_stopping=self.early_stopping, max_lengths=max_lengths, pad_id=pad_id,
            state_growth=state_growth, drop_finished=drop_finished,
        )  # (B, K, L), (B, K)
        return ids[:, 0], scores[:, 0]  # (B, L), (B,)


@dataclasses.dataclass(frozen=True)
class Sampling(Strategy):
    """Random sampling (`sampling_search`), with temperature, top-k and top-p cuts.

    Scores are the sums of the model's log-probabilities of the sampled ids.
    `top_k=1` is greedy search.

    Args:
        temperature: > 0; below 1 sharpens the distribution, above 1 flattens it.
        top_k: sample among the k most likely tokens; 0 = no cut.
        top_p: sample within the nucleus of this mass, in (0, 1]; 1 = no cut.
        seed: an int in [0, 2**63): the same sources give the same samples
            (also under XLA and in an export); None: new samples every call.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    name: ClassVar[str] = "sampling"
    FLAGS: ClassVar[dict[str, str]] = {
        "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "seed": "seed"
    }

    def __post_init__(self):
        _check_sampling_options(self.temperature, self.top_k, self.top_p, self.seed)
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))

    def search(self, step_fn, initial_ids, initial_state, *, end_id, max_length,
               max_lengths=None, pad_id=PAD_ID, state_growth=None, drop_finished=False):
        return sampling_search(
            step_fn, initial_ids, initial_state, temperature=self.temperature,
            top_k=self.top_k, top_p=self.top_p, seed=self.seed, end_id=end_id,
            max_length=max_length, max_lengths=max_lengths, pad_id=pad_id,
            state_growth=state_growth, drop_finished=drop_finished,
        )


STRATEGIES = {cls.name: cls for cls in (Greedy, Beam, Sampling)}


def strategy_from_dict(values: dict) -> Strategy:
    """The strategy of a `Strategy.to_dict()` dict, e.g. `{"name": "beam", "size": 5}`.

    Fields left out take their defaults; unknown names and fields are errors.
    """
    if not isinstance(values, dict) or values.get("name") not in STRATEGIES:
        raise ValueError(
            f"a decoding strategy dict needs a `name`, one of {', '.join(STRATEGIES)}; "
            f"received {values!r}"
        )
    cls = STRATEGIES[values["name"]]
    fields = {key: value for key, value in values.items() if key != "name"}
    known = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ValueError(
            f"unknown field(s) {unknown} of strategy {cls.name!r}; its fields are {known}"
        )
    return cls(**fields)


def strategy_from_flags(name, options, default) -> Strategy:
    """The strategy that the command-line flags `--strategy NAME --OPTION VALUE ...` ask for.

    Args:
        name: "greedy", "beam" or "sampling"; None keeps the kind of `default`.
        options: `{dest: value}` of every strategy flag (the keys of the
            strategies' `FLAGS`, e.g. "beam_size", "top_k"); None = not given.
        default: the strategy without flags (a run's: `Beam.from_train_settings`);
            flags not given keep its values when it is of the chosen kind,
            else the chosen strategy's defaults.

    Raises:
        ValueError: naming the flag that belongs to another strategy, or the
            option and value that the strategy rejects.
    """
    kind = default.name if name is None else name
    if kind not in STRATEGIES:
        raise ValueError(f"`--strategy` must be one of {', '.join(STRATEGIES)}; received {kind!r}")
    cls = STRATEGIES[kind]
    given = {dest: value for dest, value in options.items() if value is not None}
    for dest in given:
        if dest not in cls.FLAGS:
            owners = [other.name for other in STRATEGIES.values() if dest in other.FLAGS]
            flag = "--" + dest.replace("_", "-")
            chosen = f"--strategy {kind}" if name else f"the run's strategy ({kind})"
            raise ValueError(
                f"{flag} is an option of --strategy {' / '.join(owners)}, not of {chosen}; "
                f"drop {flag} or pass --strategy {owners[0]}"
            )
    fields = dataclasses.asdict(default) if isinstance(default, cls) else {}
    fields.update({cls.FLAGS[dest]: value for dest, value in given.items()})
    try:
        return cls(**fields)
    except ValueError as error:
        flags = " ".join(f"--{dest.replace('_', '-')} {value}" for dest, value in given.items())
        raise ValueError(f"{error} (from {flags or 'the run'})") from None


# --------------------------------------------------------------------------
# The public entry point: a model, a batch of sources, a strategy.
# --------------------------------------------------------------------------


def decode(
    model,
    encoder_tokens,
    strategy,
    *,
    start_id,
    end_id,
    max_length,
    max_length_ratio=None,
    max_length_offset=0,
    jit_compile=False,
):
    """Decodes a batch with the model's KV cache and a strategy.

    Args:
        model: a model from `build_transformer` (or reloaded from `.keras`).
        encoder_tokens: int (B, S) source ids, PAD = 0.
        strategy: `Greedy()`, `Beam(size, length_penalty)` or
            `Sampling(temperature, top_k, top_p, seed)`.
        start_id: the start token fed first.
        end_id: the END token; a hypothesis is finished once it emits it.
        max_length: most tokens generated per row; the model must hold
            `max_length + 1` target positions.
        max_length_ratio, max_length_offset: optional per-row limits
            `floor(ratio * source_length + offset)`, capped by `max_length`,
            at least 1; `None` ratio means no per-row limit.
        jit_compile: compile the whole search with XLA. Off by default, as
            in `Translator` and the exported SavedModel: without XLA finished
            sentences leave the batch, which pays for large batches
            (`Translator.uses_xla` has the figures). XLA pays for streams of
            small requests once compiled; it compiles once per (B, S)
            shape, and S is padded to a multiple of 8 to bound that
            (KNOWN_TRAPS 9).

    Returns:
        `(ids, scores)`: int32 (B, L), L <= max_length, the generated ids
        after the start token, `end_id` last where a row finished, PAD (0)
        after it; float32 (B,) their scores (greedy and sampling: the sum
        of log-probabilities; beam: length-penalised).

    Example:
    >>> ids, scores = decode(model, encoder_tokens, Beam(size=4), start_id=2, end_id=3,
    ...                      max_length=40)
    """
    search = _compiled_search(
        model,
        strategy,
        dict(
            start_id=start_id,
            end_id=end_id,
            max_length=max_length,
            max_length_ratio=max_length_ratio,
            max_length_offset=max_length_offset,
        ),
        jit_compile,
    )
    ids, scores = search(_source_batch(model, encoder_tokens, jit_compile))
    return trim_ids(ids), scores


# Traced searches per model, keyed by (strategy, options, jit_compile). Weak
# keys and a weak reference inside the traced function, so a model that is no
# longer used is freed together with its compiled searches.
_SEARCHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _compiled_search(model, strategy, options, jit_compile):
    """The one `tf.function` (B, S) ids -> (ids, scores), cached per model, strategy and options."""
    check_strategy(strategy)
    _check_decode_options(model, options)
    if not isinstance(jit_compile, bool):
        raise ValueError(
            f"`jit_compile` must be True or False; received jit_compile={jit_compile!r}"
        )
    key = (strategy, tuple(sorted(options.items())), jit_compile)
    searches = _SEARCHES.setdefault(model, {})
    if key not in searches:
        searches[key] = _trace_search(weakref.ref(model), strategy, options, jit_compile)
    return searches[key]


def search_in_graph(
    model,
    encoder_tokens,
    *,
    strategy,
    start_id,
    end_id,
    max_length,
    max_length_ratio=None,
    max_length_offset=0,
    cache_segments=CACHE_SEGMENTS,
    growing_cache=False,
):
    """The whole search as plain TensorFlow ops, to run inside a caller's `tf.function`.

    `decode` traces this once per model and strategy; the SavedModel export
    calls it inside its serving function.

    Args:
        model: a model from `build_transformer`, or its `TransformerParts`.
        encoder_tokens: int32 (B, S).
        strategy: a `Strategy`.
        cache_segments: step counts at which the self-attention cache grows
            (see `CACHE_SEGMENTS`); () allocates the whole cache at once.
        growing_cache: a cache that grows every step (`GrowingCache`) instead
            of fixed-size segments, and finished sentences dropped from the
            batch (`drop_finished`): faster without XLA, not compilable with it.
        (the rest as in `decode`.)

    Returns:
        `(ids (B, max_length), scores (B,))`, as `Strategy.search`.
    """
    check_strategy(strategy)
    batch_size = tf.shape(encoder_tokens)[0]
    start_ids = tf.fill([batch_size], tf.constant(start_id, tf.int32))
    max_lengths = None
    if max_length_ratio is not None:
        source_lengths = tf.reduce_sum(
            tf.cast(tf.not_equal(encoder_tokens, PAD_ID), tf.float32), axis=1
        )  # (B,)
        max_lengths = tf.cast(
            tf.floor(max_length_ratio * source_lengths + max_length_offset), tf.int32
        )
    # Capacities: one per segment, the last holds the whole search.
    boundaries = [b for b in cache_segments if b < max_length and not growing_cache]
    capacities = [*boundaries, max_length + 1]
    growth = (boundaries, lambda state, segment: grow_cache_state(state, capacities[segment + 1]))
    step_fn, state = model_step_fn(
        model, encoder_tokens, max_length=max_length, beam_size=strategy.rows_per_sentence,
        cache_capacity=capacities[0], growing_cache=growing_cache,
    )
    return strategy.search(
        step_fn, start_ids, state, end_id=end_id, max_length=max_length,
        max_lengths=max_lengths, state_growth=growth, drop_finished=growing_cache,
    )


def _trace_search(model_ref, strategy, options, jit_compile):
    def search(encoder_tokens):
        return search_in_graph(
            model_ref(), encoder_tokens, strategy=strategy, growing_cache=not jit_compile, **options
        )

    # Unknown batch and source sizes: traced once; XLA still compiles per
    # concrete shape, which `_source_batch` keeps to few.
    return tf.function(
        search,
        input_signature=[tf.TensorSpec([None, None], tf.int32, name="encoder_tokens")],
        jit_compile=jit_compile,
    )


_SOURCE_BUCKET = 8


def _source_batch(model, encoder_tokens, jit_compile):
    """(B, S) int32 source ids; under XLA, S padded up to a multiple of 8.

    Extra source padding changes no logit (KNOWN_TRAPS 1, tested in
    tests/test_models.py), and it bounds how many shapes XLA compiles for.
    """
    encoder_tokens = tf.convert_to_tensor(encoder_tokens)
    if encoder_tokens.shape.rank != 2:
        raise ValueError(
            "`encoder_tokens` must be a (batch, source_length) matrix of ids; "
            f"received shape {tuple(encoder_tokens.shape)}"
        )
    encoder_tokens = tf.cast(encoder_tokens, tf.int32)
    if not jit_compile:
        return encoder_tokens
    limit = TransformerParts.from_model(model).source_embedding.max_length
    return pad_source_to_bucket(encoder_tokens, limit)


def pad_source_to_bucket(encoder_tokens, limit):
    """(B, S) -> (B, S'): S padded up to a multiple of 8, at most `limit`.

    For the searches run under XLA, which compiles once per input shape:
    here and in an XLA export (`export_run(jit_compile=True)`), where S is
    only known in the graph. Sources longer than `limit` are left as they are.
    """
    source_length = tf.shape(encoder_tokens)[1]
    rounded_up = (source_length + _SOURCE_BUCKET - 1) // _SOURCE_BUCKET * _SOURCE_BUCKET
    bucketed = tf.minimum(rounded_up, limit)
    return tf.pad(encoder_tokens, [[0, 0], [0, tf.maximum(bucketed - source_length, 0)]])


# --------------------------------------------------------------------------
# Argument checks: name the argument, echo the value, say how to fix it.
# --------------------------------------------------------------------------


def _check_max_length(parts, max_length):
    check_positive_int("max_length", max_length)
    positions = parts.target_embedding.max_length
    if max_length + 1 > positions:
        raise ValueError(
            f"`max_length` must be at most {positions - 1} for this model: decoding "
            f"feeds the start token and up to max_length tokens, max_length + 1 "
            f"positions, and the model's target embedding holds max_length="
            f"{positions}; received max_length={max_length}. Pass a smaller "
            "`max_length` or build the model with a larger `max_length`."
        )


def check_strategy(strategy):
    """Raises unless `strategy` is a `Strategy` (Greedy(), Beam(...), Sampling(...))."""
    if not isinstance(strategy, Strategy):
        raise ValueError(  # noqa: TRY004 (a ValueError, as every argument check here)
            "`strategy` must be a decoding strategy: Greedy(), Beam(size, length_penalty) "
            f"or Sampling(temperature, top_k, top_p, seed); received strategy={strategy!r}"
        )


def _check_sampling_options(temperature, top_k, top_p, seed):
    check_real("temperature", temperature)
    if not 0 < temperature < float("inf"):
        raise ValueError(
            "`temperature` must be a finite number > 0 (use Greedy() for argmax decoding); "
            f"received temperature={temperature!r}"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
        raise ValueError(
            f"`top_k` must be an integer >= 0 (0 = no top-k cut); received top_k={top_k!r}"
        )
    check_real("top_p", top_p)
    if not 0 < top_p <= 1:
        raise ValueError(f"`top_p` must be in (0, 1] (1 = no nucleus cut); received top_p={top_p!r}")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63
    ):
        raise ValueError(
            f"`seed` must be None or an integer in [0, 2**63); received seed={seed!r}"
        )


def _check_decode_options(model, options):
    parts = TransformerParts.from_model(model)
    _check_max_length(parts, options["max_length"])
    vocabulary = parts.target_embedding.vocabulary_size
    for name in ("start_id", "end_id"):
        value = options[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or not 0 < value < vocabulary
        ):
            raise ValueError(
                f"`{name}` must be a token id in [1, {vocabulary}) (0 is PAD); "
                f"received {name}={value!r}"
            )
    ratio = options["max_length_ratio"]
    if ratio is not None:
        check_real("max_length_ratio", ratio)
        if ratio < 0:
            raise ValueError(
                "`max_length_ratio` must be >= 0 (or None for no per-row limit); "
                f"received max_length_ratio={ratio!r}"
            )
    check_real("max_length_offset", options["max_length_offset"])


# The default of the Translator, `evaluate_run` and the export's module
# (made here, after the checks that `Beam` runs).
DEFAULT_STRATEGY = Beam()
