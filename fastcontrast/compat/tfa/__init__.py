"""TensorFlow Addons' metric-learning losses on torch tensors, with TF Addons' math,
arguments and Keras call conventions.

Functions (TF Addons' signatures, y_true first):
    triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2")
    triplet_hard_loss(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2")
    contrastive_loss(y_true, y_pred, margin=1.0)          y_pred: distances, per entry
    npairs_loss(y_true, y_pred)                           y_pred: [B, B] similarities
    npairs_multilabel_loss(y_true, y_pred)                y_true: [B, C] multi-hot

Class forms, called as loss(y_true, y_pred, sample_weight=None), with name=, reduction=
("auto", "none", "sum", "sum_over_batch_size"), get_config() and from_config() as Keras
has them (see _keras.py): TripletSemiHardLoss, TripletHardLoss, ContrastiveLoss,
NpairsLoss, NpairsMultilabelLoss. Defaults are TF Addons': "sum_over_batch_size" for
ContrastiveLoss, "none" for the other four (whose function already returns one scalar per
batch; TF Addons fixes "none" for them and ignores or refuses a reduction argument, while
here one given is honoured with Keras' meaning).

Inputs as TF Addons takes them: labels of shape [B] or [B, 1], integer, bool, or float
holding integral values (cast; a non-integral float is a ValueError naming y_true). Every
bad argument is a TypeError/ValueError naming it, raised before computing; fp16/bf16 inputs
are computed in fp32 and the result cast back; finite inputs never give NaN.

Documented differences from TF Addons (in each case both sides are valid, or TF Addons'
value is NaN):
- 0/0: where TF Addons divides 0 by 0 (no positive pair for the semi-hard loss, a y_true row
  without labels for the multi-label N-pairs loss) and returns NaN, these give 0 with a zero
  gradient.
- hinge exactly at 0 (a triplet term with margin + d_ap − d_an = 0): TF Addons'
  maximum(·, 0) passes the gradient, these give 0. (contrastive_loss squares its hinge, so
  both give 0 there.)
- exact distance ties in a min/max selection: TF Addons splits the gradient evenly between
  the tied entries, these give it to the lowest index; the values agree. Ties survive only
  where rounding keeps them, on either side; exactly orthogonal and identical rows under
  "angular" are computed exactly (1 − û·v̂, as TF Addons does), so float32 decides those as
  float64 does.
- a callable distance_metric is refused (TypeError); contrastive_loss refuses a y_true whose
  shape differs from y_pred's (TF Addons would broadcast [B, 1] against [B] to [B, B]).

Angular distance and all-zero rows: as in TF Addons, rows are normalized with an epsilon on
the squared norm (x / √max(‖x‖², 1e-12)), a zero row stays zero and its angular distance to
every row, itself included, is 1. fastcontrast's own losses with distance="cosine" also give a
zero row similarity 0 with every other row (they never pair a row with itself), but normalize
with F.normalize (x / max(‖x‖, 1e-12)), so their gradient with respect to a zero row is scaled
by 1e12 where TF Addons' (and this layer's) is scaled by 1e6.
"""
from ._pair_margin import *  # noqa: F401,F403
from ._softmax import *  # noqa: F401,F403
from ._triplet import *  # noqa: F401,F403
