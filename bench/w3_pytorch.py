#!/usr/bin/python3
"""W3 in PyTorch, single-threaded, for the ratio in docs/performance.md.

The same workload as bench_w3_mlp_batch: 784-128-10 ReLU MLP in float64,
J = 1/2 ||yhat - y||^2 averaged over batches of 64, plain SGD lr 0.01, one
epoch over the first 10 000 Fashion-MNIST training images (the last partial
batch dropped), weights uniform +-sqrt(6/fan_in), biases 0. Median of 7
timed epochs after one warm-up, each from the same initial weights. Prints
one human line and one JSON line. Run by bench/run when torch is installed
(Debian: python3-torch).
"""
import gzip
import json
import statistics
import struct
import time

import torch

DIR = "/usr/share/datasets/fashion-mnist"


def load(split, limit):
    with gzip.open(f"{DIR}/{split}-images-idx3-ubyte.gz") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051
        n = min(n, limit)
        x = torch.frombuffer(bytearray(f.read(n * rows * cols)), dtype=torch.uint8)
    with gzip.open(f"{DIR}/{split}-labels-idx1-ubyte.gz") as f:
        magic, _ = struct.unpack(">II", f.read(8))
        assert magic == 2049
        y = torch.frombuffer(bytearray(f.read(n)), dtype=torch.uint8)
    return x.reshape(n, rows * cols).double() / 255.0, y.long()


def main():
    torch.set_num_threads(1)
    torch.manual_seed(42)
    X, labels = load("train", 10000)
    Y = torch.nn.functional.one_hot(labels, 10).double()
    B, lr = 64, 0.01
    steps = X.shape[0] // B
    r1, r2 = (6 / 784) ** 0.5, (6 / 128) ** 0.5
    W1i = (torch.rand(128, 784, dtype=torch.float64) * 2 - 1) * r1
    W2i = (torch.rand(10, 128, dtype=torch.float64) * 2 - 1) * r2
    times, loss_mean = [], 0.0
    for rep in range(8):
        W1 = W1i.clone().requires_grad_()
        b1 = torch.zeros(128, dtype=torch.float64, requires_grad=True)
        W2 = W2i.clone().requires_grad_()
        b2 = torch.zeros(10, dtype=torch.float64, requires_grad=True)
        params = [W1, b1, W2, b2]
        total = 0.0
        t0 = time.perf_counter()
        for s in range(steps):
            xb, yb = X[s * B:(s + 1) * B], Y[s * B:(s + 1) * B]
            out = torch.relu(xb @ W1.T + b1) @ W2.T + b2
            loss = 0.5 * ((out - yb) ** 2).sum() / B
            for p in params:
                p.grad = None
            loss.backward()
            with torch.no_grad():
                for p in params:
                    p -= lr * p.grad
            total += loss.item()
        t1 = time.perf_counter()
        if rep > 0:
            times.append(t1 - t0)
        loss_mean = total / steps
    med = statistics.median(times)
    rate = steps * B / med
    print(f"W3 PyTorch {torch.__version__} (1 thread, float64): {rate:.0f} samples/s "
          f"({med:.3f} s/epoch), mean loss {loss_mean:.6f}")
    print(json.dumps({"workload": "W3", "variant": "pytorch", "median": rate,
                      "min": steps * B / max(times), "max": steps * B / min(times),
                      "unit": "samples/s"}))


if __name__ == "__main__":
    main()
