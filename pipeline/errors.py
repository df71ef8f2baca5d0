"""The error tree. Every class is also a builtin, so callers that know nothing of us still catch it.

    DffError                                  base; ``code`` is the protocol error code
    ├── MediaError(ValueError)                the input file is the problem
    │   ├── MediaNotFound(FileNotFoundError)  no such file                    code "not_found"
    │   ├── EmptyMedia                        zero bytes                      code "empty_file"
    │   ├── UnsupportedMedia                  not media / no video stream     code "unsupported_media"
    │   ├── MediaTooLarge                     pixel, duration or size cap     code "too_large"
    │   ├── DecodeError                       broke mid-stream                code "decode_error"
    │   └── UnsupportedSource                 a live URL we will not open     code "unsupported_source"
    ├── SourceError(ConnectionError)          a live source cannot be read    code "source_unavailable"
    │   └── SourceTimeout(TimeoutError)       connected, then nothing came    code "source_timeout"
    ├── ModelError(RuntimeError)              the model is the problem
    │   ├── NoModel(LookupError)              no checkpoint found             code "no_model"
    │   └── CheckpointError(ValueError)       unreadable / unsafe / wrong shape  code "bad_checkpoint"
    └── ConfigError(ValueError)               a setting or option is invalid  code "bad_config"

Errors become protocol ``error`` messages only at the server edge; the CLI prints ``str(err)``.
"""

from __future__ import annotations


class DffError(Exception):
    """Base of every error this project raises on purpose."""

    code: str = "internal"


class MediaError(DffError, ValueError):
    code = "bad_media"


class MediaNotFound(MediaError, FileNotFoundError):
    code = "not_found"


class EmptyMedia(MediaError):
    code = "empty_file"


class UnsupportedMedia(MediaError):
    code = "unsupported_media"


class MediaTooLarge(MediaError):
    code = "too_large"


class DecodeError(MediaError):
    """Decoding failed part-way; says how far it got so partial results can be kept."""

    code = "decode_error"

    def __init__(self, message: str, frames_decoded: int = 0, last_time_s: float | None = None) -> None:
        super().__init__(message)
        self.frames_decoded = frames_decoded
        self.last_time_s = last_time_s


class UnsupportedSource(MediaError):
    """A live URL whose scheme is not allowed (``file:``, ``concat:``, ...) or that is malformed."""

    code = "unsupported_source"


class SourceError(DffError, ConnectionError):
    """A live source could not be opened, or broke and did not come back within its reconnect limit."""

    code = "source_unavailable"


class SourceTimeout(SourceError, TimeoutError):
    """A live source sent nothing (no packet) within its open or read timeout."""

    code = "source_timeout"


class ModelError(DffError, RuntimeError):
    code = "model_error"


class NoModel(ModelError, LookupError):
    code = "no_model"


class CheckpointError(ModelError, ValueError):
    code = "bad_checkpoint"


class ConfigError(DffError, ValueError):
    code = "bad_config"
