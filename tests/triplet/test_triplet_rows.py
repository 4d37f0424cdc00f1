"""The compiled row passes of the triplet sweep (numba) against the torch passes they replace,
and each pass against a plain loop."""
import math

import numpy as np
import pytest
import torch

from fastcontrast._torch import triplet as impl
from fastcontrast._torch import triplet_rows
from tests.triplet.test_triplet_torch import KINDS, cfg_for, run

pytestmark = pytest.mark.skipif(not triplet_rows.AVAILABLE, reason="numba is not installed")


@pytest.fixture(autouse=True)
def every_piece_compiled(monkeypatch):
    """The compiled passes for pieces of any size (by default small ones keep the torch passes)."""
    monkeypatch.setattr(triplet_rows, "MIN_ELEMENTS", 0)

FILTER_MODES = ["batch_all", "all", "hard", "semihard", "easy"]
KEEPS = [(0.0, math.inf), (0.1, math.inf), (-1.0, 0.4), (0.05, 0.3), (-1.0, 0.0)]


def _both(monkeypatch, *args):
    """run(*args) with the compiled passes, then with the torch passes."""
    monkeypatch.setattr(triplet_rows, "AVAILABLE", True)
    compiled = run(*args)
    monkeypatch.setattr(triplet_rows, "AVAILABLE", False)
    torch_passes = run(*args)
    monkeypatch.setattr(triplet_rows, "AVAILABLE", True)
    return compiled, torch_passes


def _same(a, b, msg):
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]), f"counts {msg}"
    # the values' float64 sums run in another order: at most an ulp of float32 apart
    torch.testing.assert_close(a[0], b[0], rtol=2e-7, atol=0, msg=f"values {msg}")
    ga = a[3] if isinstance(a[3], tuple) else (a[3],)
    gb = b[3] if isinstance(b[3], tuple) else (b[3],)
    for x, y in zip(ga, gb):          # the gradient coefficients are integers: bitwise equal
        assert torch.equal(x, y), f"grad {msg}"


@pytest.mark.parametrize("mining", FILTER_MODES)
@pytest.mark.parametrize("kind,negate", KINDS)
@pytest.mark.parametrize("keep", KEEPS)
def test_compiled_passes_match_torch_passes(mining, kind, negate, keep, gen, monkeypatch):
    q = torch.randn(29, 6, generator=gen)
    y = torch.randint(0, 4, (29,), generator=gen)
    q[7] = q[2]                                     # ties across the merged rows
    q[11] = -0.0 * q[11]                            # −0.0 entries (dot: −0.0 products)
    g = torch.rand(29, generator=gen) + 0.5
    cfg = cfg_for(mining, kind, negate, term_keep=keep)
    a, b = _both(monkeypatch, q, q, y, y, cfg, g)
    _same(a, b, cfg)


@pytest.mark.parametrize("mining", FILTER_MODES)
def test_compiled_passes_in_pieces_and_reference_sets(mining, gen, monkeypatch):
    """Pieces of one label group (its positives dropped from the rows) and mixed pieces (dead
    columns), a reference set, and a self offset into it."""
    q = torch.randn(21, 5, generator=gen)
    r = torch.randn(33, 5, generator=gen)
    ql, rl = torch.randint(0, 3, (21,), generator=gen), torch.randint(0, 3, (33,), generator=gen)
    r[6:27], rl[6:27] = q, ql
    g = torch.rand(21, generator=gen) + 0.5
    for budget, min_rows in ((1 << 30, 1 << 30), (200, 2), (1, 1)):
        monkeypatch.setattr(impl, "SWEEP_BUDGET", budget)
        monkeypatch.setattr(impl, "MIN_GROUP_ROWS", min_rows)
        for offset in (-1, 6):
            cfg = cfg_for(mining, "euclidean", False, self_offset=offset)
            a, b = _both(monkeypatch, q, r, ql, rl, cfg, g)
            _same(a, b, (budget, offset))
        a, b = _both(monkeypatch, q, q, ql, ql, cfg_for(mining, "dot", True), g)
        _same(a, b, (budget, "self"))


