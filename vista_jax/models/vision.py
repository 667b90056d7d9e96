"""Host-side (numpy) preparation for Qwen2.5-VL: image patches and M-RoPE positions.

Everything here runs on the host before the compiled model sees the arrays:

- `preprocess_image`: PIL image -> pixel patches in the order of HF `Qwen2VLImageProcessor`
  (each 2x2 spatial-merge group contiguous), CLIP mean/std, the frame duplicated along
  `temporal_patch_size` as HF does for still images. Two resize modes, chosen explicitly:
  * fixed square (`image_size=`): every image becomes image_size x image_size, so a batch
    has one static grid and compiles once (the tiny CPU policy);
  * dynamic resolution (`min_pixels=, max_pixels=`): `smart_resize` exactly as HF's
    processor, aspect ratio kept, each image its own grid (real checkpoints; encode with
    `Qwen25VL.encode_images_varlen`).
- `vision_patch_positions` / `vision_window_ids` / `vision_patch_tables`: static per-grid
  tables the vision tower needs (2D rotary positions, window-attention groups, which image
  a patch belongs to), in the same patch order.
- `mrope_positions`: the decoder's (t, h, w) positions of one token chunk, as HF
  `Qwen2_5_VLModel.get_rope_index` computes them, but composable across chunks.
- `check_image_tokens`: image placeholders vs image feature rows, raised on the host
  (compiled code cannot raise on values).
"""

from __future__ import annotations

import math
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


# HF `Qwen2VLImageProcessor` defaults (size shortest_edge / longest_edge). The released
# Qwen2.5-VL checkpoints' preprocessor_config.json raises max_pixels to 12845056.
HF_MIN_PIXELS = 56 * 56
HF_MAX_PIXELS = 28 * 28 * 1280


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = HF_MIN_PIXELS,
                 max_pixels: int = HF_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) an image is resized to, exactly as HF `smart_resize` (transformers 5):
    both multiples of `factor`, aspect ratio kept as closely as possible, and the pixel
    count brought inside [min_pixels, max_pixels] when rounding alone leaves it outside
    (HF's float arithmetic and Python's round-half-to-even included).

    Raises ValueError, as HF does, when the aspect ratio exceeds 200; also (where HF would
    divide by zero or return a zero side) for a non-positive side or a zero result."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height} width={width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got "
                         f"{max(height, width) / min(height, width)} ({height}x{width})")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if h_bar <= 0 or w_bar <= 0:
        raise ValueError(f"smart_resize of {height}x{width} gave {h_bar}x{w_bar} "
                         f"(min_pixels={min_pixels}, max_pixels={max_pixels})")
    return h_bar, w_bar


def to_rgb(image):
    """PIL image -> RGB PIL image; transparency is composited onto white, as HF's
    `convert_to_rgb` does (a plain `convert("RGB")` would keep the hidden colours)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
            image = Image.fromarray(image)
        else:
            raise ValueError(f"expected a PIL image or a uint8 [H, W(, C)] array, got "
                             f"{type(image).__name__}")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess_image(image, image_size: int | None = None, *, min_pixels: int | None = None,
                     max_pixels: int | None = None, patch_size: int = 14, merge_size: int = 2,
                     temporal_patch_size: int = 2) -> tuple[np.ndarray, tuple[int, int, int]]:
    """PIL image -> (patches float32 [P, 3*tp*p*p], grid_thw (1, gh, gw)) in patch units.

    Exactly one mode:
    - `image_size` (fixed square): resized (bicubic) to image_size x image_size, a multiple
      of patch_size * merge_size (28). HF gives the same patches for an image already
      resized to that square.
    - `min_pixels` and `max_pixels` (dynamic resolution): resized (bicubic) to
      `smart_resize(h, w, 28, min_pixels, max_pixels)`; patches and grid equal HF
      `Qwen2VLImageProcessorPil(min_pixels=..., max_pixels=...)` bit for bit.
    The image is converted to RGB as HF does (alpha composited onto white), rescaled by
    1/255 in float64 then cast to float32, and normalised with the CLIP mean/std in
    float32: HF's exact arithmetic."""
    from PIL import Image

    factor = patch_size * merge_size
    dynamic = min_pixels is not None or max_pixels is not None
    if (image_size is not None) == dynamic or (dynamic and None in (min_pixels, max_pixels)):
        raise ValueError("preprocess_image: pass image_size (fixed square) or both min_pixels and "
                         f"max_pixels (dynamic resolution); got image_size={image_size}, "
                         f"min_pixels={min_pixels}, max_pixels={max_pixels}")
    image = to_rgb(image)
    if dynamic:
        if not 0 < min_pixels <= max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got min_pixels={min_pixels}, "
                             f"max_pixels={max_pixels}")
        size_hw = smart_resize(image.height, image.width, factor, min_pixels, max_pixels)
    else:
        if image_size <= 0 or image_size % factor:
            raise ValueError(f"image_size {image_size} is not a positive multiple of {factor}")
        size_hw = (image_size, image_size)
    if (image.height, image.width) != size_hw:  # PIL's resize to the same size is a copy
        image = image.resize(size_hw[::-1], Image.Resampling.BICUBIC)
    x = (np.asarray(image, np.float64) * (1 / 255)).astype(np.float32)  # [H, W, 3]
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


