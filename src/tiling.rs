//! One shared tiling routine: overlapping tiles, run and blended back into one image.
