"""The book: the notebook runner (``runner``; ``python -m sbgc.book``), the typed profiles
(``profiles``), the provenance of every number (``provenance``) and the verified results cache
(``cache``).
"""
