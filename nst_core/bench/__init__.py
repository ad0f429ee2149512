"""The benchmarks: how fast the engine runs and what its features cost. No product module imports them.

    python -m nst_core.bench            one iteration against the machine's floor (iteration.py)
    python -m nst_core.bench.jobs       whole jobs against their plans (needs the test extra)
    python -m nst_core.bench.load       the cold start: the weights file read whole or as its copy
    python -m nst_core.bench.service    a plug-in's run, child process against the warm service
    python -m nst_core.bench.batch      one batch against separate `stylize` calls
    python -m nst_core.bench.frames     the flicker of animation frames, with and without --frames
    python -m nst_core.bench.snapshots  what snapshots cost a run, and the time to the first one

docs/performance.md and docs/batch.md have the figures.
"""
