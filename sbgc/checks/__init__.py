"""Independent checks: closed-form Gaussian-mixture scores (``analytic``), a 2-D toy score model
(``toy``) and the score_sde-style scipy reference solver (``reference``).
"""
