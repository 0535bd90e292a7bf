"""sbgc: score-based generative classifiers (Zimmermann et al., 2021), re-derived.

Modules: ``data`` (CIFAR-10), ``sde`` (sub-VP/VP SDEs), ``models`` (class-conditional score
U-Net), ``losses`` (maximum-likelihood score matching), ``train`` (training CLI), ``likelihood``
(exact log-likelihood via the probability-flow ODE), ``classify`` (the generative classifier).
"""

__version__ = "0.1.0"
