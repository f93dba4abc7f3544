"""What the comparison tests share: a small report folder built by hand to the `glide evaluate` contract
(REPORT/samples/index.parquet: setting, prompt_index int32, prompt, seed int64, path; REPORT/settings.json),
and a labels database with a run of comparisons made from it."""
from __future__ import annotations

import json
from pathlib import Path

MARKUP_PROMPT = '<img src=x onerror="window.pwned=1"><b>a red cube</b><script>window.pwned=2</script>'
SETTING_COLOURS = {"guidance-1": (90, 90, 90), "guidance-3": (200, 60, 40), "guidance-5": (40, 90, 210)}


def write_report(folder, *, prompts: int = 12, seeds=(7,), settings=("guidance-1", "guidance-3", "guidance-5"),
                 markup_at=None) -> str:
    """A report of 48 x 48 PNGs: per setting a background colour, per prompt a square's place."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image, ImageDraw

    report = Path(folder)
    rows = {"setting": [], "prompt_index": [], "prompt": [], "seed": [], "path": []}
    for setting in settings:
        (report / "samples" / setting).mkdir(parents=True, exist_ok=True)
        for p in range(prompts):
            prompt = MARKUP_PROMPT if p == markup_at else f"a shape number {p}"
            for seed in seeds:
                relative = f"samples/{setting}/{p:04d}-{seed}.png"
                img = Image.new("RGB", (48, 48), SETTING_COLOURS.get(setting, (120, 120, 120)))
                x = (p * 5) % 28
                ImageDraw.Draw(img).rectangle([x, 14, x + 16, 30], fill=(250, 250, 250))
                img.save(report / relative)
                for key, value in (("setting", setting), ("prompt_index", p), ("prompt", prompt), ("seed", seed),
                                   ("path", relative)):
                    rows[key].append(value)
    schema = pa.schema([("setting", pa.string()), ("prompt_index", pa.int32()), ("prompt", pa.string()),
                        ("seed", pa.int64()), ("path", pa.string())])
    pq.write_table(pa.table(rows, schema=schema), report / "samples" / "index.parquet")
    (report / "settings.json").write_text(json.dumps({s: {"guidance_scale": float(s.split("-")[1])}
                                                      for s in settings}))
    return str(report)
