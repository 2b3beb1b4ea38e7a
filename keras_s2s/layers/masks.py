"""Attention and padding masks as pure functions.

Every mask in keras_s2s is built here; layers never build masks inline.
Convention (Keras's): boolean, True = attend / real token.

Shape legend: B batch, T query length, S key length, L any sequence length.
"""

from keras import ops

PAD_ID = 0


def padding_mask(token_ids, pad_id=PAD_ID):
    """True at real tokens.

    Args:
        token_ids: int tensor (B, L).
        pad_id: the padding id.

    Returns:
        bool tensor (B, L).
    """
    return ops.not_equal(token_ids, pad_id)


def causal_mask(query_length, key_length, offset=0):
    """True where query position `offset + t` may attend key position `s <= offset + t`.

    With `offset=0` and `query_length == key_length` this is the usual lower
    triangle; incremental decoding of step `i` against a cache of length L
    uses `causal_mask(1, L, offset=i)`, which also hides the cache slots that
    are not written yet.

    Args:
        query_length: T (int or scalar tensor).
        key_length: S (int or scalar tensor).
        offset: position of the first query (int or scalar tensor).

    Returns:
        bool tensor (T, S).
    """
    query_positions = ops.arange(query_length)[:, None] + offset  # (T, 1)
    key_positions = ops.arange(key_length)[None, :]  # (1, S)
    return ops.greater_equal(query_positions, key_positions)


def merge_masks(*masks):
    """Logical AND of broadcastable boolean masks; `None` entries are skipped.

    Returns:
        The broadcast AND, or None when every mask is None.
    """
    present = [mask for mask in masks if mask is not None]
    if not present:
        return None
    merged = ops.cast(present[0], "bool")
    for mask in present[1:]:
        merged = ops.logical_and(merged, ops.cast(mask, "bool"))
    return merged


def key_padding_mask(key_mask):
    """Lifts a key padding mask to the attention layout.

    Only *keys* are masked: a padded query row's output is arbitrary and
    every consumer ignores it, while masking query rows as well could leave
    a row with nothing to attend to.

    Args:
        key_mask: bool (B, S) or None.

    Returns:
        bool (B, 1, 1, S) (batch, heads, queries, keys) or None.
    """
    if key_mask is None:
        return None
    return ops.cast(key_mask, "bool")[:, None, None, :]


def causal_attention_mask(query_length, key_length, key_mask=None, offset=0):
    """Causal mask combined with key padding, in the attention layout.

    Args:
        query_length: T.
        key_length: S.
        key_mask: bool (B, S) or None.
        offset: position of the first query.

    Returns:
        bool (B or 1, 1, T, S).
    """
    causal = causal_mask(query_length, key_length, offset)[None, None, :, :]
    return merge_masks(causal, key_padding_mask(key_mask))
