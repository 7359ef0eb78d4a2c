"""Dataset readers, the train/validation/test protocol, augmentation and batching."""
