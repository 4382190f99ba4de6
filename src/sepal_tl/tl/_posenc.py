"""Fixed 2D sinusoidal encoding of a node's signed array offset from its subgraph's centre."""

from __future__ import annotations

import torch

#: Base of the geometric frequency ladder, as in the Transformer's sinusoidal encoding.
_BASE = 10000.0


def relative_position_encoding(offsets: torch.Tensor, dim: int) -> torch.Tensor:
    """2D sinusoidal encoding of signed ``(row, col)`` array offsets.

    Channels ``[0, dim/2)`` encode the row offset and ``[dim/2, dim)`` the column offset. Within each half,
    channel ``2j`` is ``sin(p * w_j)`` and ``2j + 1`` is ``cos(p * w_j)`` with
    ``w_j = 1 / 10000^(2j / (dim/2))``, ``j = 0 .. dim/4 - 1``. The offset ``(0, 0)`` (the centre) therefore
    maps to 0 on every sine channel and 1 on every cosine channel, and distinct integer offsets get distinct
    encodings (the ``w_0 = 1`` pair alone tells integers apart).

    The encoding is fixed: it depends only on the offset and ``dim``. The reference implementation (docs/differences.md,
    "Dataset-independent positional encoding") encoded ``offset + M`` with M the largest offset over the whole dataset,
    so the same neighbour got a different encoding on another dataset or with another number of hops; encoding the
    signed offset directly removes that dependence.

    Parameters
    ----------
    offsets
        ``(k, 2)`` integer (or float) tensor of ``(row, col)`` offsets.
    dim
        Number of output channels; must be a positive multiple of 4.

    Returns
    -------
    ``(k, dim)`` tensor in the default float dtype, on ``offsets``' device.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0 or dim % 4:
        msg = f"dim={dim!r} must be a positive multiple of 4 (sin and cos channels for rows and for columns)."
        raise ValueError(msg)
    offsets = torch.as_tensor(offsets)
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        msg = f"offsets must have shape (k, 2), got {tuple(offsets.shape)}."
        raise ValueError(msg)
    half = dim // 2
    # Compute in float64 (where the device has it) so that large offsets lose no precision, then cast.
    work = torch.float32 if offsets.device.type == "mps" else torch.float64
    freqs = _BASE ** (-torch.arange(0, half, 2, dtype=work, device=offsets.device) / half)
    angles = offsets.to(work)[:, :, None] * freqs  # (k, 2, dim/4)
    enc = torch.stack([angles.sin(), angles.cos()], dim=-1)  # (k, 2, dim/4, 2): interleaved sin/cos
    return enc.reshape(offsets.shape[0], dim).to(torch.get_default_dtype())
