"""fer: facial expression recognition with cosine-distance losses, small CPU models and live classification.

Kept import-light on purpose: `import fer.losses` must need torch alone.
"""

__version__ = "0.1.0"
