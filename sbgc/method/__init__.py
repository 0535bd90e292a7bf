"""The method: the sub-VP SDE, the class-conditional score network, maximum-likelihood score
matching, the exact log-likelihood by the probability-flow ODE, the variational bound and the
generative classifier argmax_y log p(x | y), each paper equation in one named function.

Modules: ``sde``, ``networks``, ``losses``, ``likelihood``, ``bound``, ``classify``, ``numerics``.
"""
