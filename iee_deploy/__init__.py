"""iee-deploy: hardware-aware sparsification (IEE) and deployment toolkit for CNNs.

Pipeline: profile a target into latency lookup tables (`profiler`), train a sparse network with
IEE under a latency or sparsity budget (`iee_deploy.methods`, `iee_deploy.train`), physically
shrink it and build an engine (`iee_deploy.deploy`), then validate it for deployment.
"""

__version__ = "0.1.0"
