"""mvseg: fast semantic segmentation of compressed video with block motion vectors."""

__version__ = "0.1.0"
