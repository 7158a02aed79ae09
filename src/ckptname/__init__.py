"""ckptname: name, find and resume machine-learning training checkpoints."""

from ._errors import CheckpointError as CheckpointError
from ._errors import CheckpointSaveError as CheckpointSaveError
from ._errors import CkptnameError as CkptnameError
from ._errors import MetadataError as MetadataError
from ._errors import MissingFieldError as MissingFieldError
from ._errors import RenderError as RenderError
from ._errors import TemplateError as TemplateError
from ._metadata import read_metadata as read_metadata
from ._template import Template as Template

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointSaveError",
    "CkptnameError",
    "MetadataError",
    "MissingFieldError",
    "RenderError",
    "Template",
    "TemplateError",
    "__version__",
    "read_metadata",
]
