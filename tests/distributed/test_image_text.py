"""SigLIP, DCL, symmetric InfoNCE with labels and the open_clip / lightly layers on spawned
gloo groups with unequal batches (float64). Native losses: GlobalBatchLoss under DDP equals
one process on the concatenated batch (tests/distributed/_cases.py). open_clip's layers:
each rank's value and feature / scale gradients equal what open_clip's own distributed
code gives, computed here in one process from the formulas."""
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

import fastcontrast as fc
from fastcontrast.compat import lightly as compat_lightly
from fastcontrast.compat.open_clip import ClipLoss, SigLipLoss
from fastcontrast.distributed import GlobalBatchLoss

from ._cases import check_global, split
from ._ranks import run_ranks


def paired(loss, query, labels, keys, key_labels):
    return loss(query, keys, labels, key_labels)


def native(loss, emb, labels, ref_emb, ref_labels):
    return loss(emb, labels, ref_emb=ref_emb, ref_labels=ref_labels)


CASES = {
    "siglip": (lambda: fc.SigLIPLoss(init_logit_bias=-2.0, backend="torch").double(),
               {"labels": "none", "ref": "same", "call": paired}),
    "siglip-labels-dot": (lambda: fc.SigLIPLoss(distance="dot", backend="torch").double(), {"ref": True, "call": paired}),
    "infonce-symmetric-labels": (lambda: fc.InfoNCELoss(symmetric=True, backend="torch"),
                                 {"ref": "same", "call": paired}),
    "dcl-views": (lambda: fc.DCLLoss(temperature=0.3, backend="torch"), {"labels": "views"}),
    "dcl-classes": (lambda: fc.DCLLoss(temperature=0.3, backend="torch"), {}),
    "pml-npairs": (lambda: __import__("fastcontrast.compat.pml.losses", fromlist=["x"]).NPairsLoss(backend="torch"),
                   {}),
}


def dense_clip_rows(image, text, scale, rows):
    """Σ over the given global rows of CE(image→text) and Σ of CE(text→image)."""
    logits = scale * image @ text.T
    target = torch.arange(image.shape[0])
    r = F.cross_entropy(logits[rows], target[rows], reduction="sum")
    c = F.cross_entropy(logits.T[rows], target[rows], reduction="sum")
    return r, c


def dense_siglip_rows(image, text, scale, bias, rows):
    logits = scale * image[rows] @ text.T + bias
    z = -torch.ones_like(logits)
    z[torch.arange(logits.shape[0]), torch.arange(rows.start, rows.stop)] = 1
    return -F.logsigmoid(z * logits).sum() / (rows.stop - rows.start)


