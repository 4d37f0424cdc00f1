"""`fastcontrast experiment`: the two-stage MNIST / Fashion-MNIST study."""
