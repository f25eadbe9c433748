"""The local web page (``shanshui ui``).

* :mod:`shanshui.ui.jobs` — everything the page does, without gradio: settings checks, the model cache,
  unique result files, cooperative cancellation, and the command line equivalent of each form. Tests
  call it directly.
* :mod:`shanshui.ui.app` — the gradio page around it (needs the ``ui`` extra: ``pip install shanshui[ui]``).
"""
