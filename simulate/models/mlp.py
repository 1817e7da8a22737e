"""A multilayer perceptron (one or two tanh hidden layers, softmax cross-entropy).

Backpropagation in NumPy on a flat parameter vector ``w`` of length
``d = sum (fan_in + 1) * fan_out``; the hidden widths set ``d``.
"""

from __future__ import annotations

import itertools

import numpy as np

from .base import TAG_INIT, DataModel


class MLP(DataModel):
    """An MLP on the data set of a checked ``[model]`` table with ``kind = "mlp"``.

    Parameters
    ----------
    model : dict
        ``dataset``, ``hidden`` (one or two widths), ``l2``, ``batch_size``, ...
    workers : int
        Number of workers ``W`` (shards).
    seed : int
        The run's seed (data, shards, initial weights).
    dtype : dtype
        Floating type of the data and parameters.
    """

    def __init__(self, model: dict, workers: int, seed: int, dtype):
        super().__init__(model, workers, seed, dtype)
        self.sizes = [self.data.x_train.shape[1], *model["hidden"], self.data.classes]
        self.shapes = list(itertools.pairwise(self.sizes))
        self.d = sum((a + 1) * b for a, b in self.shapes)

    def layers(self, w: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views ``(W_l, b_l)`` of each layer into the flat vector ``w``."""
        out, start = [], 0
        for a, b in self.shapes:
            weight = w[start : start + a * b].reshape(a, b)
            out.append((weight, w[start + a * b : start + (a + 1) * b]))
            start += (a + 1) * b
        return out

    def init(self):
        w = np.zeros(self.d, dtype=self.dtype)
        rng = np.random.default_rng([self.seed, TAG_INIT])
        for weight, _ in self.layers(w):
            weight[...] = rng.standard_normal(weight.shape) / np.sqrt(weight.shape[0])
        return w

    def _forward(self, w, x):
        acts = [np.asarray(x, dtype=w.dtype)]
        params = self.layers(w)
        for weight, bias in params[:-1]:
            acts.append(np.tanh(acts[-1] @ weight + bias))
        weight, bias = params[-1]
        return acts, acts[-1] @ weight + bias

    @staticmethod
    def _log_softmax(logits):
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def _loss_grad(self, w, x, y, grad):
        acts, logits = self._forward(w, x)
        logp = self._log_softmax(logits)
        n = max(y.size, 1)
        value = float(-logp[np.arange(y.size), y].sum() / n)
        if not grad:
            return value, None
        g = np.zeros_like(w)
        delta = np.exp(logp)
        delta[np.arange(y.size), y] -= 1.0
        delta /= n
        params, grads = self.layers(w), self.layers(g)
        for layer in range(len(params) - 1, -1, -1):
            gw, gb = grads[layer]
            gw[...] = acts[layer].T @ delta
            gb[...] = delta.sum(axis=0)
            if layer:
                delta = (delta @ params[layer][0].T) * (1.0 - acts[layer] ** 2)
        return value, g

    def _predict(self, w, x):
        return np.argmax(self._forward(w, x)[1], axis=1)

    def hvp(self, w, v, eps: float = 1e-5):
        """``H(w) v`` by central differences of the full gradient, in float64."""
        w, v = np.asarray(w, dtype=np.float64), np.asarray(v, dtype=np.float64)
        norm = np.linalg.norm(v)
        if norm == 0:
            return np.zeros_like(v)
        h = eps * max(1.0, np.linalg.norm(w)) / norm
        return (self.gradient(w + h * v) - self.gradient(w - h * v)) / (2 * h)
