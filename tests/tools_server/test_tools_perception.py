"""Perception tools: crops and zooms are covered by the server tests; rotate and enhance
here, against pixels whose right place is known."""

import numpy as np
import pytest
from PIL import Image

from tools_server.registry import INVALID_ARGUMENT, ToolError
from tools_server.tools import default_registry
from tools_server.testing.contexts import RecordingContext as Context


def run(name, image, **arguments):
    ctx = Context(image)
    tool, args = default_registry().validate(name, {"image": "x", **arguments})
    out = tool.run(args, ctx)
    assert out.images == [f"img{len(ctx.added):08d}"] and len(ctx.added) == 1
    return out, ctx.added[0]


def marked(w=4, h=3):
    im = Image.new("RGB", (w, h), (255, 255, 255))
    im.putpixel((0, 0), (255, 0, 0))  # top-left
    return im


@pytest.mark.parametrize("degrees, size, red_at", [
    (90, (3, 4), (0, 3)),     # counter-clockwise: top-left goes to bottom-left
    (-90, (3, 4), (2, 0)),    # clockwise: to top-right
    (270, (3, 4), (2, 0)),
    (180, (4, 3), (3, 2)),
    (360, (4, 3), (0, 0)),
])
def test_rotate_by_right_angles_moves_pixels_exactly(degrees, size, red_at):
    out, image = run("rotate", marked(), degrees=degrees)
    assert image.size == size and (out.data["width"], out.data["height"]) == size
    assert image.getpixel(red_at) == (255, 0, 0)
    assert (np.asarray(image) == (255, 0, 0)).all(-1).sum() == 1


def test_rotate_by_other_angles_expands_the_canvas_with_white():
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    _, image = run("rotate", im, degrees=45)
    assert image.width > 40 and image.height > 20
    assert image.getpixel((0, 0)) == (255, 255, 255)  # corner outside the rotated rectangle
    cx, cy = image.width // 2, image.height // 2
    assert image.getpixel((cx, cy)) == (0, 0, 0)


def test_rotate_rejects_out_of_range_angles():
    with pytest.raises(ToolError) as e:
        default_registry().validate("rotate", {"image": "x", "degrees": 400})
    assert e.value.code == INVALID_ARGUMENT


def test_enhance_autocontrast_stretches_a_faint_image_and_identity_changes_nothing():
    faint = np.tile(np.linspace(100, 150, 64).astype(np.uint8), (16, 1))
    im = Image.fromarray(np.stack([faint] * 3, -1))
    _, same = run("enhance", im)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(im))
    _, stretched = run("enhance", im, autocontrast=True, grayscale=True)
    px = np.asarray(stretched)
    assert stretched.mode == "L" and px.min() <= 5 and px.max() >= 250
    _, contrasty = run("enhance", im, contrast=3.0)
    assert np.ptp(np.asarray(contrasty)) > 2 * np.ptp(faint)


def test_rotate_refuses_an_output_over_the_pixel_limit_before_making_it():
    from tools_server.tools.perception import Rotate
    im = Image.new("RGB", (2000, 1800))  # 3.6 M pixels fit; turned 45 degrees ~7.2 M do not
    ctx = Context(im)
    tool, args = default_registry().validate("rotate", {"image": "x", "degrees": 45})
    assert 2000 * 1800 <= Rotate.max_output_pixels
    with pytest.raises(ToolError) as e:
        tool.run(args, ctx)
    assert e.value.code == INVALID_ARGUMENT and not ctx.added
    tool, args = default_registry().validate("rotate", {"image": "x", "degrees": 90})
    assert tool.run(args, ctx).data["width"] == 1800
