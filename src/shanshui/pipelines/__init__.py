"""Pipelines: one file each (text_to_video, ...), plus model loading shared by all of them."""
