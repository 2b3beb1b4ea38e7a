"""A learned bias added to the logits of a tied output projection.

Shape legend: B batch, T target length, V target vocabulary.
"""

import keras
from keras import ops

from keras_s2s.checks import check_positive_int


@keras.saving.register_keras_serializable(package="keras_s2s")
class LogitsBias(keras.layers.Layer):
    """Adds one bias per vocabulary entry to float32 logits.

    A tied output projection (the transposed token embedding) has no bias
    of its own; this is that bias (Marian's `final_logits_bias`). It is a
    float32 layer whatever the global policy, so the logits stay float32
    for the softmax, the loss and the search scores.

    Args:
        vocabulary_size: V.

    Call arguments:
        inputs: float32 logits (B, T, V); their Keras mask passes through.

    Returns:
        float32 (B, T, V): `inputs + bias`.

    Example:
    >>> LogitsBias(7)(np.zeros((1, 2, 7), "float32")).shape
    (1, 2, 7)
    """

    def __init__(self, vocabulary_size, **kwargs):
        kwargs["dtype"] = "float32"  # logits are float32 under every policy
        super().__init__(**kwargs)
        check_positive_int("vocabulary_size", vocabulary_size)
        self.vocabulary_size = vocabulary_size
        self.supports_masking = True

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.vocabulary_size:
            raise ValueError(
                f"{self.name}: the logits' last axis must be `vocabulary_size`="
                f"{self.vocabulary_size}; received shape {tuple(input_shape)}"
            )
        # Named "bias" so that optimizers excluding biases from weight decay
        # (the trainer's AdamW) leave it alone.
        self.bias = self.add_weight(
            name="bias", shape=(self.vocabulary_size,), initializer="zeros"
        )
        self.built = True

    def call(self, inputs):
        return ops.cast(inputs, "float32") + self.bias  # (B, T, V)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, "float32")

    def get_config(self):
        config = super().get_config()
        config["vocabulary_size"] = self.vocabulary_size
        return config
