"""The privfl exception hierarchy.

Every error privfl raises on purpose is a :class:`PrivflError`. Messages name the argument, the
value found and, where it is known, the fix::

    `clip_norm` must be > 0. Found -1.0.

Configuration errors also derive from :class:`ValueError` so that callers who already catch
``ValueError`` keep working.
"""

from __future__ import annotations

__all__ = [
    "BoundViolationError",
    "BudgetExceededError",
    "CheckpointError",
    "ClientRefusedError",
    "ConfigurationError",
    "DataError",
    "DecryptionError",
    "EncodingOverflowError",
    "MalformedMessageError",
    "NonFiniteUpdateError",
    "PrivflError",
    "ProtocolAbortError",
    "ProtocolViolationError",
    "ShapeMismatchError",
    "UnsupportedEventError",
    "UtilityWarning",
]


class PrivflError(Exception):
    """Root of every error raised deliberately by privfl."""


class CheckpointError(PrivflError):
    """A checkpoint cannot be written, or a file is not a valid privfl checkpoint of this run.

    Raised before any value from the file is used (truncation, corruption, a foreign file, a
    checkpoint of another configuration).
    """


class ConfigurationError(PrivflError, ValueError):
    """A configuration value is out of range or inconsistent; raised before anything runs."""


class ShapeMismatchError(ConfigurationError):
    """A tensor, vector or state_dict does not have the shape or dtype that was declared."""


class DataError(PrivflError, ValueError):
    """A data set is unusable (empty, wrong labels, inconsistent lengths)."""


class MalformedMessageError(PrivflError):
    """Bytes received over a trust boundary do not decode to a valid message.

    Raised before the message can influence any state (for a server: before it touches the
    running sum).
    """


class ProtocolViolationError(PrivflError):
    """A well-formed message that the protocol does not allow now.

    Examples: a message for another round, from a client that was not selected, a duplicate
    upload, or a message for a stage that is already closed.
    """


class ProtocolAbortError(PrivflError):
    """A round cannot complete (for example too few clients survived); no result is produced."""


class ClientRefusedError(PrivflError):
    """A client declines to send its contribution; the round treats it as a dropout."""


class NonFiniteUpdateError(ClientRefusedError):
    """A client update contains NaN or Inf; the client refuses to send it."""


class BoundViolationError(ClientRefusedError):
    """A client value or weight lies outside the bounds its secure sum was sized for.

    The client refuses to send it: a value past the bound could wrap a ring sum or a CKKS
    modulus and silently corrupt every other client's contribution. The round goes on without
    this client.
    """


class EncodingOverflowError(PrivflError):
    """A value or a sum does not fit in the encoding (ring or CKKS scale) it was meant for."""


class BudgetExceededError(PrivflError):
    """Running the next step would exceed a privacy budget; the step is not run."""


class DecryptionError(PrivflError):
    """A ciphertext cannot be decrypted (wrong key, wrong parameters, or corrupted)."""


class UnsupportedEventError(PrivflError):
    """A privacy accountant cannot account for the given DP event."""


class UtilityWarning(UserWarning):
    """A run will work as configured but is unlikely to learn; said before it starts.

    For example: client-level DP noise that outweighs any possible update.
    """
