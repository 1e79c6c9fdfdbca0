"""Sparse state and the pure maths around it.

- `distributions`: Uniform / ERK / Non-uniform layer counts (pure).
- `nm`: N:M group layout (pure).
- `selection`: top-k prune and grow selections (pure).
- `state`: the protocol the training loop uses (trainable set, gradient masking, evaluation).
- `masks`: `WeightMasks`, the unstructured sparse state (Theta_K masks, MRU values).
- `weight_space`: `WeightSpace`, unstructured weights as a space IEE and the baselines update.
- `tracking`: IoU and survival-rate metrics of structure updates.
"""
