"""Triton kernels of fastcontrast, installed as `fastcontrast.kernels`.

Importing this package imports triton; the loss Functions import it lazily, only when the
"triton" backend is chosen, so fastcontrast works without triton installed.

Layer rule: kernels and their launchers know the math, never loss conventions, validation
or autograd. Every kernel builds its distance tiles with `tiles.distance_tile` and its
masks with `tiles.pair_masks`; the backward kernels read rows with `tiles.load_rows` and
write gradient rows with `tiles.store_row_grad`. The host-side steps every family repeats
(input preparation and the dtype rule, config code checks, squared row norms, registration
of the launchers as torch ops) are in `_host`.
"""
