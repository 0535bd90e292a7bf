"""One module per book chapter: its computation, its tables and its figures.

``table1`` (accuracy and bits/dim, Fig. 1), ``corruption_robustness`` (Table 2, Fig. 4),
``adversarial`` and ``table3`` (attacks, Table 3), ``interpolation`` (Fig. 2), ``convergence``
(Fig. 3), ``compute`` (what a classification costs), ``evaluate`` (a model as a classifier on a
test set, ``python -m sbgc.experiments.evaluate``).
"""
