"""One parser per document kind: bytes in, :class:`ExtractedText` out. Runs in the child."""
