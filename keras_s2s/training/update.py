"""The optimizer update: all-reduce, accumulate token-weighted, clip, apply.

One order for every strategy (default, Mirrored, MultiWorkerMirrored, TPU):

1. **All-reduce** (sum) the replicas' gradients. Each replica's loss is
   already divided by the *global* token count (losses.py), so the sum is
   the gradient of the whole batch's token mean.
2. **Accumulate** (`accumulation_steps` N > 1): keep `sum_i n_i g_i` and
   `sum_i n_i` over N batches (`n_i` real target tokens, `g_i` the batch's
   gradient), and update with their ratio: the gradient one batch holding
   all N would have. Plain averaging of the `g_i` (Keras's
   `gradient_accumulation_steps`) weights a token of a short batch more than
   one of a long batch.
3. **Clip** by the global norm of that gradient, once per update (dense:
   the norm of an embedding's IndexedSlices would miss repeated ids).
4. **Apply**: decoupled weight decay and the optimizer's step, once per
   update; `optimizer.iterations` and the learning-rate schedule count
   updates, not batches.

Why not Keras's own path (checked on 3.15.1): `BaseOptimizer.apply` clips
before `TFOptimizer._backend_update_step` all-reduces, so each replica clips
its partial gradient and the summed update escapes the clip (KNOWN_TRAPS 14);
its `gradient_accumulation_steps` averages batches with equal weight, calls
learning-rate schedules with the batch count, and fails under
MirroredStrategy (keras #20582). With N = 1 on a Keras version that clips
after the all-reduce (`compat.keras_clips_per_replica()` false), Keras's own
path runs unchanged: the fix retires itself.
"""

from __future__ import annotations

import threading

import keras
import tensorflow as tf
from keras import ops
from keras.src.utils import tracking

from keras_s2s.training.compat import keras_clips_per_replica


class BatchTokens:
    """The current batch's global real-token count, from the loss to the optimizer.

    `MaskedCrossEntropy` records the count it divides by; the optimizer
    reads it in the same step to weight the batch's gradient. One value per
    thread: MirroredStrategy traces each replica's step in its own thread.
    """

    def __init__(self):
        self._local = threading.local()

    def record(self, count):
        self._local.count = count

    def read(self):
        count = getattr(self._local, "count", None)
        if count is None:
            raise ValueError(
                "`accumulation_steps` > 1 needs the batch's token count from the loss; "
                "received no count: compile with keras_s2s.training.compile_model, or set "
                "`loss.batch_tokens = optimizer.batch_tokens` on a MaskedCrossEntropy loss"
            )
        self._local.count = None  # one count per step, never a stale one
        return count


def _dense(grads):
    """IndexedSlices (embedding lookups) as dense gradients.

    A norm of IndexedSlices is taken over their unsummed rows (Keras's and
    TensorFlow's `global_norm` both do), which is not the gradient's norm
    when a token id occurs twice; Adam densifies them anyway.
    """
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]


def _all_reduce_sum(grads):
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads
    return context.all_reduce(tf.distribute.ReduceOp.SUM, grads)


