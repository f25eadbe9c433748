"""Data: video-text datasets, clip sampling, and the procedural ink-wash scenes (``shanshui.data.procedural``).

Submodules are imported explicitly by their users; importing this package loads nothing heavy.
"""
