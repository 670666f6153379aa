"""Datasets: the synthetic bilingual shapes dataset the built-in model is trained on.

* ``shapes``    attributes, scenes (single, count, pair), the held-out split, rendering
* ``captions``  English and Chinese wordings of a scene (training and held-out templates)
* ``examples``  captioned examples: batches in memory, image folders on disk (`kolors data shapes`)
"""
