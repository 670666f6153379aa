"""Evaluation: the automatic colour/shape checker and the held-out prompt set of the shapes model."""
