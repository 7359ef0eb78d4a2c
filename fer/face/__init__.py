"""Face stage: detect faces (detect.py), align them to the training framing (align.py), draw results (draw.py)."""

from fer.face.align import align_face, alignment_matrix, similarity_from_points
from fer.face.detect import Face, FaceDetector, read_image
from fer.face.draw import draw_faces

__all__ = ["Face", "FaceDetector", "read_image", "align_face", "alignment_matrix", "similarity_from_points",
           "draw_faces"]
