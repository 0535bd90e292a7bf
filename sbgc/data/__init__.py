"""Data: CIFAR-10 (``cifar10``) and MNIST (``mnist``), found, checksum-verified, decoded once and
cached (``files``); the transforms into model space (``transforms``); the common corruptions
(``corruptions``); the command line ``python -m sbgc.data`` (``cli``).
"""
