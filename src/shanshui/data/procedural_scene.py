"""What a procedural ink-wash clip shows: the scene attributes, their labels, and captions.

A :class:`Scene` is a small frozen record sampled from an integer seed. Its *labelled* attributes (the
keys of :data:`ATTRIBUTES`) are what a caption talks about and what a probe classifier can learn; the
remaining fields (speeds, layer count, layout seed) vary the picture and its motion without being
named in the caption.

Captions follow the LPV-HD habit of a comma-separated list of short phrases ("Mountains, dense fog,
red sun, boat on the lake, flying birds.") and :func:`parse_caption` reads such a list back — also
the looser wording a user types in a prompt ("misty peaks at sunset, a sampan, geese").
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from ..errors import check

# The label set. Every key is an attribute of :class:`Scene`; the list gives its allowed values, and the
# first value is the one a caption leaves unsaid (and :func:`parse_caption` assumes when a phrase is
# absent) — except for "mountains", which every caption names.
ATTRIBUTES: dict[str, list] = {
    "mountains": ["mountains", "gentle hills", "steep peaks"],
    "fog": ["none", "light", "dense"],
    "sun": ["none", "red sun", "moon"],
    "sun_motion": ["still", "rising", "setting"],
    "clouds": [False, True],
    "lake": [False, True],
    "boat": [False, True],
    "waterfall": [False, True],
    "pines": [False, True],
    "birds": [False, True],
    "rain": [False, True],
    "camera": ["still", "pan left", "pan right"],
}

DEFAULTS: dict[str, object] = {key: values[0] for key, values in ATTRIBUTES.items()}

# How likely each value is when a scene is sampled (same order as ATTRIBUTES; booleans: P(True)).
_PROBABILITIES: dict[str, list[float]] = {
    "mountains": [0.5, 0.25, 0.25],
    "fog": [0.2, 0.45, 0.35],
    "sun": [0.4, 0.4, 0.2],
    "sun_motion": [0.5, 0.25, 0.25],
    "camera": [0.4, 0.3, 0.3],
}
_P_TRUE: dict[str, float] = {
    "clouds": 0.35, "lake": 0.6, "boat": 0.6, "waterfall": 0.25, "pines": 0.6, "birds": 0.45, "rain": 0.15,
}


@dataclass(frozen=True)
class Scene:
    """One procedural clip: labelled attributes plus unlabelled variation (all sizes in px at 128 px)."""

    seed: int
    mountains: str = "mountains"
    fog: str = "none"
    sun: str = "none"
    sun_motion: str = "still"
    clouds: bool = False
    lake: bool = False
    boat: bool = False
    waterfall: bool = False
    pines: bool = False
    birds: bool = False
    rain: bool = False
    camera: str = "still"
    ranges: int = 3  # mountain ranges behind the foreground, far to near
    pan_speed: float = 0.6  # camera travel per frame (px at 128 px)
    mist_speed: float = 0.4  # signed horizontal drift of mist and clouds per frame
    boat_speed: float = 0.5  # signed
    bird_velocity: tuple[float, float] = (1.0, -0.2)
    sun_speed: float = 0.3  # vertical travel of the sun or moon per frame when it moves

    def __post_init__(self):
        for key, values in ATTRIBUTES.items():
            value = getattr(self, key)
            check(value in values and type(value) is type(values[0]),
                  f"scene attribute {key}={value!r} is not one of {values}")
        check(not self.boat or self.lake, "scene attribute boat=True needs lake=True")
        check(self.sun != "none" or self.sun_motion == "still",
              f"scene attribute sun_motion={self.sun_motion!r} needs a sun or moon (sun='none')")
        check(2 <= self.ranges <= 4, f"scene ranges={self.ranges} must be in 2..4")


def attributes(scene: Scene) -> dict:
    """The scene's labels, one entry per key of :data:`ATTRIBUTES` (JSON-serialisable)."""
    return {key: getattr(scene, key) for key in ATTRIBUTES}


def sample_scene(seed: int, **fixed) -> Scene:
    """Draw a scene from ``seed``; any attribute given in ``fixed`` (e.g. ``fog="dense"``) is kept as is.

    The draw of every other field does not depend on ``fixed``, so fixing one attribute changes nothing
    else about the picture except where a constraint forces it (a boat needs a lake; a still sun when
    there is none).
    """
    unknown = sorted(set(fixed) - set(ATTRIBUTES))
    check(not unknown, f"unknown scene attribute(s) {unknown}; known: {sorted(ATTRIBUTES)}")
    check(isinstance(seed, (int, np.integer)) and seed >= 0, f"seed={seed!r} must be an integer >= 0")
    rng = np.random.default_rng(int(seed))
    drawn: dict[str, object] = {}
    for key, values in ATTRIBUTES.items():  # fixed order: one draw per key whatever `fixed` holds
        if key in _P_TRUE:
            drawn[key] = bool(rng.random() < _P_TRUE[key])
        else:
            drawn[key] = values[int(rng.choice(len(values), p=_PROBABILITIES[key]))]
    extra = {
        "ranges": int(rng.integers(2, 5)),
        "pan_speed": float(rng.uniform(0.35, 0.9)),
        "mist_speed": float(rng.uniform(0.25, 0.6) * rng.choice([-1.0, 1.0])),
        "boat_speed": float(rng.uniform(0.3, 0.7) * rng.choice([-1.0, 1.0])),
        "bird_velocity": (float(rng.uniform(0.8, 1.5) * rng.choice([-1.0, 1.0])),
                          float(rng.uniform(-0.35, 0.1))),
        "sun_speed": float(rng.uniform(0.2, 0.35)),
    }
    # Plausibility: no sun in the rain; a boat only on a lake. Fixed values win over these rules.
    if drawn["rain"] and "sun" not in fixed:
        drawn["sun"] = "none"
    if not drawn["lake"] and "boat" not in fixed:
        drawn["boat"] = False
    drawn.update(fixed)
    if drawn["boat"] and "lake" not in fixed:
        drawn["lake"] = True
    if drawn["sun"] == "none" and "sun_motion" not in fixed:
        drawn["sun_motion"] = "still"
    return Scene(seed=int(seed), **drawn, **extra)


