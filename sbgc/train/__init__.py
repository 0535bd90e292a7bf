"""Training: the loop shared by every model (``loop``), the score model's trainer and command line
(``score``; ``python -m sbgc.train``), the discriminative baseline (``baseline``), checkpoints
(``checkpoint``) and the shipped models loaded by name (``pretrained``).
"""
