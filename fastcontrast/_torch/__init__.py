"""The memory-lean PyTorch implementations behind the loss Functions (one module per family,
same interface as the Triton launchers in fastcontrast.kernels; see fastcontrast/configs.py)."""
