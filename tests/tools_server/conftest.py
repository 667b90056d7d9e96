"""Shared helpers for the tool tests."""

import pytest


class OneImageContext:
    """A ToolContext whose every image id names one given image; tools must not add images."""

    def __init__(self, image):
        self._image = image

    def image(self, image_id, *, argument="image"):
        return self._image

    def add_image(self, image):
        raise AssertionError("this tool should produce no images")


@pytest.fixture
def one_image_context():
    return OneImageContext
