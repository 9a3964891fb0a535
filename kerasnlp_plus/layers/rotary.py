"""Rotary position embeddings (RoFormer, Su et al., kexue.fm 8265).

The layout is RoFormer's own (bert4keras ``apply_rotary_position_embeddings`` and
transformers' ``RoFormerSelfAttention``): feature pairs ``(2i, 2i+1)`` of each head are
rotated by the angle ``position * base**(-2i / head_size)``. Queries and keys are both
rotated at their absolute positions, so their dot product depends on the relative
position only; that is why a cached decoder may rotate each new query/key once, at the
position it takes, and get the same scores as a pass over the whole sequence.
"""
from keras import ops

ROTARY_BASE = 10000.0


def rotary_angles(position_ids, head_size, base=ROTARY_BASE):
    """``(cos, sin)``, each ``(batch, length, head_size)`` in float32, every frequency
    repeated for the two features of its pair."""
    if head_size % 2:
        raise ValueError(f"rotary position embeddings need an even head size, got {head_size}")
    exponents = ops.arange(0, head_size // 2, dtype="float32") * (-2.0 / head_size)
    inv_freq = ops.power(ops.cast(base, "float32"), exponents)
    angles = ops.cast(position_ids, "float32")[..., None] * inv_freq  # (batch, length, head_size/2)
    angles = ops.repeat(angles, 2, axis=-1)
    return ops.cos(angles), ops.sin(angles)


def apply_rotary(x, position_ids, base=ROTARY_BASE, angles=None):
    """Rotate ``x`` ``(batch, length, heads, head_size)`` at ``position_ids``
    ``(batch or 1, length)``; computed in float32, returned in ``x``'s dtype.
    ``angles``: ``rotary_angles(position_ids, ...)`` already computed (queries and keys
    at the same positions share them)."""
    head_size = x.shape[-1]
    cos, sin = angles if angles is not None else rotary_angles(position_ids, head_size, base)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    x32 = ops.cast(x, "float32")
    return ops.cast(x32 * cos + rotate_pairs(x32) * sin, x.dtype)


def rotate_pairs(x):
    """``[x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...]``: each feature pair turned
    by 90 degrees, the sine term of the rotation."""
    return ops.reshape(ops.stack([-x[..., 1::2], x[..., ::2]], axis=-1), ops.shape(x))
