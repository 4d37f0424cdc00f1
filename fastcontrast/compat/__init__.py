"""Drop-in layers that reproduce other libraries' signatures, defaults and numbers.

- fastcontrast.compat.pml: pytorch-metric-learning (every module; the classes it does not
  fuse are pytorch-metric-learning's own)
- fastcontrast.compat.tfa: TensorFlow Addons' triplet, contrastive and N-pairs losses
- fastcontrast.compat.supcontrast: the SupContrast reference SupConLoss
- fastcontrast.compat.lightly: lightly's NTXentLoss (with its MoCo memory bank), DCLLoss,
  DCLWLoss
- fastcontrast.compat.open_clip: open_clip's ClipLoss and SigLipLoss
"""
