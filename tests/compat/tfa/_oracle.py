"""TF Addons' loss arithmetic step by step, in torch, for float64 comparisons.

Each function follows TF Addons' formulation operation by operation (dense B×B and B²×B
tiles, masked max/min through row offsets, maximum(·, 0) passing the gradient at 0,
reduce_max/min splitting the gradient between ties), not fastcontrast's.
`semihard_first` / `hard_first` state the same rules as explicit loops that select the
lowest index among tied candidates (fastcontrast's documented convention) on the same
distances, so that gradients can be compared where ties are exact. Keras' sample
weighting and reductions are here too (`keras_reduce`).
"""
import torch

L2_EPS = 1e-12


def tf_maximum(x, y):
    """tf.maximum: at x == y the gradient goes to x."""
    y = torch.as_tensor(y, dtype=x.dtype)
    return torch.where(x >= y, x, y)


def l2_normalize(x):
    return x * torch.rsqrt(tf_maximum((x * x).sum(1, keepdim=True), L2_EPS))


def pairwise_distance(x, squared):
    sq = (x * x).sum(1, keepdim=True) + (x * x).sum(1, keepdim=True).T - 2.0 * x @ x.T
    sq = tf_maximum(sq, 0.0)
    error = (sq <= 0).to(x.dtype)
    d = sq if squared else torch.sqrt(sq + error * 1e-16)
    d = d * (1.0 - error)
    return d * (1.0 - torch.eye(x.shape[0], dtype=x.dtype))


def angular_distance(x):
    u = l2_normalize(x)
    return tf_maximum(1.0 - u @ u.T, 0.0)


def distances(x, metric):
    if metric == "angular":
        return angular_distance(x)
    return pairwise_distance(x, squared=metric == "squared-L2")


def masked_maximum(data, mask):
    low = data.amin(1, keepdim=True)
    return ((data - low) * mask).amax(1, keepdim=True) + low


def masked_minimum(data, mask):
    high = data.amax(1, keepdim=True)
    return ((data - high) * mask).amin(1, keepdim=True) + high


def semihard(labels, x, margin=1.0, metric="L2"):
    """triplet_semihard_loss (0/0 left as NaN, as TF Addons has it)."""
    labels = labels.reshape(-1, 1)
    d = distances(x, metric)
    b = labels.shape[0]
    adjacency = labels == labels.T
    adjacency_not = ~adjacency
    tile = d.repeat(b, 1)
    mask = adjacency_not.repeat(b, 1) & (tile > d.T.reshape(-1, 1))
    mask_final = (mask.to(x.dtype).sum(1, keepdim=True) > 0).reshape(b, b).T
    outside = masked_minimum(tile, mask.to(x.dtype)).reshape(b, b).T
    inside = masked_maximum(d, adjacency_not.to(x.dtype)).repeat(1, b)
    semi = torch.where(mask_final, outside, inside)
    loss_mat = margin + d - semi
    mask_pos = adjacency.to(x.dtype) - torch.eye(b, dtype=x.dtype)
    return tf_maximum(loss_mat * mask_pos, 0.0).sum() / mask_pos.sum()


def hard(labels, x, margin=1.0, soft=False, metric="L2"):
    labels = labels.reshape(-1, 1)
    d = distances(x, metric)
    b = labels.shape[0]
    adjacency = labels == labels.T
    hard_n = masked_minimum(d, (~adjacency).to(x.dtype))
    hard_p = masked_maximum(d, adjacency.to(x.dtype) - torch.eye(b, dtype=x.dtype))
    if soft:
        loss = torch.log1p(torch.exp(hard_p - hard_n))
    else:
        loss = tf_maximum(hard_p - hard_n + margin, 0.0)
    return loss.mean()


def _first(values, candidates, largest):
    """The lowest index among the candidates holding the extreme value."""
    cand = candidates.nonzero()[:, 0]
    vals = values[cand]
    return cand[(vals.argmax() if largest else vals.argmin())]


def semihard_first(labels, x, margin=1.0, metric="L2"):
    d = distances(x, metric)
    b = len(labels)
    same = labels[:, None] == labels[None, :]
    total, pairs = torch.zeros((), dtype=x.dtype), 0
    everyone = torch.ones(b, dtype=torch.bool)
    for a in range(b):
        neg = ~same[a]
        for p in range(b):
            if p == a or not same[a, p]:
                continue
            pairs += 1
            above = neg & (d[a] > d[a, p])
            if above.any():
                k = _first(d[a], above, largest=False)
            elif neg.any():
                k = _first(d[a], neg, largest=True)
            else:
                k = _first(d[a], everyone, largest=False)  # the row minimum
            total = total + torch.relu(margin + d[a, p] - d[a, k])
    return total / pairs


def hard_first(labels, x, margin=1.0, soft=False, metric="L2"):
    d = distances(x, metric)
    b = len(labels)
    same = labels[:, None] == labels[None, :]
    everyone = torch.ones(b, dtype=torch.bool)
    terms = []
    for a in range(b):
        pos = same[a].clone()
        pos[a] = False
        neg = ~same[a]
        p = _first(d[a], pos, True) if pos.any() else _first(d[a], everyone, False)
        n = _first(d[a], neg, False) if neg.any() else _first(d[a], everyone, True)
        h = d[a, p] - d[a, n]
        terms.append(torch.log1p(torch.exp(h)) if soft else torch.relu(h + margin))
    return torch.stack(terms).mean()


def contrastive(y_true, y_pred, margin=1.0):
    y = y_true.to(y_pred.dtype)
    return y * y_pred ** 2 + (1.0 - y) * tf_maximum(margin - y_pred, 0.0) ** 2


def softmax_cross_entropy(logits, targets):
    return -(targets * torch.log_softmax(logits, 1)).sum(1)


def npairs(y_true, y_pred):
    y = y_true.to(y_pred.dtype).reshape(-1, 1)
    t = (y == y.T).to(y_pred.dtype)
    return softmax_cross_entropy(y_pred, t / t.sum(1, keepdim=True)).mean()


def npairs_multilabel(y_true, y_pred):
    y = y_true.to(y_pred.dtype)
    t = y @ y.T
    return softmax_cross_entropy(y_pred, t / t.sum(1, keepdim=True)).mean()


def keras_reduce(values, sample_weight=None, reduction="sum_over_batch_size"):
    """tf.keras.losses.Loss.__call__ after the loss function: align, weight, reduce."""
    w = torch.ones((), dtype=values.dtype) if sample_weight is None else torch.as_tensor(
        sample_weight, dtype=values.dtype)
    if w.dim() > 0:
        if w.dim() - values.dim() == 1:
            assert w.shape[-1] == 1, "Keras cannot squeeze this weight"
            w = w.squeeze(-1)
        elif values.dim() - w.dim() == 1:
            w = w.unsqueeze(-1)
    weighted = values * w
    if reduction == "none":
        return weighted
    total = weighted.sum()
    return total if reduction == "sum" else total / weighted.numel()