def _tf_variable(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


class AggregatedUpdate:
    """Mixin for a Keras (TensorFlow backend) optimizer: the update order above.

    Put it first among the bases, e.g. `class AdamW(AggregatedUpdate,
    keras.optimizers.AdamW)`. Clipping is the wrapped optimizer's own
    (`global_clipnorm`, `clipnorm` or `clipvalue`), applied to the
    aggregated, accumulated gradient.

    Args:
        accumulation_steps: batches per update (N). With N > 1 the loss
            must record each batch's token count in `optimizer.batch_tokens`
            (`compile_model` connects them). The accumulators are optimizer
            variables, saved with the optimizer state (BackupAndRestore).
    """

    def __init__(self, *args, accumulation_steps=1, **kwargs):
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or (
            accumulation_steps < 1
        ):
            raise ValueError(
                "`accumulation_steps` must be an integer >= 1; received "
                f"accumulation_steps={accumulation_steps!r}"
            )
        if kwargs.get("gradient_accumulation_steps"):
            raise ValueError(
                f"`gradient_accumulation_steps` is not supported by {type(self).__name__}: use "
                "`accumulation_steps` (token-weighted, counts updates); received "
                f"gradient_accumulation_steps={kwargs['gradient_accumulation_steps']!r}"
            )
        if kwargs.get("use_ema"):
            raise ValueError(
                f"`use_ema` is not supported by {type(self).__name__} (its update keeps no "
                "moving average); received use_ema=True"
            )
        super().__init__(*args, **kwargs)
        self.accumulation_steps = accumulation_steps
        self.batch_tokens = BatchTokens()

    @property
    def iterations(self):
        """Updates applied (`self._iterations` counts batches)."""
        if self.accumulation_steps == 1:
            return self._iterations
        return ops.floor_divide(self._iterations, self.accumulation_steps)

    def _get_current_learning_rate(self):
        # The schedule counts updates (Keras would pass the batch count).
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return super()._get_current_learning_rate()

    @tracking.no_automatic_dependency_tracking
    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        if self.accumulation_steps > 1:
            # sum_i n_i g_i per variable, and sum_i n_i, since the last update.
            self._token_weighted_sums = self.add_optimizer_variables(
                variables, "token_weighted_gradient_sum"
            )
            self._accumulated_tokens = self.add_variable(
                (), dtype="float32", name="accumulated_tokens"
            )

    def _backend_apply_gradients(self, grads, trainable_variables):
        if self.accumulation_steps == 1 and not keras_clips_per_replica():
            return super()._backend_apply_gradients(grads, trainable_variables)
        # From here the order is ours: Keras would clip before the all-reduce.
        grads = _dense(_all_reduce_sum(grads))
        if self.accumulation_steps == 1:
            grads = self._clip_gradients(grads)
            self._apply_weight_decay(trainable_variables)
            self._update_reduced(grads, trainable_variables, self.learning_rate)
        else:
            self._accumulate_or_update(grads, trainable_variables)

    def _update_reduced(self, grads, trainable_variables, learning_rate):
        """`TFOptimizer._backend_update_step` without its all-reduce (done already)."""
        variables = [_tf_variable(v) for v in trainable_variables]
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_tf_update_step,
            self._distribution_strategy,
            list(zip(grads, variables)),
            learning_rate,
        )

    def _accumulate_or_update(self, grads, trainable_variables):
        # `_iterations` counts batches; this batch completes an update or not.
        is_update = ops.equal((self._iterations + 1) % self.accumulation_steps, 0)
        tokens = ops.cast(self.batch_tokens.read(), "float32")
        sums = [
            self._token_weighted_sums[self._get_variable_index(v)] + g * tokens
            for g, v in zip(grads, trainable_variables)
        ]
        total_tokens = self._accumulated_tokens + tokens
        # Only used when `is_update`: the gradient of one batch holding all N.
        grads = self._clip_gradients([s / ops.maximum(total_tokens, 1.0) for s in sums])
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_accumulate_or_update,
            self._distribution_strategy,
            trainable_variables,
            sums,
            grads,
            total_tokens,
            is_update,
            self.learning_rate,
        )

    def _distributed_accumulate_or_update(
        self, distribution, trainable_variables, sums, grads, total_tokens, is_update, learning_rate
    ):
        # A cond per variable inside `extended.update` (cross-replica), never a
        # merge_call inside a cond: that is what breaks Keras's own
        # accumulation under MirroredStrategy (keras #20582).
        def update_variable(variable, grad, is_update, learning_rate):
            def step():
                if self.weight_decay is not None and self._use_weight_decay(variable):
                    lr = tf.cast(learning_rate, variable.dtype)
                    decay = tf.cast(self.weight_decay, variable.dtype)
                    variable.assign_sub(variable * decay * lr)
                self.update_step(grad, variable, learning_rate)

            tf.cond(is_update, step, lambda: None)

        def reset_or_keep(accumulator, value, is_update):
            accumulator.assign(tf.where(is_update, tf.zeros_like(value), value))

        for variable, token_sum, grad in zip(trainable_variables, sums, grads):
            accumulator = self._token_weighted_sums[self._get_variable_index(variable)]
            distribution.extended.update(
                _tf_variable(variable), update_variable, args=(grad, is_update, learning_rate),
                group=False,
            )
            distribution.extended.update(
                _tf_variable(accumulator), reset_or_keep, args=(token_sum, is_update), group=False
            )
        distribution.extended.update(
            _tf_variable(self._accumulated_tokens), reset_or_keep, args=(total_tokens, is_update),
            group=False,
        )

    def get_config(self):
        config = super().get_config()
        config["accumulation_steps"] = self.accumulation_steps
        return config


@keras.saving.register_keras_serializable(package="keras_s2s")
class AdamW(AggregatedUpdate, keras.optimizers.AdamW):
    """Keras's AdamW with the update order of this module (see its docstring).

    Example:

    >>> optimizer = AdamW(learning_rate=1e-3, global_clipnorm=1.0, accumulation_steps=2)
    >>> optimizer.accumulation_steps
    2
    """
