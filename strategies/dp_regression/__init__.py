"""DP distributed Bayesian linear regression (Alparslan, Yildirim, Birbil, ICML 2023): what a
party releases (:mod:`.release`), the closed-form estimators (:mod:`.estimators`: non-private
posterior, Bayes-fixedS-fast, adaSSP) and the MCMC samplers (:mod:`.mcmc`: MCMC-normalX,
MCMC-fixedS), as pure numpy/scipy functions of the statistics and a random generator."""
