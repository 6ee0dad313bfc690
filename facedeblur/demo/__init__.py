"""``facedeblur demo``: a local web page to try the zoo's models on a photo or a short video (issue #21).

:mod:`.callbacks` holds the work as plain functions (no gradio); :mod:`.app` builds the Gradio page (the optional
extra ``pip install "facedeblur[demo]"``). Nothing is imported here, so ``import facedeblur.demo`` needs no gradio.
"""