@pytest.mark.parametrize("threads", [2, 3])
def test_pieces_on_threads_match_one_thread(threads, gen, monkeypatch):
    """A tile's pieces run on several threads (each with its own key buffer, pieces of
    different widths) give what one thread and the torch passes give, run after run."""
    q = torch.randn(40, 5, generator=gen)
    y = torch.randint(0, 4, (40,), generator=gen)
    y[:14] = 0                                       # one big group: pieces of its own
    g = torch.rand(40, generator=gen) + 0.5
    monkeypatch.setattr(impl, "SWEEP_BUDGET", 150)   # a dozen pieces per tile
    cfg = cfg_for("semihard", "euclidean", False)
    ran = []
    real_run = triplet_rows.run
    monkeypatch.setattr(triplet_rows, "run", lambda pieces: (ran.append(len(pieces)), real_run(pieces))[1])
    monkeypatch.setattr(triplet_rows.torch, "get_num_threads", lambda: 1)
    one = run(q, q, y, y, cfg, g)
    monkeypatch.setattr(triplet_rows.torch, "get_num_threads", lambda: threads)
    many = [run(q, q, y, y, cfg, g) for _ in range(3)]
    assert max(ran) >= 2 * threads
    for got in many:
        for a, b in zip(got[:3] + (got[3],), one[:3] + (one[3],)):
            assert torch.equal(a, b)
    a, b = _both(monkeypatch, q, q, y, y, cfg, g)
    _same(a, b, threads)


def test_an_error_in_a_piece_reaches_the_caller(monkeypatch):
    class Broken:
        shape = (1, 1)

        def run(self, buffer):
            raise RuntimeError("piece failed")

    monkeypatch.setattr(triplet_rows.torch, "get_num_threads", lambda: 2)
    with pytest.raises(RuntimeError, match="piece failed"):
        triplet_rows.run([Broken(), Broken(), Broken()])


def test_compiled_path_is_taken(gen, monkeypatch):
    """The float32 CPU sweep calls the compiled passes (so the comparisons above compare
    two different implementations)."""
    calls = []
    for name in ("pack_keys", "sweep"):
        fn = getattr(triplet_rows, name)
        monkeypatch.setattr(triplet_rows, name, lambda *a, _fn=fn, _n=name: (calls.append(_n), _fn(*a))[1])
    q = torch.randn(12, 4, generator=gen)
    y = torch.randint(0, 3, (12,), generator=gen)
    run(q, q, y, y, cfg_for("semihard", "euclidean", False), torch.ones(12))
    assert {"pack_keys", "sweep"} <= set(calls)


def test_small_pieces_keep_the_torch_passes(gen, monkeypatch):
    calls = []
    for name in ("pack_keys", "sweep"):
        monkeypatch.setattr(triplet_rows, name, lambda *a, _n=name: calls.append(_n))
    monkeypatch.setattr(triplet_rows, "MIN_ELEMENTS", 1 << 16)
    q = torch.randn(12, 4, generator=gen)
    y = torch.randint(0, 3, (12,), generator=gen)
    run(q, q, y, y, cfg_for("semihard", "euclidean", False), torch.ones(12))
    assert calls == [] and triplet_rows.usable(1 << 16) and not triplet_rows.usable((1 << 16) - 1)


def test_pack_keys_order_and_words(gen):
    """Keys sort like (value, tie class, position); −0.0 sorts with +0.0; the low word holds
    tie_word | position."""
    v = np.array([[1.5, -2.0, 0.0, -0.0, -1e-40, 3e38, -3e38, 0.25]], dtype=np.float32)
    key = np.empty((1, 8), np.int64)
    triplet_rows.pack_keys(v.view(np.int32), 10, 1 << 30, False, key, 0)
    assert list(key[0] & 0xFFFFFFFF) == [(1 << 30) | (10 + k) for k in range(8)]
    order = np.argsort(key[0], kind="stable")
    by_value = sorted(range(8), key=lambda k: (float(v[0, k]) + 0.0, k))
    assert list(order) == by_value
    # nonneg: the bits themselves (positive values only)
    w = np.abs(v)
    w[0, 7] = -0.0                      # ≥ +0 too: its key is +0.0's
    triplet_rows.pack_keys(w.view(np.int32), 0, -(1 << 31), True, key, 0)   # tie class 2: low word ≥ 2^31
    assert list(key[0] >> 32) == list((w + np.float32(0)).view(np.int32)[0])
    assert list(key[0] & 0xFFFFFFFF) == [(2 << 30) | k for k in range(8)]


