"""sbgc: score-based generative classifiers (Zimmermann et al., 2021), re-derived.

The folder tree is the architecture, from the bottom layer up:

- ``sbgc.method``: SDE, score network, losses, exact likelihood, variational bound, classifier.
- ``sbgc.data``: CIFAR-10 and MNIST, checksums and caches, model-space transforms, corruptions.
- ``sbgc.train``: the training loop, the score model and the baseline, checkpoints, shipped models.
- ``sbgc.experiments``: one module per book chapter (computation, tables, figures).
- ``sbgc.book``: notebook runner, profiles, provenance.
- ``sbgc.checks``: closed forms and the scipy reference, for tests and comparisons.
- ``sbgc.stats``, ``sbgc.report``: intervals and markdown tables shared by every layer.
"""

__version__ = "0.1.0"
