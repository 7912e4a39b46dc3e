"""Image features on disk: what :class:`protobench.fewshot.encoders.FeatureCache` keeps between runs.

A frozen image encoder's features depend on its weights, its preprocessing and the image only, so
they are computed once and stored, keyed by content hashes:

- :func:`encoder_fingerprint`: sha256 over the encoder's ``name``, its ``preprocessing`` description
  and every tensor (name, dtype, shape, bytes) of the torch modules it holds; an encoder that holds
  no module must carry its own ``fingerprint`` string;
- each image by :func:`image_digest` (sha256 of its dtype, shape and bytes), whatever its index;
- a shard (the features of one batch of images, as :class:`FeatureCache` encodes them) by the
  sha256 of its images' digests, in order: its image list.

Layout: ``<directory>/<fingerprint[:32]>/<image-list digest>.safetensors``, each file holding the
tensors ``features`` (n, d) float32 and ``image_digests`` (n, 32) uint8, and the metadata
``format`` (:data:`STORE_FORMAT`), ``encoder`` (its name), ``fingerprint`` (all 64 hex digits),
``image_list`` and ``features_sha256``.

:meth:`FeatureStore.load` uses a shard only if it reads as safetensors, names this format and the
encoder's full fingerprint, its digests hash to its file name, its features to ``features_sha256``,
its shapes agree and every value is finite. Any other shard is stale or corrupt: it is deleted with
a warning naming the file and the failed check, and its images are encoded again. Shards are
written to a temporary file and renamed into place, so a killed run leaves no partial shard.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import torch

STORE_FORMAT = "protobench-features-1"
DIGEST_BYTES = 32


def image_digest(image: torch.Tensor) -> str:
    """sha256 (hex) of one image's dtype, shape and contiguous CPU bytes."""
    image = image.detach().cpu().contiguous()
    header = f"{image.dtype}:{tuple(image.shape)}:".encode()
    return hashlib.sha256(header + image.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def encoder_fingerprint(encoder) -> str:
    """sha256 (hex) of what fixes an image encoder's output: its ``name``, its ``preprocessing`` (a
    string, empty when absent) and the tensors of each torch module among its attributes.

    An encoder's own string attribute ``fingerprint`` is used as it is. ValueError when the encoder
    has neither a module nor a ``fingerprint``: then nothing says when its stored features go stale.
    """
    explicit = getattr(encoder, "fingerprint", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    modules = [(name, value) for name, value in sorted(vars(encoder).items()) if isinstance(value, torch.nn.Module)]
    if not modules:
        raise ValueError(f"cannot fingerprint the image encoder {getattr(encoder, 'name', encoder)!r}: it holds no "
                         "torch module. Give it a string attribute `fingerprint` (a hash of its weights and "
                         "preprocessing) to store its features on disk, or use a FeatureCache without a directory")
    digest = hashlib.sha256(f"{encoder.name}\0{getattr(encoder, 'preprocessing', '')}\0".encode())
    for attribute, module in modules:
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{attribute}.{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def image_list_digest(digests: list[str]) -> str:
    """sha256 (hex) of the concatenated image digests, in order: a shard's name."""
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def _features_sha256(features: torch.Tensor) -> str:
    return hashlib.sha256(features.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


class FeatureStore:
    """Shards of image features under ``directory`` (module docstring): :meth:`load` one encoder's,
    :meth:`save` a new one."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def folder(self, fingerprint: str) -> Path:
        return self.directory / fingerprint[:32]

    def load(self, fingerprint: str, feature_dim: int | None = None) -> dict[str, torch.Tensor]:
        """Every usable stored feature of the encoder with ``fingerprint``: image digest -> (d,) float32.
        Unusable shards are deleted with a warning (module docstring)."""
        from safetensors import SafetensorError, safe_open

        features: dict[str, torch.Tensor] = {}
        folder = self.folder(fingerprint)
        if not folder.is_dir():
            return features
        for path in sorted(folder.glob("*.safetensors")):
            if not path.is_file():  # a folder or a dangling link of that name: not ours to touch
                continue
            try:
                with safe_open(path, framework="pt") as shard:
                    metadata = shard.metadata() or {}
                    tensors = {key: shard.get_tensor(key) for key in shard.keys()}
                problem = _shard_problem(path, metadata, tensors, fingerprint, feature_dim)
            except (OSError, ValueError, SafetensorError) as error:
                problem = f"unreadable ({type(error).__name__}: {error})"
            if problem is not None:
                warnings.warn(f"feature store: {path} is {problem}; deleted, its images will be encoded again",
                              stacklevel=2)
                path.unlink(missing_ok=True)
                continue
            rows = tensors["features"]
            for raw, row in zip(tensors["image_digests"].numpy(), rows, strict=True):
                features[raw.tobytes().hex()] = row.clone()
        return features

    def save(self, fingerprint: str, encoder_name: str, digests: list[str], features: torch.Tensor) -> Path:
        """Write one shard (``features`` (n, d) of the images with ``digests``, in order) and return its path."""
        from safetensors.torch import save_file

        features = features.detach().to("cpu", torch.float32).contiguous()
        if features.ndim != 2 or features.shape[0] != len(digests):
            raise ValueError(f"{len(digests)} image digests for features of shape {tuple(features.shape)}")
        folder = self.folder(fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        name = image_list_digest(digests)
        raw = torch.tensor([list(bytes.fromhex(digest)) for digest in digests], dtype=torch.uint8)
        metadata = {"format": STORE_FORMAT, "encoder": encoder_name, "fingerprint": fingerprint,
                    "image_list": name, "features_sha256": _features_sha256(features)}
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".partial")
        os.close(handle)
        try:
            save_file({"features": features, "image_digests": raw.reshape(-1, DIGEST_BYTES)}, temporary,
                      metadata=metadata)
            target = folder / f"{name}.safetensors"
            os.replace(temporary, target)
        finally:
            Path(temporary).unlink(missing_ok=True)
        return target


def _shard_problem(path: Path, metadata: dict, tensors: dict, fingerprint: str, feature_dim: int | None) -> str | None:
    """What makes a shard unusable, or None."""
    if metadata.get("format") != STORE_FORMAT:
        return f"not a {STORE_FORMAT} shard (format {metadata.get('format')!r})"
    if metadata.get("fingerprint") != fingerprint:
        return "stale: written by another encoder (fingerprint differs)"
    features, raw = tensors.get("features"), tensors.get("image_digests")
    if features is None or raw is None or features.ndim != 2 or features.dtype != torch.float32 \
            or raw.dtype != torch.uint8 or tuple(raw.shape) != (features.shape[0], DIGEST_BYTES):
        return "malformed (tensors missing or of the wrong dtype or shape)"
    if feature_dim is not None and features.shape[1] != feature_dim:
        return f"stale: features of dimension {features.shape[1]}, the encoder gives {feature_dim}"
    digests = [row.tobytes().hex() for row in raw.numpy()]
    if image_list_digest(digests) != path.stem or metadata.get("image_list") != path.stem:
        return "corrupt: its image list does not hash to its name"
    if _features_sha256(features) != metadata.get("features_sha256"):
        return "corrupt: its features do not match their checksum"
    if not torch.isfinite(features).all():
        return "corrupt: non-finite features"
    return None
