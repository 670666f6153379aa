"""Generation pipelines: each reads top to bottom as its algorithm."""
