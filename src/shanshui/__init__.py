"""Shanshui (山水): bring landscape paintings to life with diffusion models.

Importing the package is cheap; the heavy pieces (torch, diffusers) load when you use them::

    from shanshui.pipelines.text_to_video import TextToVideoPipeline
"""

__version__ = "0.1.0"