def _open_clip_worker(rank, world, sizes):
    gen = torch.Generator().manual_seed(4)
    n = sum(sizes)
    image_all = F.normalize(torch.randn(n, 5, generator=gen, dtype=torch.float64), dim=1)
    text_all = F.normalize(torch.randn(n, 5, generator=gen, dtype=torch.float64), dim=1)
    rows = split(sizes, rank)
    blocks = [split(sizes, r) for r in range(world)]
    tol = dict(rtol=1e-9, atol=1e-11)
    for local_loss in (False, True):
        for with_grad in (False, True):
            tag = f"[ClipLoss local_loss={local_loss} gather_with_grad={with_grad} rank {rank}]"
            img = image_all[rows].clone().requires_grad_()
            txt = text_all[rows].clone().requires_grad_()
            log_scale = torch.tensor(math.log(12.0), dtype=torch.float64, requires_grad=True)
            loss = ClipLoss(local_loss=local_loss, gather_with_grad=with_grad, rank=rank, world_size=world,
                            backend="torch")(img, txt, log_scale.exp())
            g_img, g_txt, g_scale = torch.autograd.grad(loss, (img, txt, log_scale))
            # what open_clip gives on this rank, from one process
            ri = image_all.clone().requires_grad_()
            rt = text_all.clone().requires_grad_()
            rs = torch.tensor(math.log(12.0), dtype=torch.float64, requires_grad=True)
            if not local_loss:
                r, c = dense_clip_rows(ri, rt, rs.exp(), slice(0, n))
                want = (r + c) / (2 * n)
                gi, gt, gs = torch.autograd.grad(want, (ri, rt, rs))
                factor = world if with_grad else 1
                want_gi, want_gt, want_gs = factor * gi[rows], factor * gt[rows], gs
                if with_grad:  # each rank's scale gradient is its share's; their mean is ∂L/∂t
                    g_scale = g_scale.clone()
                    dist.all_reduce(g_scale)
                    g_scale = g_scale / world
            else:
                def local_value(r_, ri_, rt_, rs_):
                    a, b = dense_clip_rows(ri_, rt_, rs_.exp(), blocks[r_])
                    return (a + b) / (2 * sizes[r_])
                want = local_value(rank, ri, rt, rs)
                if with_grad:  # every rank's use of a feature comes back to its owner
                    total = sum(local_value(r_, ri, rt, rs) for r_ in range(world))
                    gi, gt = torch.autograd.grad(total, (ri, rt))
                    want_gi, want_gt = gi[rows], gt[rows]
                else:  # only the local features, as queries
                    li, lt = ri[rows], rt[rows]
                    logits_i = rs.exp() * li @ rt.detach().T
                    logits_t = rs.exp() * lt @ ri.detach().T
                    target = torch.arange(rows.start, rows.stop)
                    want = (F.cross_entropy(logits_i, target) + F.cross_entropy(logits_t, target)) / 2
                    gi, gt = torch.autograd.grad(want, (ri, rt), retain_graph=True)
                    want_gi, want_gt = gi[rows], gt[rows]
                want_gs, = torch.autograd.grad(want, (rs,))
            torch.testing.assert_close(loss.detach(), want.detach(), **tol, msg=f"{tag} value")
            torch.testing.assert_close(g_img, want_gi, **tol, msg=f"{tag} image grad")
            torch.testing.assert_close(g_txt, want_gt, **tol, msg=f"{tag} text grad")
            torch.testing.assert_close(g_scale, want_gs, **tol, msg=f"{tag} scale grad")
    # SigLipLoss: this rank's images against every rank's texts, over its own image count
    img = image_all[rows].clone().requires_grad_()
    txt = text_all[rows].clone().requires_grad_()
    ls = torch.tensor(math.log(9.0), dtype=torch.float64, requires_grad=True)
    lb = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    loss = SigLipLoss(rank=rank, world_size=world, backend="torch")(img, txt, ls.exp(), lb)
    got = torch.autograd.grad(loss, (img, txt, ls, lb))
    ri, rt = image_all.clone().requires_grad_(), text_all.clone().requires_grad_()
    rs = torch.tensor(math.log(9.0), dtype=torch.float64, requires_grad=True)
    rb = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    want = dense_siglip_rows(ri, rt, rs.exp(), rb, rows)
    total = sum(dense_siglip_rows(ri, rt, rs.exp(), rb, blocks[r_]) for r_ in range(world))
    gi, gt = torch.autograd.grad(total, (ri, rt))
    gs, gb = torch.autograd.grad(want, (rs, rb))
    tag = f"[SigLipLoss rank {rank}]"
    torch.testing.assert_close(loss.detach(), want.detach(), **tol, msg=f"{tag} value")
    for a, b, what in zip(got, (gi[rows], gt[rows], gs, gb), ("image", "text", "scale", "bias")):
        torch.testing.assert_close(a, b, **tol, msg=f"{tag} {what} grad")


