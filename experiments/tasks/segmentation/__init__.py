"""Semantic segmentation pieces of the harness: the CE + Dice loss and the mIoU confusion matrix."""