def test_numba_is_imported_only_when_a_piece_needs_it():
    import subprocess
    import sys
    code = ("import sys, torch, fastcontrast as fc\n"
            "x, y = torch.randn(16, 4, requires_grad=True), torch.arange(16) % 3\n"
            "fc.triplet_margin_loss(x, y, mining='semihard', backend='torch').backward()\n"
            "assert 'numba' not in sys.modules, 'numba imported for a small batch'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_helper_outlives_a_failed_run(monkeypatch):
    """When this thread's piece fails, run still waits for the helpers' pieces before it
    raises (they write into the caller's tensors)."""
    import threading
    import time
    done = []

    class Piece:
        shape = (1, 1)

        def run(self, buffer):
            if threading.current_thread() is threading.main_thread():
                raise RuntimeError("piece failed")
            time.sleep(0.3)
            done.append(1)

    monkeypatch.setattr(triplet_rows.torch, "get_num_threads", lambda: 2)
    with pytest.raises(RuntimeError, match="piece failed"):
        triplet_rows.run([Piece(), Piece()])
    assert done


def test_a_forked_child_runs_its_pieces():
    """The pool's threads do not survive a fork: a child that runs pieces after its parent
    did must not wait on them. (Only the pool is exercised: torch's own OpenMP ops are not
    fork-safe after the parent used them, so the child runs no torch op.)"""
    import subprocess
    import sys
    code = (
        "import os, numpy as np\n"
        "from fastcontrast._torch import triplet_rows\n"
        "triplet_rows.torch.get_num_threads = lambda: 2\n"
        "class Piece:\n"
        "    shape = (1, 1)\n"
        "    def __init__(self, out, k): self.out, self.k = out, k\n"
        "    def run(self, buffer): self.out[self.k] = self.k\n"
        "def pieces():\n"
        "    out = np.zeros(6)\n"
        "    triplet_rows.run([Piece(out, k) for k in range(6)])\n"
        "    return list(out)\n"
        "assert pieces() == list(range(6)) and triplet_rows._pools\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if pieces() == list(range(6)) else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "assert os.waitstatus_to_exitcode(status) == 0\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("n", [1, 9, 300])
def test_first_above_matches_the_torch_searches(n, gen):
    """semihard_tfa's compiled choice of negative rank equals the torch searchsorted form, with
    ties, ±0.0, thresholds on, below and above the values, and rows without negatives."""
    c, p = 23, 17
    d = torch.randint(-3, 4, (c, n), generator=gen).float() * 0.5
    d[torch.rand(c, n, generator=gen) < 0.2] = -0.0
    mask = torch.rand(c, n, generator=gen) < 0.6
    mask[0] = False                                               # no negative at all
    mask[1] = True
    s, _, n_neg = impl._padded_sort(d, mask)
    x = torch.randint(-4, 5, (c, p), generator=gen).float() * 0.5  # on, between, outside the values
    x[torch.rand(c, p, generator=gen) < 0.2] = -0.0
    above = torch.searchsorted(s, x, right=True)
    far = torch.searchsorted(s, s.gather(1, (n_neg - 1).clamp_min(0)[:, None]), right=False)
    want = torch.where(above < n_neg[:, None], above, far).clamp_max(n - 1)
    got = torch.empty(c, p, dtype=torch.int64)
    triplet_rows.first_above(s.numpy(), n_neg.numpy(), x.numpy(), got.numpy())
    assert torch.equal(got, want)


def test_semihard_tfa_takes_the_compiled_search(gen, monkeypatch):
    calls = []
    fn = triplet_rows.first_above
    monkeypatch.setattr(triplet_rows, "first_above", lambda *a: (calls.append(1), fn(*a))[1])
    q = torch.randn(30, 4, generator=gen)
    y = torch.randint(0, 3, (30,), generator=gen)
    cfg = cfg_for("semihard_tfa", "euclidean", False)
    got = run(q, q, y, y, cfg, torch.ones(30))
    assert calls
    monkeypatch.setattr(triplet_rows, "AVAILABLE", False)
    want = run(q, q, y, y, cfg, torch.ones(30))
    for a, b in zip(got[:3] + (got[3],), want[:3] + (want[3],)):
        assert torch.equal(a, b)
