"""The API users of PyTorch and DataSketches expect: frameworks, items, bytes, sums, sizing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pysketch
from pysketch import CountMinSketch, CountSketch, flatten, hashing, unflatten

torch = pytest.importorskip("torch")


# ------------------------------------------------------------------ PyTorch


def planted(d=1000):
    x = torch.zeros(d)
    x[[3, 70, 900]] = torch.tensor([50.0, -40.0, 30.0])
    return x


def test_torch_in_torch_out_for_sketches():
    sketch = CountSketch(1000, 5, 200, seed=7).accumulate(planted())
    for result in (
        sketch.estimate(),
        sketch.estimate(torch.tensor([3, 70])),
        sketch.desketch(torch.tensor([3])),
        *sketch.heavy_hitters(k=3),
        *sketch.heavy_hitters(threshold=0.5),
        *(sketch + sketch).heavy_hitters(k=3),  # sums keep the framework
        *sum([sketch, sketch]).heavy_hitters(k=3),
    ):
        assert isinstance(result, torch.Tensor)
    idx, values = sketch.heavy_hitters(k=3)
    assert idx.tolist() == [3, 70, 900] and values.tolist() == [50.0, -40.0, 30.0]
    cms = CountMinSketch(3, 64).update(torch.tensor([1, 2, 1]))
    assert isinstance(cms.estimate(torch.tensor([1])), torch.Tensor)
    assert isinstance(cms.upper_bound(torch.tensor([1])), torch.Tensor)


def test_numpy_in_numpy_out_even_after_torch_elsewhere():
    CountSketch(10, 2, 4).accumulate(torch.ones(10))  # another sketch saw torch
    sketch = CountSketch(10, 2, 4).accumulate(np.ones(10, np.float32))
    assert isinstance(sketch.estimate(), np.ndarray)
    assert isinstance(pysketch.topk(np.ones(5), 2)[0], np.ndarray)


def test_torch_in_torch_out_for_selections():
    x = planted()
    for result in (
        *pysketch.topk(x, 2),
        *pysketch.threshold(x, 35.0),
        pysketch.gather(x, torch.tensor([3, 70])),
        pysketch.scatter(torch.tensor([1, 3]), torch.tensor([2.0, 5.0]), 4),
    ):
        assert isinstance(result, torch.Tensor)
    assert pysketch.topk(x, 2)[0].tolist() == [3, 70]
    idx, val = pysketch.topk(torch.tensor([3.0, -5.0, 1.0]), 2, sorted=False)
    assert isinstance(idx, torch.Tensor) and isinstance(val, torch.Tensor)
    assert idx.tolist() == [0, 1] and val.tolist() == [3.0, -5.0]
    assert pysketch.scatter(torch.tensor([1]), torch.tensor([2.0]), 3).tolist() == [0, 2, 0]


def test_results_are_zero_copy_views_of_the_kernel_output():
    x = planted()
    values = pysketch.gather(x, torch.tensor([3]))
    assert np.from_dlpack(values).ctypes.data == values.data_ptr()


@pytest.mark.parametrize(
    "call",
    [
        lambda t: pysketch.topk(t, 1),
        lambda t: pysketch.threshold(t, 1.0),
        lambda t: CountSketch(4, 2, 4).accumulate(t),
        lambda t: CountMinSketch(2, 4).update_dense(t),
    ],
)
def test_requires_grad_and_bfloat16_get_a_clear_message(call):
    with pytest.raises(TypeError, match=r"requires grad.*x\.detach\(\)"):
        call(torch.ones(4, requires_grad=True))
    for dtype in (torch.bfloat16, torch.float16):
        with pytest.raises(TypeError, match=r"x\.float\(\)"):
            call(torch.ones(4, dtype=dtype))


def test_bad_tensor_leaves_the_sketch_unchanged():
    sketch = CountSketch(4, 2, 4).accumulate(np.ones(4))
    before = sketch.table.copy()
    with pytest.raises(TypeError):
        sketch.accumulate(torch.ones(4, requires_grad=True))
    np.testing.assert_array_equal(sketch.table, before)


def test_flatten_a_models_gradients():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model(torch.randn(5, 4)).sum().backward()
    grads = [p.grad for p in model.parameters()]
    flat = flatten(grads)
    d = sum(g.numel() for g in grads)
    assert isinstance(flat, torch.Tensor) and flat.shape == (d,)
    sketch = CountSketch(d, 5, 4 * d, seed=1).accumulate(flat)
    pieces = unflatten(sketch.estimate(), grads)
    assert [p.shape for p in pieces] == [g.shape for g in grads]
    with pytest.raises(TypeError, match=r"arrays\[0\] is a tensor that requires grad.*detach"):
        flatten(list(model.parameters()))  # as every pysketch function refuses them
    assert not flatten([p.detach() for p in model.parameters()]).requires_grad


def test_flatten_leaves_out_the_gradients_of_frozen_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)
    model(torch.randn(5, 4)).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert grads[0] is None
    flat = flatten(grads)
    assert flat.shape == (3 + 6 + 2,)
    pieces = unflatten(flat, grads)
    assert pieces[0] is None
    for piece, grad in zip(pieces[1:], grads[1:], strict=True):
        assert torch.equal(piece, grad)
    with pytest.raises(TypeError, match=r"arrays\[0\] is None.*skip_none=True"):
        flatten(grads, skip_none=False)


def test_flatten_and_unflatten_refuse_bad_input():
    with pytest.raises(ValueError, match="arrays"):
        flatten([])
    with pytest.raises(ValueError, match="at least one array"):
        flatten([None, None])
    with pytest.raises(TypeError, match="skip_none must be a bool"):
        flatten([np.zeros(2)], skip_none="no")
    with pytest.raises(ValueError, match="shape"):
        unflatten(np.zeros(5), [np.zeros(2)])


# ------------------------------------------------------------ DataSketches


def test_count_min_over_strings_and_bytes():
    cms = CountMinSketch(4, 256, seed=3)
    cms.update(["apple", "pear", "apple", b"apple"], [1.0, 2.0, 3.0, 10.0])
    assert cms.estimate("apple") == 4.0
    assert cms.estimate(b"apple") == 10.0
    assert cms.estimate(["pear", "plum"]).tolist() == [2.0, 0.0]
    assert cms.total_weight == 16.0
    assert cms.upper_bound("apple") >= cms.estimate("apple") >= cms.lower_bound("apple")


def test_item_keys_do_not_depend_on_the_process():
    code = "from pysketch.hashing import item_key; print(item_key('apple'), item_key(b'x'))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
            cwd=str(__import__("pathlib").Path(__file__).parents[1]),
            check=True,
        ).stdout
        for seed in (1, 2)
    }
    assert len(outs) == 1
    assert outs.pop().split() == [str(hashing.item_key("apple")), str(hashing.item_key(b"x"))]


@given(st.lists(st.one_of(st.text(), st.binary(), st.integers(0, 2**61 - 2)), max_size=20))
def test_item_keys_are_valid_indices(items):
    keys = hashing.item_keys(items)
    assert keys.shape == (len(items),)
    assert ((keys >= 0) & (keys <= hashing.MAX_INDEX)).all()


@pytest.mark.parametrize("bad", [1.5, None, object(), True])
def test_bad_items_are_refused_naming_their_type(bad):
    cms = CountMinSketch(2, 8)
    with pytest.raises(TypeError):
        cms.update(["a", bad])
    assert cms.total_weight == 0.0 and not cms.table.any()


def test_scalar_estimates():
    sketch = CountSketch(10, 3, 64, seed=1).accumulate(np.arange(10.0))
    assert sketch.estimate(4) == 4.0 and isinstance(sketch.estimate(4), float)
    assert sketch.estimate(np.int64(4)) == 4.0
    assert CountMinSketch(2, 8).update(5, 2.0).estimate(5) == 2.0


@given(st.integers(0, 2**64 - 1), st.booleans())
def test_serialize_round_trip(seed, count_min):
    if count_min:
        sketch = CountMinSketch(3, 8, seed=seed).update([1, 2, 2], [1.0, 2.0, 0.5])
    else:
        sketch = CountSketch(20, 3, 8, seed=seed).accumulate(np.linspace(-1, 1, 20))
    data = sketch.serialize()
    assert isinstance(data, bytes)
    again = type(sketch).deserialize(data)
    assert again == sketch and again is not sketch
    assert again.params == sketch.params


def test_deserialize_refuses_garbage():
    with pytest.raises(TypeError, match="bytes"):
        CountSketch.deserialize("not bytes")
    with pytest.raises(ValueError):
        CountSketch.deserialize(b"garbage")
    with pytest.raises(ValueError, match="pysketch.CountSketch"):
        CountSketch.deserialize(CountMinSketch(2, 4).serialize())


def test_equality():
    a = CountSketch(10, 2, 4, seed=1).accumulate(np.ones(10))
    assert a == a.copy()
    assert a != CountSketch(10, 2, 4, seed=2).accumulate(np.ones(10))
    assert a != CountSketch(10, 2, 4, seed=1)
    assert a != CountMinSketch(2, 4, seed=1) and a != "sketch"
    cm = CountMinSketch(2, 4).update([1])
    other = cm.copy()
    other._total_weight = 5.0
    assert cm != other  # the total weight counts too
    with pytest.raises(TypeError):
        hash(a)


@given(st.lists(st.lists(st.floats(-100, 100), min_size=6, max_size=6), min_size=1, max_size=4))
def test_sum_of_sketches_is_the_sketch_of_the_sum(vectors):
    sketches = [CountSketch(6, 3, 4, dtype=np.float64).accumulate(np.array(v)) for v in vectors]
    total = CountSketch(6, 3, 4, dtype=np.float64).accumulate(np.sum(vectors, axis=0))
    np.testing.assert_allclose(sum(sketches).table, total.table, atol=1e-9)
    counts = [CountMinSketch(2, 4).update([i], 1.0) for i in range(len(vectors))]
    assert sum(counts).total_weight == len(vectors)


def test_radd_only_with_zero():
    sketch = CountSketch(4, 2, 4)
    with pytest.raises(TypeError):
        1 + sketch
    with pytest.raises(TypeError):
        False + sketch


def test_seed_none_draws_and_records_a_seed():
    a, b = CountSketch(10, 2, 4, seed=None), CountMinSketch(2, 4, seed=None)
    assert isinstance(a.seed, int) and 0 <= a.seed < 2**64 and isinstance(b.seed, int)
    same = CountSketch(10, 2, 4, seed=a.seed)
    x = np.arange(10.0)
    assert a.accumulate(x) == same.accumulate(x)


def test_one_merge_name_on_both():
    for cls, args in ((CountSketch, (10, 2, 4)), (CountMinSketch, (2, 4))):
        assert callable(cls(*args).merge)


@pytest.mark.parametrize(
    "eps, delta, cols, rows", [(0.1, 0.1, 800, 9), (0.01, 0.01, 80_000, 17), (1.0, 0.5, 8, 3)]
)
def test_count_sketch_sizing(eps, delta, cols, rows):
    assert CountSketch.suggest_cols(eps) == cols
    assert CountSketch.suggest_rows(delta) == rows


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: CountSketch.suggest_cols(0), ValueError),
        (lambda: CountSketch.suggest_cols(2.0), ValueError),
        (lambda: CountSketch.suggest_cols("0.1"), TypeError),
        (lambda: CountSketch.suggest_cols(1e-6), ValueError),
        (lambda: CountSketch.suggest_rows(1.0), ValueError),
        (lambda: CountSketch.suggest_rows(1e-300), ValueError),
        (lambda: CountSketch.suggest_rows(True), TypeError),
    ],
)
def test_count_sketch_sizing_refuses_bad_input(call, error):
    with pytest.raises(error):
        call()


@pytest.mark.slow
def test_suggested_size_meets_its_guarantee():
    eps, delta = 0.2, 0.05
    cols, rows = CountSketch.suggest_cols(eps), CountSketch.suggest_rows(delta)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(5000)
    failures = 0
    for seed in range(20):
        est = CountSketch(5000, rows, cols, seed=seed, dtype=np.float64).accumulate(x).estimate()
        failures += int((np.abs(est - x) > eps * np.linalg.norm(x)).sum())
    assert failures / (20 * 5000) <= delta


def test_py_typed_is_shipped():
    from pathlib import Path

    root = Path(pysketch.__file__).parent
    assert (root / "py.typed").exists()
    assert "py.typed" in (root.parent / "pyproject.toml").read_text()
