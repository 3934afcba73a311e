"""``TrainableModule``: a sentence-transformers module saved as its config plus its torch weights.

sentence-transformers' ``Module`` reads and writes a config (``config_keys``) but leaves ``save`` abstract, and its
``load`` builds the module from the config alone, without weights. Its own trainable modules (``Dense``, say)
each write the pair themselves; telescope's heads (the BT^2 basis transform, multi-layer trainable pooling)
share this one base instead, so the model folder reloads with ``SentenceTransformer(path)`` and its weights.
"""

from __future__ import annotations

from sentence_transformers.base.modules import Module

try:
    from typing import Self
except ImportError:  # pragma: no cover
    from typing_extensions import Self


class TrainableModule(Module):
    """Saves ``config_keys`` as JSON and the state dict as safetensors (or ``pytorch_model.bin``)."""

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs,
    ) -> Self:
        hub = {
            "subfolder": subfolder,
            "token": token,
            "cache_folder": cache_folder,
            "revision": revision,
            "local_files_only": local_files_only,
        }
        module = cls(**cls.load_config(model_name_or_path=model_name_or_path, **hub))
        return cls.load_torch_weights(model_name_or_path=model_name_or_path, model=module, **hub)
