"""The errors of the HTTP/2 codec, and the error codes of RFC 9113 §7.

Kept apart from the codec modules (which are plain enough to be compiled with
mypyc, whose native classes cannot derive from these exception bases); each is
also importable from the module that raises it.
"""

from __future__ import annotations

import enum

from sidecar.errors import SidecarError

__all__ = [
    "ErrorCode", "H2Error", "H2ConnectionError", "H2StreamError", "H2StateError", "HpackError",
    "HeaderListTooLarge", "Malformed",
]


class ErrorCode(enum.IntEnum):
    """RFC 9113 §7."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class H2Error(SidecarError, ValueError):
    """An HTTP/2 protocol error: ``code`` is the RFC 9113 error code to send."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason


class H2ConnectionError(H2Error):
    """A connection error (RFC 9113 §5.4.1): GOAWAY with ``code``, then close."""


class H2StreamError(H2Error):
    """A stream error (RFC 9113 §5.4.2): RST_STREAM with ``code`` on ``stream_id``."""

    def __init__(self, stream_id: int, code: ErrorCode, reason: str) -> None:
        super().__init__(code, reason)
        self.stream_id = stream_id


class H2StateError(SidecarError, RuntimeError):
    """The application used the connection wrongly (e.g. sent on a stream that is not open)."""


class HpackError(SidecarError, ValueError):
    """A header block broke RFC 7541; HTTP/2 answers with COMPRESSION_ERROR."""


class HeaderListTooLarge(HpackError):
    """The decoded header list exceeds the size we allow (name + value + 32 per field)."""


class Malformed(SidecarError, ValueError):
    """A header section broke RFC 9113 §8 (answered with RST_STREAM PROTOCOL_ERROR)."""
