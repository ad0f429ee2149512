"""The installer that `python3 install.py` runs (docs/install.md): a plan first, printed, then carried out.

Modules: checkout (what this checkout holds), system (the machine), profiles (GIMP's folders),
torch_build (which torch), engine (the engine's Python), records (what was installed), plan,
steps (carrying the plan out), cli. Standard library only, Python 3.9+; errors.py parses on any
Python, so that install.py can say "too old" before anything else.
"""
