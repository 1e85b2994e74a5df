"""Evaluation: ground truth and loop-closure metrics."""
