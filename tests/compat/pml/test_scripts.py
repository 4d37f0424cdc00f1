"""Complete pytorch-metric-learning scripts, written in PML's documented patterns, run once
with `pytorch_metric_learning` and once with `fastcontrast.compat.pml` as the only change:
the same loss history, miner counts and trained parameters."""
import pytest
import torch

pytest.importorskip("pytorch_metric_learning")

from tests.conftest import assert_close  # noqa: E402

PRELUDE = """
import torch
from {lib} import distances, losses, miners, reducers, regularizers
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 6)).to(DTYPE)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
history = []

def batch(n=24, classes=5):
    return torch.randn(n, 8, dtype=DTYPE), torch.randint(0, classes, (n,))
"""

SCRIPTS = {
    "miner_reducer_regularizer": """
distance = distances.CosineSimilarity()
reducer = reducers.ThresholdReducer(low=0)
regularizer = regularizers.LpRegularizer()
loss_func = losses.TripletMarginLoss(margin=0.2, distance=distance, reducer=reducer,
                                     embedding_regularizer=regularizer, embedding_reg_weight=0.1)
mining_func = miners.TripletMarginMiner(margin=0.2, distance=distance, type_of_triplets="semihard")
for step in range(4):
    data, labels = batch()
    optimizer.zero_grad()
    embeddings = model(data)
    indices_tuple = mining_func(embeddings, labels)
    loss = loss_func(embeddings, labels, indices_tuple)
    loss.backward()
    optimizer.step()
    history.append((loss.item(), mining_func.num_triplets))
""",
    "contrastive_class_weighted": """
loss_func = losses.ContrastiveLoss(pos_margin=0.1, neg_margin=0.9,
                                   reducer=reducers.ClassWeightedReducer(torch.tensor([1.0, 2.0, 0.5, 1.5, 1.0])),
                                   embedding_regularizer=regularizers.ZeroMeanRegularizer())
mining_func = miners.BatchHardMiner()
for step in range(4):
    data, labels = batch()
    optimizer.zero_grad()
    embeddings = model(data)
    loss = loss_func(embeddings, labels, mining_func(embeddings, labels))
    loss.backward()
    optimizer.step()
    history.append((loss.item(), mining_func.num_triplets))
""",
    "multiple_losses": """
main = losses.MultipleLosses([losses.TripletMarginLoss(margin=0.1), losses.ContrastiveLoss(),
                              losses.MultiSimilarityLoss()],
                             miners=[miners.TripletMarginMiner(margin=0.3), None, miners.MultiSimilarityMiner()],
                             weights=[1.0, 0.5, 0.2])
for step in range(4):
    data, labels = batch()
    optimizer.zero_grad()
    loss = main(model(data), labels)
    loss.backward()
    optimizer.step()
    history.append((loss.item(),))
""",
    "self_supervised": """
loss_func = losses.SelfSupervisedLoss(losses.NTXentLoss(temperature=0.1))
supcon = losses.SupConLoss(temperature=0.2, reducer=reducers.MeanReducer())
for step in range(4):
    data, labels = batch()
    optimizer.zero_grad()
    view = data + 0.1 * torch.randn(data.shape, dtype=DTYPE)
    embeddings, ref_emb = model(data), model(view)
    loss = loss_func(embeddings, ref_emb) + 0.5 * supcon(embeddings, labels)
    loss.backward()
    optimizer.step()
    history.append((loss.item(),))
""",
    "cross_batch_memory": """
mining_func = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
loss_func = losses.CrossBatchMemory(losses.TripletMarginLoss(margin=0.1), embedding_size=6, memory_size=60,
                                    miner=mining_func)
contrastive_xbm = losses.CrossBatchMemory(losses.ContrastiveLoss(), embedding_size=6, memory_size=50)
for step in range(6):
    data, labels = batch()
    optimizer.zero_grad()
    embeddings = model(data)
    loss = loss_func(embeddings, labels) + contrastive_xbm(embeddings, labels)
    loss.backward()
    optimizer.step()
    history.append((loss.item(), mining_func.num_triplets))
""",
}


def execute(script: str, lib: str, dtype):
    ns = {"DTYPE": dtype}
    exec(compile((PRELUDE + SCRIPTS[script]).replace("{lib}", lib), f"<{script}:{lib}>", "exec"), ns)
    return ns["history"], [p.detach().clone() for p in ns["model"].parameters()]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script(script, dtype):
    want_history, want_params = execute(script, "pytorch_metric_learning", dtype)
    got_history, got_params = execute(script, "fastcontrast.compat.pml", dtype)
    assert len(got_history) == len(want_history)
    for got, want in zip(got_history, want_history):
        assert_close(got[0], want[0], dtype, rtol=1e-3 if dtype == torch.float32 else None)
        assert got[1:] == want[1:]  # miner counts
    for got, want in zip(got_params, want_params):
        assert_close(got, want, dtype, rtol=1e-3 if dtype == torch.float32 else None,
                     atol=1e-4 if dtype == torch.float32 else None)


def test_the_scripts_use_fastcontrast():
    """The compat run really goes through fastcontrast's classes."""
    ns = {"DTYPE": torch.float64}
    exec(compile(PRELUDE.replace("{lib}", "fastcontrast.compat.pml") + SCRIPTS["miner_reducer_regularizer"],
                 "<check>", "exec"), ns)
    assert type(ns["loss_func"]).__module__.startswith("fastcontrast.")
    assert ns["loss_func"]._dense_loss is None  # ThresholdReducer(low=0) on triplets is fused
    assert type(ns["mining_func"]).__module__.startswith("fastcontrast.")