def check_grids(grids: Sequence[Sequence[int]], merge_size: int = 2
                ) -> tuple[tuple[int, int, int], ...]:
    """Validates image patch grids (t, gh, gw) (HF image_grid_thw) and returns them as a
    tuple of int triples (hashable: usable as a static jit argument)."""
    out = []
    for i, g in enumerate(grids):
        g = tuple(int(v) for v in g)
        if len(g) != 3:
            raise ValueError(f"image grid {i} is {g}, expected (t, h, w)")
        t, gh, gw = g
        if t != 1:
            raise ValueError(f"image grid {i} is {g}: only still images (t=1) are supported, "
                             "not video")
        if gh <= 0 or gw <= 0 or gh % merge_size or gw % merge_size:
            raise ValueError(f"image grid {i} is {g}: h and w must be positive multiples of "
                             f"merge_size {merge_size}")
        out.append(g)
    if not out:
        raise ValueError("no image grids given")
    return tuple(out)


def merged_grid(grid_thw: Sequence[int], merge_size: int = 2) -> tuple[int, int, int]:
    """Patch grid (t, gh, gw) -> the decoder's merged grid (t, gh/m, gw/m), as
    `mrope_positions` takes it; t*gh*gw/m^2 image placeholder tokens."""
    t, gh, gw = (int(v) for v in grid_thw)
    return t, gh // merge_size, gw // merge_size


def vision_patch_tables(grids: Sequence[Sequence[int]], *, window_size: int, patch_size: int = 14,
                        merge_size: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static tables of several images' patches concatenated in HF order:
    (row, col) int32 [P, 2], image index int32 [P], window id int32 [P].

    Positions restart at (0, 0) for each image; window ids are unique across images, so
    "same window" implies "same image" (HF's cu_window_seqlens never cross images either)."""
    pos, img, win = [], [], []
    n_windows = 0
    for i, (_, gh, gw) in enumerate(check_grids(grids, merge_size)):
        pos.append(vision_patch_positions(gh, gw, merge_size))
        img.append(np.full(gh * gw, i, np.int32))
        w = vision_window_ids(gh, gw, window_size=window_size, patch_size=patch_size,
                              merge_size=merge_size)
        win.append(w + n_windows)
        n_windows += int(w.max()) + 1
    return (np.concatenate(pos).astype(np.int32), np.concatenate(img).astype(np.int32),
            np.concatenate(win).astype(np.int32))


def check_image_tokens(tokens: Sequence[int] | np.ndarray, n_features: int, *,
                       image_pad_id: int) -> int:
    """Raises ValueError unless `tokens` holds exactly `n_features` image placeholder
    tokens; returns that count.

    Enforced on the host: jitted code cannot raise on values, and the compiled merge
    (`qwen2_5_vl.merge_image_embeds`) pads or reuses feature rows instead of failing.
    Callers check each sequence (or chunk) against the rows its images encode to
    (`sum(t*h*w) / merge_size**2` over its grids) before the compiled call;
    `Qwen25VL.__call__` also checks when called eagerly."""
    n_tokens = int(np.count_nonzero(np.asarray(tokens) == image_pad_id))
    if n_tokens != int(n_features):
        raise ValueError(f"{n_tokens} image placeholder tokens but {int(n_features)} image "
                         "feature rows")
    return n_tokens


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
