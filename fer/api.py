"""A Python API for other projects: images in, faces with expression probabilities out.

    from fer import ExpressionRecognizer
    recognizer = ExpressionRecognizer()                    # the shipped default model, torch on the CPU
    faces = recognizer.predict(image_bgr)                  # [{"box", "landmarks", "score", "label", "probabilities"}]
    probs = recognizer.classify(aligned_faces)             # (N, K) for faces the caller already aligned

Each face dict is exactly a face of `run.py predict --json` (fer.predict.face_record). Building one loads the model and
the detector; nothing here opens a window, downloads or prints.
"""

import numpy as np

from fer.backends import load_classifier
from fer.face.detect import FaceDetector, to_bgr_uint8
from fer.predict import classify_faces, face_record


class ExpressionRecognizer:
    """Args:
        model: "default" (the package's default model), a shipped name ("fer2013", "rafdb"), a .pt checkpoint path, or
            a .onnx file from `run.py export --onnx` (for the ONNX backends).
        backend: "torch", "onnxruntime" (extra [onnx]) or "opencv".
        device: "cpu", "cuda" or "auto" (CUDA when present) for the torch backend; the ONNX backends run on the CPU.
        detector: "yunet" (shipped) or "haar", or a ready FaceDetector (e.g. FaceDetector(max_side=480)).
    """

    def __init__(self, model: str = "default", backend: str = "torch", device: str = "cpu", detector="yunet"):
        self.classifier = load_classifier(model, backend, device=device)
        self.detector = detector if isinstance(detector, FaceDetector) else FaceDetector(detector)
        self.class_names = self.classifier.class_names
        self.input_size = self.classifier.input_size
        self.channels = self.classifier.channels  # 1: classify() takes gray crops (N, S, S); 3: BGR (N, S, S, 3)

    def predict(self, image_bgr: np.ndarray) -> list[dict]:
        """image_bgr uint8 (H, W, 3) (gray, BGRA, uint16, float [0, 1] are converted) -> one dict per face, largest
        first: box [x, y, w, h], landmarks [[x, y] x 5] or None, score, label, probabilities {class name: p}."""
        image_bgr = to_bgr_uint8(image_bgr)
        faces = self.detector.detect(image_bgr)
        probs = classify_faces(image_bgr, faces, self.classifier)  # (N, K)
        return [face_record(face, row, self.class_names) for face, row in zip(faces, probs)]

    def classify(self, aligned_faces: np.ndarray) -> np.ndarray:
        """aligned_faces uint8 (N, S, S) gray crops ((N, S, S, 3) BGR for colour models), framed as fer.face.align_face
        makes them -> probabilities float32 (N, K) in the order of class_names."""
        return self.classifier.predict(aligned_faces)
