"""Evaluation pictures (matplotlib, Agg backend): confusion matrix and a 2-D projection of the embeddings."""

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PROJECTIONS = ("pca", "tsne")
MAX_POINTS = 2000  # t-SNE on more points takes minutes on a small CPU; 2,000 show the cluster structure well


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(counts: np.ndarray, row_names, column_names, path: str | Path, title: str = "") -> None:
    """Colours: row-normalised (recall per true class); each cell shows its count and row percentage."""
    plt = _pyplot()
    counts = np.asarray(counts)
    totals = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)
    side = 1.2 + 0.75 * max(len(row_names), len(column_names))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(len(column_names)), column_names, rotation=45, ha="right")
    ax.set_yticks(range(len(row_names)), row_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            colour = "white" if normalized[i, j] > 0.5 else "black"
            ax.text(j, i, f"{counts[i, j]}\n{normalized[i, j]:.0%}", ha="center", va="center", fontsize=8, color=colour)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def project_2d(embeddings: np.ndarray, method: str = "pca", normalize: bool = False, seed: int = 0) -> np.ndarray:
    """embeddings (N, D) -> (N, 2); normalize=True projects L2-normalised embeddings (cosine heads compare directions)."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; expected one of {', '.join(PROJECTIONS)}")
    x = np.asarray(embeddings, dtype=np.float64)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(2.0, (len(x) - 1) / 3))  # t-SNE needs perplexity < n_samples
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)


def plot_embeddings(embeddings: np.ndarray, labels: np.ndarray, class_names, path: str | Path, method: str = "pca",
                    normalize: bool = False, title: str = "", seed: int = 0) -> int:
    """Scatter of a seeded random subsample (at most MAX_POINTS) coloured by true class; returns the number plotted."""
    plt = _pyplot()
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    if len(index) > MAX_POINTS:
        index = np.sort(np.random.default_rng(seed).choice(len(index), MAX_POINTS, replace=False))
    fig, ax = plt.subplots(figsize=(7, 6))
    if len(index) >= 3:
        points = project_2d(embeddings[index], method, normalize, seed)
        colours = plt.get_cmap("tab10")
        for k, name in enumerate(class_names):
            chosen = labels[index] == k
            if chosen.any():
                ax.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.7, color=colours(k % 10),
                           label=f"{name} ({chosen.sum()})")
        ax.legend(markerscale=3, fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, f"{len(index)} sample(s): too few to project", ha="center", va="center", transform=ax.transAxes)
    space = "L2-normalised embeddings" if normalize else "embeddings"
    ax.set_title(title or f"{method.upper()} of {space}, {len(index)} samples, coloured by true class", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(index)
