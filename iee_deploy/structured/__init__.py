"""Structured sparsity under a latency budget: channel groups as a space IEE and HALP update.

| module | what it holds |
|---|---|
| `budget` | `open_latency_model` (LUT checked against model and target), `resolve_budget` (Psi, infeasible budgets) |
| `costs` | prune and grow as latency knapsacks (pure), `solve_within` (true-latency check and tightening) |
| `taylor` | `TaylorImportance`: per-unit Taylor scores accumulated over iterations |
| `masks` | `ChannelMasks`: Theta_K as unit masks, MRU values, exact equivalence with the pruned model |
| `space` | `ChannelSpace`: the `ExplorationSpace[float]` (budgets in ms) of structured IEE and HALP |
"""
