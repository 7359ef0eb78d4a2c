"""fer: facial expression recognition with cosine-distance losses, small CPU models and live classification.

Kept import-light on purpose: `import fer.losses` must need torch alone, so the public API is imported on first use.
"""

__version__ = "0.1.0"
__all__ = ["ExpressionRecognizer"]


def __getattr__(name: str):
    if name == "ExpressionRecognizer":  # PEP 562: loads fer.api (cv2, the models) only when asked for
        from fer.api import ExpressionRecognizer

        return ExpressionRecognizer
    raise AttributeError(f"module 'fer' has no attribute {name!r}")
