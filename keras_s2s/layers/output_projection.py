"""The untied output projection: hidden states to float32 logits.

Shape legend: B batch, T target length, D hidden dim, V target vocabulary.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_s2s")
class OutputProjection(keras.layers.Dense):
    """A Dense layer whose matmul runs in the compute dtype and whose logits are float32.

    Under a mixed policy (`mixed_bfloat16`) the projection onto the vocabulary
    is the model's largest matmul, so it runs in bfloat16 like every other
    matmul; the logits are then cast to float32, so the softmax, the loss and
    the search scores are computed in float32 (the mixed-precision recipe of
    the Keras guide). Under float32 it is a plain Dense layer.

    Call arguments:
        inputs: float (B, T, D); its Keras mask passes through.

    Returns:
        float32 (B, T, V).

    Example:
    >>> OutputProjection(7)(np.zeros((1, 2, 4))).shape
    (1, 2, 7)
    """

    def call(self, inputs):
        return ops.cast(super().call(inputs), "float32")

    def compute_output_spec(self, inputs):
        # Dense declares its output in the compute dtype; these logits are float32.
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), "float32")
