"""Training-free motion control for painting -> video (SPEC §2.2–2.3).

* :mod:`.arrows` — arrows -> sparse flow (eq. 5) -> Gaussian densification (eq. 6) -> threshold (eq. 7),
  still-region masks, global strength.
* :mod:`.cinemagraph` — Eulerian animation of a still image along a static field.
* :mod:`.evaluate` — how well an output video follows the requested field; style drift from the painting.
"""

from .arrows import Arrow, dense_field, densify, load_arrows, load_mask, parse_arrow, sparse_flow, threshold
from .cinemagraph import animate, displacements

__all__ = ["Arrow", "animate", "dense_field", "densify", "displacements", "load_arrows", "load_mask",
           "parse_arrow", "sparse_flow", "threshold"]
