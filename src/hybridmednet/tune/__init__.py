"""``hybridmednet tune``: Optuna search over dotted config keys, scored on val only.

``space.py`` reads and checks the search space (every key and value is validated against the
config schema before any trial runs); ``study.py`` runs the study (each trial an ordinary run,
pruned from its per-epoch val scores, resumable and parallel through Optuna's storage) and tests
the best trial once.
"""
