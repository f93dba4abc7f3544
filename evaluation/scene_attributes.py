"""What a sample-world scene shows, as the scene classifier predicts it and a caption states it.

    attributes_of_scene(json.loads(row["scene"]))   # from truth.parquet: {"background": "blue", "count": 1, ...}
    attributes_of_caption("a red circle on a blue background")   # the same keys, from the words; None if
                                                                 # the caption is not a sample-world one

Attributes (each a class label, all identifiable from the pixels alone):
    background   the background colour
    count        how many shapes ("1", "2", ...)
    colour, kind the colour and kind of the LEAD shape: the only one, the top or left one of two
                 (a two-shape caption "A below B" has B as its lead), the leftmost of a row
    axis         how two shapes are placed: "horizontal" or "vertical" ("none" for one shape or a row)

The lead shape and the axis are canonical on purpose: "a red circle above a blue square" and "a blue
square below a red circle" are the same picture, so a classifier can only be asked which colour is on
top, never which shape the caption named first. The relation of a two-shape caption is right when
the axis and the lead shape's colour both are.

The grammar is pipeline.sample_world.describe_scene's (this package does not import pipeline):
    "a red circle on a blue background"
    "a small red circle above a large blue square on a green background"
    "a small red circle, a large blue square and a small green star from left to right on a pink background"
optionally followed by ", with a person" etc. (the stand-ins, which the classifier does not judge).
"""
from __future__ import annotations

import re
from typing import Optional

ATTRIBUTES = ("background", "count", "colour", "kind", "axis")
HORIZONTAL = ("to the left of", "to the right of")
LEAD_FIRST = ("to the left of", "above")   # relations whose first-named shape is the top / left one
RELATIONS = ("to the left of", "to the right of", "above", "below")

_WORD = r"[a-z]+"
_BACKGROUND = rf"on an? (?P<background>{_WORD}) background(?:, with .*)?$"
_ONE = re.compile(rf"^an? (?P<colour>{_WORD}) (?P<kind>{_WORD}) {_BACKGROUND}")
_SIZED = rf"a (?:small|large) ({_WORD}) ({_WORD})"
_TWO = re.compile(rf"^{_SIZED} (?P<relation>{'|'.join(RELATIONS)}) {_SIZED} {_BACKGROUND}")
_ROW = re.compile(rf"^(?P<shapes>{_SIZED}(?:, {_SIZED})*) and {_SIZED} from left to right {_BACKGROUND}")


def attributes_of_scene(scene: dict) -> dict[str, str]:
    """The attributes of a truth.parquet scene (make_scene's JSON, parsed)."""
    shapes = scene["shapes"]
    out = {"background": scene["background"], "count": str(len(shapes)), "axis": "none"}
    lead = shapes[0]
    if len(shapes) == 2:
        horizontal = scene["relation"] in HORIZONTAL
        along = 0 if horizontal else 1
        lead = min(shapes, key=lambda s: s["position"][along])
        out["axis"] = "horizontal" if horizontal else "vertical"
    elif len(shapes) > 2:
        lead = min(shapes, key=lambda s: s["position"][0])
    out["colour"], out["kind"] = lead["colour"], lead["kind"]
    return out


def attributes_of_caption(caption: str) -> Optional[dict[str, str]]:
    """The attributes a sample-world caption states; None when it is not in the world's grammar."""
    text = caption.strip().lower()
    m = _ONE.match(text)
    if m:
        return {"background": m["background"], "count": "1", "colour": m["colour"], "kind": m["kind"],
                "axis": "none"}
    m = _TWO.match(text)
    if m:
        first, second = (m.group(1), m.group(2)), (m.group(4), m.group(5))
        lead = first if m["relation"] in LEAD_FIRST else second
        axis = "horizontal" if m["relation"] in HORIZONTAL else "vertical"
        return {"background": m["background"], "count": "2", "colour": lead[0], "kind": lead[1], "axis": axis}
    m = _ROW.match(text)
    if m:
        shapes = re.findall(_SIZED, text.split(" from left to right ")[0])
        return {"background": m["background"], "count": str(len(shapes)), "colour": shapes[0][0],
                "kind": shapes[0][1], "axis": "none"}
    return None


def is_world_prompt_list(prompts: list[str]) -> bool:
    """True when every prompt is a sample-world caption (then caption accuracy can be measured)."""
    return bool(prompts) and all(attributes_of_caption(p) is not None for p in prompts)
