"""Evaluation in parts: faces (reading and class mapping), metrics, report; fer.evaluate runs them."""
