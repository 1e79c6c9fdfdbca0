"""A fake `tensorrt` for tests that pretend to run on a GPU host (see tests/hosts/sitecustomize.py).

It imports, reports a version and has the classes a version check looks for; building or running an
engine with it raises, because no TensorRT exists on the machines this suite runs on.
"""

__version__ = "10.99.0-fake-host"


class _Unusable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("the fake tensorrt of tests/hosts cannot build or run engines")


class Logger(_Unusable):
    WARNING = 2


Builder = Runtime = OnnxParser = _Unusable
