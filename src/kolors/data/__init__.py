"""Datasets: the synthetic bilingual shapes dataset the embedded model is trained on."""
