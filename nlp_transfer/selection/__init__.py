"""Which model and which strategy: transferability scores, rank-models, the auto decision, compare grids."""
