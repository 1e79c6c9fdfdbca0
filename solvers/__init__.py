"""Pure optimisation for channel selection: problem in, selection out. No torch inside.

Prune and grow are multiple-choice knapsacks over channel groups (see issue 5 / the README).
"""
