"""ToolContexts for calling a tool's `run` directly, without a server."""

from __future__ import annotations


class RecordingContext:
    """Serves one image under any id and keeps the images the tool adds (ids img00000001, ...)."""

    def __init__(self, image):
        self.source, self.added = image, []

    def image(self, image_id, *, argument="image"):
        return self.source

    def add_image(self, image):
        self.added.append(image)
        return f"img{len(self.added):08d}"
