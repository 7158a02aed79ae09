"""ckptname: name, find and resume machine-learning training checkpoints."""

from . import _errors
from ._errors import Advice as Advice
from ._errors import CheckpointError as CheckpointError
from ._errors import CheckpointSaveError as CheckpointSaveError
from ._errors import CkptnameError as CkptnameError
from ._errors import CkptnameWarning as CkptnameWarning
from ._errors import ClusterError as ClusterError
from ._errors import CountError as CountError
from ._errors import FolderLockedError as FolderLockedError
from ._errors import MetadataError as MetadataError
from ._errors import MissingFieldError as MissingFieldError
from ._errors import MonitorError as MonitorError
from ._errors import RenderError as RenderError
from ._errors import StorageError as StorageError
from ._errors import TemplateError as TemplateError
from ._metadata import read_metadata as read_metadata
from ._rank import resolve_mode as resolve_mode
from ._retention import RetentionPlan as RetentionPlan
from ._retention import apply_retention as apply_retention
from ._retention import plan_retention as plan_retention
from ._scan import Checkpoint as Checkpoint
from ._scan import best_per_group as best_per_group
from ._scan import find_best as find_best
from ._scan import find_latest as find_latest
from ._scan import scan as scan
from ._template import Template as Template
from ._version import __version__ as __version__

__all__ = sorted(
    [
        *_errors.__all__,
        "Checkpoint",
        "RetentionPlan",
        "Template",
        "__version__",
        "apply_retention",
        "best_per_group",
        "find_best",
        "find_latest",
        "plan_retention",
        "read_metadata",
        "resolve_mode",
        "scan",
    ],
    key=str.casefold,
)
