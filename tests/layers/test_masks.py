import numpy as np

from keras_s2s.layers import masks


def test_padding_mask_golden():
    tokens = np.array([[5, 6, 0], [7, 0, 0]])
    np.testing.assert_array_equal(
        masks.padding_mask(tokens), [[True, True, False], [True, False, False]]
    )


def test_causal_mask_golden():
    np.testing.assert_array_equal(
        masks.causal_mask(3, 3),
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]],
    )


def test_causal_mask_with_offset_hides_unwritten_cache_slots():
    # Step 2 of incremental decoding against a cache of 4 slots.
    np.testing.assert_array_equal(masks.causal_mask(1, 4, offset=2), [[1, 1, 1, 0]])


def test_merge_masks_golden_and_none():
    a = np.array([[True, True, False]])
    b = np.array([[True, False, True]])
    np.testing.assert_array_equal(masks.merge_masks(a, None, b), [[True, False, False]])
    assert masks.merge_masks(None, None) is None


def test_key_padding_mask_layout():
    mask = masks.key_padding_mask(np.array([[True, False]]))
    assert tuple(mask.shape) == (1, 1, 1, 2)
    assert masks.key_padding_mask(None) is None


def test_causal_attention_mask_golden():
    key_mask = np.array([[True, True, False], [True, True, True]])
    mask = np.asarray(masks.causal_attention_mask(3, 3, key_mask=key_mask))
    assert mask.shape == (2, 1, 3, 3)
    np.testing.assert_array_equal(
        mask[0, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 0]]
    )
    np.testing.assert_array_equal(
        mask[1, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    )
