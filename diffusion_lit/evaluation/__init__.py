"""Evaluation without downloads: a judge classifier trained on the real images, the metrics
computed in its features, accuracy on phrasings, and the report."""