# --- captions ---------------------------------------------------------------------------------------

_MOUNTAIN_PHRASE = {"mountains": "Mountains", "gentle hills": "Gentle hills", "steep peaks": "Steep peaks"}
_FOG_PHRASE = {"light": "light fog", "dense": "dense fog"}


def caption(scene: Scene) -> str:
    """An LPV-HD-style caption naming every labelled attribute that differs from its default."""
    parts = [_MOUNTAIN_PHRASE[scene.mountains]]
    if scene.fog != "none":
        parts.append(_FOG_PHRASE[scene.fog])
    if scene.sun != "none":
        parts.append(scene.sun if scene.sun_motion == "still" else f"{scene.sun_motion} {scene.sun}")
    if scene.clouds:
        parts.append("drifting clouds")
    if scene.boat:
        parts.append("boat on the lake")
    elif scene.lake:
        parts.append("lake")
    if scene.waterfall:
        parts.append("waterfall")
    if scene.pines:
        parts.append("pine trees")
    if scene.birds:
        parts.append("flying birds")
    if scene.rain:
        parts.append("rain")
    if scene.camera != "still":
        parts.append(f"camera panning {scene.camera.split()[1]}")
    return ", ".join(parts) + "."


def _has(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


def parse_caption(text: str) -> dict:
    """Recover the labelled attributes from a caption or a free prompt.

    Returns a full attribute dict: phrases that are absent leave the default (:data:`DEFAULTS`), so
    ``parse_caption(caption(s)) == attributes(s)`` for every scene. Synonyms a user is likely to type
    are understood (mist/haze, sampan, geese/cranes, sunset/sunrise, moonlit, river, ...).
    """
    t = " " + text.lower() + " "
    out = dict(DEFAULTS)
    if _has(r"\b(steep|peaks?|cliffs?|crags?|pinnacles?)\b", t):
        out["mountains"] = "steep peaks"
    elif _has(r"\b(gentle|rolling|low)\s+hills?\b|\bhills?\b", t):
        out["mountains"] = "gentle hills"
    if _has(r"\b(dense|thick|heavy)\s+(fog|mist|haze)\b|\bfoggy\b", t):
        out["fog"] = "dense"
    elif _has(r"\b(fog|mist|misty|haze|hazy)\b", t):
        out["fog"] = "light"
    if _has(r"\bmoon(light|lit)?\b", t):
        out["sun"] = "moon"
    elif _has(r"\bsun(rise|set|ny)?\b", t):
        out["sun"] = "red sun"
    if out["sun"] != "none":
        if _has(r"\b(rising|sunrise|moonrise)\b", t):
            out["sun_motion"] = "rising"
        elif _has(r"\b(setting|sunset|moonset|sinking)\b", t):
            out["sun_motion"] = "setting"
    out["clouds"] = _has(r"\bclouds?\b|\bcloudy\b", t)
    out["boat"] = _has(r"\b(boats?|sampans?|sailboats?|skiffs?|ships?|fisherman)\b", t)
    out["lake"] = out["boat"] or _has(r"\b(lakes?|rivers?|water|ponds?|streams?)\b", t)
    out["waterfall"] = _has(r"\b(waterfalls?|cascades?)\b", t)
    out["pines"] = _has(r"\b(pines?|trees?|forest)\b", t)
    out["birds"] = _has(r"\b(birds?|cranes?|geese|swallows?|egrets?)\b", t)
    out["rain"] = _has(r"\b(rain|rains|rainy|raining|drizzle)\b", t)
    pan = re.search(r"\b(pan|pans|panning|scroll|scrolling)\s+(to\s+the\s+)?(left|right)\b", t)
    if pan:
        out["camera"] = f"pan {pan.group(3)}"
    return out


def scene_from_caption(text: str, seed: int = 0) -> Scene:
    """A scene showing what ``text`` asks for; everything unlabelled (layout, speeds) comes from ``seed``."""
    return sample_scene(seed, **parse_caption(text))


def replace(scene: Scene, **changes) -> Scene:
    """A copy of ``scene`` with some fields changed (validated like a new scene)."""
    return dataclasses.replace(scene, **changes)
