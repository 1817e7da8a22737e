"""Compressors used directly: bad vectors and messages are refused (issue 20, item 14)."""

from __future__ import annotations

import numpy as np
import pytest

from pysketch import _cuda
from pysketch.compress import CountSketchCompressor, Identity, RandomK, Threshold, TopK
from pysketch.compress.messages import Dense, SharedIndex, Sparse
from tests.conftest import on_device, to_host

D = 100


@pytest.mark.parametrize(
    "compressor",
    [Identity(D), TopK(D, 1), RandomK(D, 5), Threshold(D, 1.0)],
    ids=["identity", "topk", "randomk", "threshold"],
)
@pytest.mark.parametrize("length", [D - 1, D + 1])
def test_a_vector_of_another_length_is_refused(compressor, length):
    with pytest.raises(ValueError, match=rf"x must have shape \(100,\), got \({length},\)"):
        compressor.compress(np.ones(length))


def test_count_sketch_compressor_refuses_another_length():
    with pytest.raises(ValueError, match="x must have length d=100"):
        CountSketchCompressor(D, 3, 16, k=2).compress(np.ones(D + 1))


@pytest.mark.parametrize(
    "compressor, message, expected",
    [
        (Identity(D), Sparse(np.array([1]), np.array([2.0])), "Dense"),
        (TopK(D, 1), Dense(np.ones(D)), "Sparse or SharedIndex"),
        (RandomK(D, 5), Dense(np.ones(D)), "SharedIndex or Sparse"),
        (CountSketchCompressor(D, 3, 16, k=2), Dense(np.ones(D)), "Sketch"),
    ],
    ids=["identity", "topk", "randomk", "countsketch"],
)
def test_a_message_of_another_kind_is_a_type_error(compressor, message, expected):
    with pytest.raises(TypeError, match=f"message must be a {expected}"):
        compressor.decompress(message)


def test_identity_refuses_a_dense_message_of_another_length():
    with pytest.raises(ValueError, match=r"message.values must have shape \(100,\)"):
        Identity(D).decompress(Dense(np.ones(1)))


def test_count_sketch_compressor_refuses_a_sketch_of_other_hashes():
    ours = CountSketchCompressor(D, 3, 16, k=2, seed=0)
    theirs = CountSketchCompressor(D, 3, 16, k=2, seed=1).compress(np.ones(D))
    with pytest.raises(ValueError, match="message.sketch is not compatible.*seed"):
        ours.decompress(theirs)


@pytest.mark.parametrize("kind", ["topk", "randomk", "sketch"])
def test_compressors_round_trip_on_the_device(device, kind, rng):
    """Any CUDA array in, device arrays out, the CPU's values."""
    x = rng.standard_normal(D).astype(np.float32)
    compressor = {
        "topk": TopK(D, 5),
        "randomk": RandomK(D, 5, seed=3),
        "sketch": CountSketchCompressor(D, 5, 64, k=5, seed=2, device=device),
    }[kind]
    cpu = compressor if kind != "sketch" else CountSketchCompressor(D, 5, 64, k=5, seed=2)
    message = compressor.compress(on_device(x, device), step=4)
    expected = cpu.decompress(cpu.compress(x, step=4))
    np.testing.assert_allclose(to_host(compressor.decompress(message)), expected, rtol=1e-6)
    if kind == "topk":
        assert np.dtype(message.indices.dtype) == np.int32  # what travels for d < 2**31
    if device == "cuda":
        assert _cuda.is_cuda_array(message.payload[0])


def test_shared_index_messages_decode_with_top_k_as_well():
    message = SharedIndex(np.array([2, 5]), np.array([1.0, -1.0]))
    assert TopK(8, 2).decompress(message).tolist() == [0, 0, 1.0, 0, 0, -1.0, 0, 0]
