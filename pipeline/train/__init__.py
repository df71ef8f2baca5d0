"""Making, measuring and describing checkpoints: ``dff train``, ``dff eval``, ``dff models``.

data.py (folders -> cached face samples, split by source file) · selfblend.py (self-blended pseudo-fakes) ·
augment.py · examples.py (samples -> batches) · trainer.py · metrics.py (numpy metrics) · calibrate.py ·
evaluate.py (the service's own analyze() over labelled folders) · plots.py · card.py (model cards).

Imports the pipeline's stages; nothing in the pipeline imports this package.
"""
