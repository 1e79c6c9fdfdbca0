"""Sparse state and the pure maths around it.

- `distributions`: Uniform / ERK / Non-uniform layer counts (pure).
- `nm`: N:M group layout (pure).
- `selection`: top-k prune and grow selections (pure).
- `state`: the protocol the training loop uses (trainable set, gradient masking, evaluation).
- `masks`: `TensorMasks` (Theta_K masks and MRU values of any tensors) and `WeightMasks`, the unstructured state.
- `weight_space`: `WeightSpace`, unstructured weights as a space IEE and the baselines update.
- `tracking`: IoU and survival-rate metrics of structure updates.

The structured (channel) state and space live in `iee_deploy.structured`.
"""
