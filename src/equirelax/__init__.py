"""equirelax: train neural networks between strict equivariance and none."""
