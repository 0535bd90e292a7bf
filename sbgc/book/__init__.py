"""The book: the notebook runner (``runner``; ``python -m sbgc.book``), the profiles (``profiles``) and
the provenance of every number (``provenance``) and the verified results cache (``cache``).
"""
