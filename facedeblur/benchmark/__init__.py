"""Benchmarks (``facedeblur bench``; conventions in ``docs/benchmark.md``).

* :mod:`.data`: the benchmark sets (PrAvg, VLA, kernel blur, real) built deterministically, and the manifest.
* :mod:`.baselines`: blurry input, unsharp masking, Wiener / Richardson-Lucy deconvolution.
* :mod:`.runner`: the resumable quality runner; :mod:`.report`: tables, CSV/JSON/Markdown; :mod:`.plots`: SVG.
* :mod:`.speed`: latency, throughput, peak memory, GFLOP/s; :mod:`.cli`: the command line.
* :mod:`.quality`: the earlier centre-moment / moments evaluator used by ``benchmarks/cfmd_quality.py``.

Nothing is imported here: each module loads when used.
"""
