"""Model classes that live in an importable module (the tests folder is on sys.path)."""

import torch


class TinyNet(torch.nn.Module):
    def __init__(self, n_in: int = 4, n_out: int = 3):
        super().__init__()
        self.linear = torch.nn.Linear(n_in, n_out)

    def forward(self, x):
        return torch.softmax(self.linear(x), dim=-1)

    def embed(self, x):
        return self.linear(x)

    def on_cuda(self, x):
        """1.0 where the input reached this module on a CUDA device, else 0.0: where it really ran."""
        return torch.full((len(x),), float(x.is_cuda))


class TinyEmbed(torch.nn.Module):
    """Token ids in (integers that must stay integers), one float per sequence out."""

    def __init__(self, vocabulary: int = 10):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocabulary, 2)

    def forward(self, ids):
        return self.embedding(ids).sum(dim=(-1, -2))
