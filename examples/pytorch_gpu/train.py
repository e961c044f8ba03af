"""Train a small PyTorch classifier on iris and save it with a batchable signature.

python examples/pytorch_gpu/train.py
"""

import torch
from sklearn.datasets import load_iris

import raystore


class IrisNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.layers(x.float()), dim=-1)


def main() -> None:
    torch.manual_seed(0)
    X, y = load_iris(return_X_y=True)
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    net = IrisNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(net(X) + 1e-9), y)
        loss.backward()
        optimizer.step()
    accuracy = float((net(X).argmax(dim=1) == y).float().mean())
    print(
        raystore.pytorch.save_model(
            "iris_torch",
            net.eval(),
            metadata={"accuracy": accuracy},
            signatures={"__call__": {"batchable": True, "batch_dim": 0}},
        )
    )


if __name__ == "__main__":
    main()
