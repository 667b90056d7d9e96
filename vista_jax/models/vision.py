"""Host-side (numpy) preparation for Qwen2.5-VL: image patches and M-RoPE positions.

Everything here runs on the host before the compiled model sees the arrays:

- `preprocess_image`: PIL image -> pixel patches in the order of HF `Qwen2VLImageProcessor`
  (each 2x2 spatial-merge group contiguous), CLIP mean/std, the frame duplicated along
  `temporal_patch_size` as HF does for still images.
- `vision_patch_positions` / `vision_window_ids`: static per-grid tables the vision tower
  needs (2D rotary positions, window-attention groups), in the same patch order.
- `mrope_positions`: the decoder's (t, h, w) positions of one token chunk, as HF
  `Qwen2_5_VLModel.get_rope_index` computes them, but composable across chunks.

HF resizes with `smart_resize` (aspect-preserving, pixel budget); we resize every image to a
fixed square so a batch compiles once. Feed HF an image already resized to that square and
the patches are identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OPENAI_CLIP_MEAN, per RGB channel
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # OPENAI_CLIP_STD


def patchify(image_chw: np.ndarray, patch_size: int = 14, merge_size: int = 2,
             temporal_patch_size: int = 2) -> tuple[np.ndarray, int, int]:
    """[C, H, W] float image -> patches [gh*gw, C*tp*p*p] (HF order), gh, gw.

    Patches are ordered block-major over merge_size x merge_size groups, and each patch is
    flattened as (channel, temporal, row, col) like the Conv3d kernel HF applies to it."""
    c, h, w = image_chw.shape
    gh, gw = h // patch_size, w // patch_size
    if gh * patch_size != h or gw * patch_size != w or gh % merge_size or gw % merge_size:
        raise ValueError(f"image {h}x{w} is not a multiple of {patch_size * merge_size}")
    x = image_chw.reshape(c, gh // merge_size, merge_size, patch_size,
                          gw // merge_size, merge_size, patch_size)
    x = x.transpose(1, 4, 2, 5, 0, 3, 6)  # [gh/m, gw/m, m, m, C, p, p]
    x = np.broadcast_to(x[:, :, :, :, :, None], x.shape[:5] + (temporal_patch_size,) + x.shape[5:])
    return x.reshape(gh * gw, c * temporal_patch_size * patch_size * patch_size), gh, gw


def preprocess_image(image, image_size: int, patch_size: int = 14, merge_size: int = 2,
                     temporal_patch_size: int = 2) -> tuple[np.ndarray, tuple[int, int, int]]:
    """PIL image -> (patches float32 [P, 3*tp*p*p], grid_thw (1, gh, gw)) in patch units.

    The image is converted to RGB and resized (bicubic, like HF) to image_size x image_size,
    which must be a multiple of patch_size * merge_size (28)."""
    from PIL import Image

    factor = patch_size * merge_size
    if image_size % factor:
        raise ValueError(f"image_size {image_size} is not a multiple of {factor}")
    image = image.convert("RGB")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    x = np.asarray(image, np.float32) * np.float32(1 / 255)  # [H, W, 3]
    x = (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    patches, gh, gw = patchify(x.transpose(2, 0, 1), patch_size, merge_size, temporal_patch_size)
    return np.ascontiguousarray(patches, np.float32), (1, gh, gw)


def vision_patch_positions(grid_h: int, grid_w: int, merge_size: int = 2) -> np.ndarray:
    """(row, col) of every patch in HF patch order: int32 [gh*gw, 2]."""
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    blocks = (grid_h // merge_size, merge_size, grid_w // merge_size, merge_size)
    rows = rows.reshape(blocks).transpose(0, 2, 1, 3).reshape(-1)
    cols = cols.reshape(blocks).transpose(0, 2, 1, 3).reshape(-1)
    return np.stack([rows, cols], axis=-1).astype(np.int32)


def vision_window_ids(grid_h: int, grid_w: int, *, window_size: int, patch_size: int = 14,
                      merge_size: int = 2) -> np.ndarray:
    """Window-attention group of every patch (HF order): int32 [gh*gw].

    HF's windowed blocks attend within windows of window_size px (window_size // patch_size
    // merge_size merged tokens per side, windows tiled from the top-left, ragged at the
    bottom/right). HF permutes tokens so windows are contiguous; attention with a
    same-window mask gives the same result without the permutation."""
    per_side = window_size // patch_size // merge_size  # merged tokens per window side
    rc = vision_patch_positions(grid_h, grid_w, merge_size) // merge_size  # merged (row, col)
    windows_w = -(-(grid_w // merge_size) // per_side)
    return ((rc[:, 0] // per_side) * windows_w + rc[:, 1] // per_side).astype(np.int32)


def mrope_positions(tokens: Sequence[int] | np.ndarray, image_grids: Sequence[tuple[int, int, int]],
                    start: int, *, image_pad_id: int) -> tuple[np.ndarray, int]:
    """M-RoPE (t, h, w) positions of one token chunk: (int32 [3, T], next_start).

    `image_grids` holds each image's *merged* grid (t, h, w) in token order; an image is a
    run of t*h*w `image_pad_id` tokens. Text tokens get consecutive positions (all three
    equal) from `start`; an image starting at position s gets (s + t_idx, s + h_idx,
    s + w_idx) and the text after it continues at max(its positions) + 1, as HF
    `get_rope_index` does for images. Chunks compose: positions of a prompt then of a chunk
    computed with start=next_start equal those of the concatenation."""
    tokens = np.asarray(tokens)
    n = len(tokens)
    out = np.zeros((3, n), np.int64)
    grids = list(image_grids)
    pos, i, used = int(start), 0, 0
    while i < n:
        if tokens[i] != image_pad_id:
            out[:, i] = pos
            pos, i = pos + 1, i + 1
            continue
        if used == len(grids):
            raise ValueError(f"image placeholder at token {i} but only {len(grids)} image grids")
        gt, gh, gw = (int(g) for g in grids[used])
        count = gt * gh * gw
        if i + count > n or np.any(tokens[i:i + count] != image_pad_id):
            raise ValueError(f"image {used} needs {count} consecutive placeholders at token {i}")
        t_idx, h_idx, w_idx = np.meshgrid(np.arange(gt), np.arange(gh), np.arange(gw),
                                          indexing="ij")
        out[:, i:i + count] = pos + np.stack([t_idx, h_idx, w_idx]).reshape(3, count)
        pos = int(out[:, i:i + count].max()) + 1
        i, used = i + count, used + 1
    if used != len(grids):
        raise ValueError(f"{len(grids)} image grids given but {used} images in the tokens")
    return out.astype(np.int32), pos
