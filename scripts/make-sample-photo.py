#!/usr/bin/env python3
"""Regenerates assets/astronaut-128.png, the sample photo of the README's first command.

Source: scikit-image's `skimage.data.astronaut()` (512x512 RGB), NASA's portrait of astronaut
Eileen Collins, in the public domain (see assets/README.md). A 256x256 square around the face
(columns 96..352, rows 0..256) is downscaled by 2 with Pillow's Lanczos filter to 128x128: small
enough for a CPU diffusion run of a few minutes, large enough to show what the upscaler adds.

Run it in a throwaway venv outside the repository:

    python3 -m venv /tmp/skimg && /tmp/skimg/bin/pip install scikit-image pillow
    /tmp/skimg/bin/python scripts/make-sample-photo.py
"""

from pathlib import Path

from PIL import Image
from skimage import data

# Left, top, right, bottom of the crop in the 512x512 original: the head and the suit's collar.
CROP = (96, 0, 352, 256)
SIZE = 128

out = Path(__file__).resolve().parent.parent / "assets" / "astronaut-128.png"
photo = Image.fromarray(data.astronaut()).crop(CROP)
photo = photo.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
# optimize: the smallest zlib stream Pillow finds; no metadata chunks, so reruns are identical.
photo.save(out, optimize=True)
print(f"wrote {out} ({SIZE}x{SIZE}, {out.stat().st_size} bytes)")
