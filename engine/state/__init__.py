"""State: what mlform believes exists, where it is stored, and how it stays safe.

* `model` - the state document (`State`, `ResourceState`) and its validation.
* `sensitive` - sensitive values kept as keyed hashes, never in clear.
* `backend` - the backend contract, locks, and the `StateWriter` an apply records through.
* `local` - the default backend: a file with a journal, atomic replace and an OS lock.
* `s3` - an object in an S3 bucket, journaled as objects, locked by a conditional put.
"""

from mlform.state.backend import (
    LoadedState, LockInfo, PendingOp, StateBackend, StateLocked, StateWriter,
)
from mlform.state.local import LocalBackend
from mlform.state.model import ResourceState, State, StateError
from mlform.state.s3 import S3Backend
from mlform.state.sensitive import hash_value, is_marker, mask

__all__ = [
    "LoadedState", "LocalBackend", "LockInfo", "PendingOp", "ResourceState", "S3Backend",
    "State", "StateBackend", "StateError", "StateLocked", "StateWriter", "hash_value",
    "is_marker", "mask",
]
