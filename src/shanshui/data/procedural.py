"""Procedural ink-wash landscape videos: the project's offline stand-in for LPV-HD (SPEC §1.6).

A seeded :class:`Scene` (mountains, fog, sun or moon, lake, boat, birds, pines, waterfall, rain, camera
pan ...) is rendered into a short clip with paper texture, shaded ink ranges and drifting mist, together
with its LPV-HD-style caption, flat attribute labels, and exact per-pixel forward flow::

    from shanshui.data.procedural import sample_scene, render_clip, caption, attributes
    scene = sample_scene(7)
    frames, flow = render_clip(scene, frames=16, size=128)   # uint8 (16,128,128,3), float32 (15,128,128,2)
    caption(scene)      # 'Mountains, dense fog, red sun, boat on the lake, flying birds.'
    attributes(scene)   # {'mountains': 'mountains', 'fog': 'dense', 'sun': 'red sun', ...}

``parse_caption`` maps a caption or a typed prompt back to attributes; ``scene_from_caption`` makes a
scene that shows a prompt. ``write_dataset`` (``shanshui data synth``) writes a whole dataset; its
layout is described in ``docs/dataset-format.md``.
"""

from __future__ import annotations

from .procedural_dataset import clip_seed, write_dataset
from .procedural_render import render_clip
from .procedural_scene import (
    ATTRIBUTES,
    DEFAULTS,
    Scene,
    attributes,
    caption,
    parse_caption,
    sample_scene,
    scene_from_caption,
)

__all__ = [
    "ATTRIBUTES", "DEFAULTS", "Scene", "attributes", "caption", "clip_seed", "parse_caption", "render_clip",
    "sample_scene", "scene_from_caption", "write_dataset",
]
