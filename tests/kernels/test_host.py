"""The host-side pieces the three kernel families share (kernels/_host.py): the dtype rule
and input preparation, the config code checks, the squared row norms, the registered ops."""
import pytest
import torch

pytest.importorskip("triton")

from fastcontrast.kernels import _host, tiles  # noqa: E402

from fastcontrast.configs import PairMarginConfig, SoftmaxConfig, TripletConfig  # noqa: E402


@pytest.mark.parametrize("bad", ["q", "r"])
def test_float64_is_a_type_error_naming_the_family_and_the_argument(bad):
    x = torch.randn(4, 3)
    q, r = (x.double(), x) if bad == "q" else (x, x.double())
    labels = torch.arange(4)
    with pytest.raises(TypeError, match=f"triplet kernels take .* {bad}, got torch.float64"):
        _host.prepare(q, r, labels, labels, "triplet")


def test_prepare_makes_contiguous_inputs_in_q_dtype_and_int32_label_ids():
    q = torch.randn(3, 8)[:, ::2]  # not contiguous
    r = torch.randn(5, 4, dtype=torch.float16)
    q2, r2, ql, rl = _host.prepare(q, r, torch.arange(3, dtype=torch.int32), torch.zeros(5, dtype=torch.uint8),
                                   "softmax")
    assert q2.is_contiguous() and torch.equal(q2, q)
    assert r2.dtype == torch.float32 and torch.equal(r2, r.float())
    assert ql.dtype == rl.dtype == torch.int32 and torch.equal(ql, torch.arange(3, dtype=torch.int32))
    assert torch.equal(rl, torch.zeros(5, dtype=torch.int32))


@pytest.mark.parametrize("same", [True, False])
def test_label_ids_are_equal_exactly_where_labels_are(same):
    """Labels past the int32 range, negative ones and ones that differ only in their high
    bits map to int32 ids with the same equality pattern (within and across the two sides)."""
    g = torch.Generator().manual_seed(0)
    pool = torch.tensor([-2**62, -7, -1, 0, 3, 2**31, 2**32 + 3, 3 + 2**40, 2**63 - 1])
    q_labels = pool[torch.randint(0, len(pool), (41,), generator=g)]
    r_labels = q_labels if same else pool[torch.randint(0, len(pool), (23,), generator=g)]
    qi, ri = _host.label_ids(q_labels, r_labels)
    assert qi.dtype == ri.dtype == torch.int32 and (qi >= 0).all() and (ri >= 0).all()
    assert torch.equal(qi[:, None] == ri[None, :], q_labels[:, None] == r_labels[None, :])
    assert torch.equal(qi[:, None] == qi[None, :], q_labels[:, None] == q_labels[None, :])
    empty = torch.zeros(0, dtype=torch.int64)
    assert [t.numel() for t in _host.label_ids(empty, empty)] == [0, 0]


def test_bfloat16_runs_as_float32_in_the_interpreter_only():
    q = torch.randn(3, 4).bfloat16()
    labels = torch.arange(3)
    q2, r2, _, _ = _host.prepare(q, q, labels, labels, "pair-margin")
    want = torch.bfloat16 if _host.TRACEABLE else torch.float32
    assert q2.dtype == r2.dtype == want and torch.equal(q2.float(), q.float())


@pytest.mark.parametrize("cfg, field", [
    (SoftmaxConfig(kind="cosine"), "cfg.kind"),
    (PairMarginConfig(precision="fp8"), "cfg.precision"),
    (TripletConfig(precision="tf64"), "cfg.precision"),
])
def test_metric_code_names_the_bad_field(cfg, field):
    with pytest.raises(ValueError, match=field):
        _host.metric_code(cfg)


def test_codes_of_good_configs():
    assert _host.metric_code(PairMarginConfig(kind="sqeuclidean", precision="tf32")) == tiles.KIND_CODES["sqeuclidean"]
    assert _host.code(TripletConfig(mining="semihard"), "mining", {"semihard": 3}) == 3
    with pytest.raises(ValueError, match=r"cfg.mining must be one of \('all',\), got 'semihard'"):
        _host.code(TripletConfig(mining="semihard"), "mining", {"all": 1})


def test_squared_norms_are_exact_for_small_integers():
    # as metrics.pairwise computes them; a norm then a square misses the integer on most rows
    x = torch.randint(-9, 10, (64, 37), generator=torch.Generator().manual_seed(0)).to(torch.float16)
    exact = (x.double() ** 2).sum(1).float()
    assert torch.equal(_host.squared_norms(x, tiles.KIND_CODES["euclidean"]), exact)
    assert _host.squared_norms(x, tiles.KIND_CODES["dot"]).shape == (1,)


def test_every_family_registers_its_two_ops():
    from fastcontrast.kernels import lifted, pair_margin, softmax, triplet  # noqa: F401
    for family in ("softmax", "pair_margin", "triplet", "lifted"):
        for step in ("fwd", "bwd"):
            assert hasattr(torch.ops.fastcontrast, f"{family}_{step}")


def test_pow2():
    assert [_host.pow2(x, 16, 128) for x in (1, 16, 17, 100, 128, 1000)] == [16, 16, 32, 128, 128, 128]
