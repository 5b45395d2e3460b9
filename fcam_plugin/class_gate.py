"""The class gate: what makes the class-agnostic decoder's map follow the requested class.

The decoder segments whatever the classifier attends to, for every class alike. The gate
multiplies its probability by the square root of the requested class's seed CAM, max-pooled
over a window of ``dilation`` times the image side: the whole object around the CAM's evidence
keeps the decoder's boundary, while regions far from any evidence for the class (another
object, a look-alike distractor) are suppressed. Measured in ``benchmarks/README.md``
("Class-conditional maps").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["class_gate"]


def _odd_window(side: int, dilation: float) -> int:
    return max(1, int(round(dilation * side)) // 2 * 2 + 1)


def class_gate(seed_cams: torch.Tensor, dilation: float) -> torch.Tensor:
    """The gate ``(B, H, W)`` in [0, 1] from seed CAMs ``(B, H, W)`` in [0, 1] of the requested classes.

    A flat CAM (the same value everywhere, e.g. all zero for an untrained model) says nothing
    about where the class is: its image keeps the decoder's map (gate 1).

    Args:
        seed_cams: the seed CAMs of the requested classes at the map's size.
        dilation: side of the max-pooling window as a fraction of the image side; 0: no dilation.
    """
    if dilation > 0:
        kh, kw = (_odd_window(int(side), dilation) for side in seed_cams.shape[-2:])
        # A max over a rectangle is separable: rows, then columns (~14x faster than the 2-D window at 224 px).
        rows = F.max_pool2d(seed_cams[:, None], (kh, 1), stride=1, padding=(kh // 2, 0))
        seed_cams = F.max_pool2d(rows, (1, kw), stride=1, padding=(0, kw // 2))[:, 0]
    flat = seed_cams.amax((-2, -1)) <= seed_cams.amin((-2, -1))
    gate = seed_cams.clamp(0, 1).sqrt()
    return torch.where(flat.view(-1, 1, 1), torch.ones_like(gate), gate)