def _lightly_worker(rank, world, sizes):
    """gather_distributed=True: under DDP-style averaging the gradients of lightly's per-rank
    losses; with equal halves the global loss. Checked against the one-process loss."""
    gen = torch.Generator().manual_seed(6)
    n = sum(sizes)
    a_all = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    b_all = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    rows = split(sizes, rank)
    for make in (lambda: compat_lightly.NTXentLoss(0.4, gather_distributed=True, backend="torch"),
                 lambda: compat_lightly.DCLLoss(0.4, gather_distributed=True, backend="torch")):
        a = a_all[rows].clone().requires_grad_()
        b = b_all[rows].clone().requires_grad_()
        loss = make()(a, b)
        ga, gb = torch.autograd.grad(loss, (a, b))
        # one process: the global batch with each rank's views as its own samples
        ra, rb = a_all.clone().requires_grad_(), b_all.clone().requires_grad_()
        views = torch.cat([torch.cat([ra[s], rb[s]]) for s in (split(sizes, r) for r in range(world))])
        labels = torch.cat([torch.arange(s.start, s.stop).repeat(2) for s in (split(sizes, r) for r in range(world))])
        single = (fc.NTXentLoss(temperature=0.4, form="simclr", backend="torch") if isinstance(make(), compat_lightly.NTXentLoss)
                  else fc.DCLLoss(temperature=0.4, backend="torch"))
        want = single(views, labels)
        wa, wb = torch.autograd.grad(want, (ra, rb))
        tol = dict(rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(loss.detach(), want.detach(), **tol)
        # GlobalBatchLoss scales each rank's share for DDP's mean: world × ∂L/∂x_r
        torch.testing.assert_close(ga, world * wa[rows], **tol)
        torch.testing.assert_close(gb, world * wb[rows], **tol)


def dense_dclw_global(a_all, b_all, sizes, t, sigma):
    """DCLW of the global batch with each rank's von Mises-Fisher weights from its own pairs
    (lightly computes them from the local out0, out1)."""
    blocks = [split(sizes, r) for r in range(len(sizes))]
    x = F.normalize(torch.cat([torch.cat([a_all[s], b_all[s]]) for s in blocks]), dim=1)
    labels = torch.cat([torch.arange(s.start, s.stop).repeat(2) for s in blocks])
    logits = x @ x.T / t
    same = labels[:, None] == labels[None, :]
    lse = logits.masked_fill(same, float("-inf")).logsumexp(1)
    pos = torch.where(same & ~torch.eye(len(labels), dtype=torch.bool), logits, 0).sum(1)
    weights = []
    for s in blocks:
        cos = (F.normalize(a_all[s], dim=1) * F.normalize(b_all[s], dim=1)).sum(1).detach() / sigma
        w = 2 - (s.stop - s.start) * cos.softmax(0)
        weights += [w, w]
    return (lse - torch.cat(weights) * pos).mean()


def _dclw_worker(rank, world, sizes):
    gen = torch.Generator().manual_seed(8)
    n = sum(sizes)
    a_all = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    b_all = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    rows = split(sizes, rank)
    a, b = a_all[rows].clone().requires_grad_(), b_all[rows].clone().requires_grad_()
    loss = compat_lightly.DCLWLoss(0.3, 0.6, gather_distributed=True, backend="torch")(a, b)
    ga, gb = torch.autograd.grad(loss, (a, b))
    ra, rb = a_all.clone().requires_grad_(), b_all.clone().requires_grad_()
    want = dense_dclw_global(ra, rb, sizes, 0.3, 0.6)
    wa, wb = torch.autograd.grad(want, (ra, rb))
    tol = dict(rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(loss.detach(), want.detach(), **tol)
    torch.testing.assert_close(ga, world * wa[rows], **tol)
    torch.testing.assert_close(gb, world * wb[rows], **tol)


def _worker(rank, world, sizes, names):
    for name in names:
        make, opts = CASES[name]
        ref = opts.get("ref")
        check_global(rank, world, name, sizes, make, GlobalBatchLoss, opts.get("call", native),
                     labels=opts.get("labels", "classes"), ref_sizes=sizes if ref == "same" else (
                         tuple(reversed(sizes)) if ref else None))
    _open_clip_worker(rank, world, sizes)
    _lightly_worker(rank, world, sizes)
    _dclw_worker(rank, world, sizes)


def test_image_text_three_ranks():
    run_ranks(_worker, 3, (6, 10, 4), list(CASES))


def test_image_text_two_ranks():
    run_ranks(_worker, 2, (2, 8), ["siglip", "infonce-symmetric-labels", "dcl-views"])
