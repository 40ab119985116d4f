"""Torch tensors built on first read, so that building a teacher or a feature map (config
validation does, while Snakemake plans the workflow) imports no torch."""

from __future__ import annotations


class tensor_of:  # noqa: N801 - used like `property`
    """Attribute descriptor: the numpy array in attribute `source` as a torch tensor sharing its
    memory (`torch.from_numpy`: same dtype, same numbers), made on first read and then cached on
    the instance. Assigning the attribute replaces the cached tensor."""

    def __init__(self, source: str):
        self.source = source

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        import torch

        value = torch.from_numpy(getattr(obj, self.source))
        obj.__dict__[self.name] = value  # a non-data descriptor: later reads find the instance's copy
        return value
