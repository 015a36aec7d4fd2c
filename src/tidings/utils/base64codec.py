"""Base64 text decoded by ``pybase64`` when it is installed, the standard library else.

kombu's Redis transport carries every message body as base64 inside a JSON
envelope, so a receiver on Redis decodes base64 for every message: about
80 µs for a batch of 100 task events with the standard library's
``binascii.a2b_base64``, a sixth of what the whole batch costs a receiver;
``pybase64`` (SIMD, the ``speedups`` extra) takes about 2 µs.

The result is always the standard library's: ``pybase64`` decodes only
text it finds strictly valid (the alphabet, the padding); anything else
(line breaks, stray characters, which ``a2b_base64`` skips, or a wrong
padding, which it refuses) goes to ``a2b_base64``, which decides.
"""

from __future__ import annotations

from binascii import a2b_base64

__all__ = ["FAST", "decode"]

try:
    from pybase64 import b64decode as _fast_decode
except ImportError:  # the extra is not installed
    _fast_decode = None


if _fast_decode is not None:

    def decode(text: str | bytes) -> bytes:
        """``binascii.a2b_base64(text)``, decoded by pybase64 where the text is valid."""
        try:
            return _fast_decode(text, validate=True)
        except ValueError:  # not strictly valid (binascii.Error is one): the stdlib decides
            return a2b_base64(text)
else:
    decode = a2b_base64

#: Whether the SIMD decoder (pybase64) is in use.
FAST = _fast_decode is not None
