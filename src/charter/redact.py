"""Credentials out of everything Charter writes or prints.

A server URL may carry a key (`http://user:KEY@host/v1`), and an error body may echo the request's
headers (`Authorization: Bearer KEY`); both reached config.yaml, records' `error` fields, stdout and
the report. `redact` masks them wherever text leaves the process; the values in use stay as given.
"""
from __future__ import annotations

import re
from typing import Any

MASK = "***"
# scheme://user:password@ or scheme://token@ (the part before '@' in the authority).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@'\"<>]+@")
# Authorization / Proxy-Authorization and API-key headers, as "Name: value", "name=value" or JSON ("name": "value").
_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|api_key)(['\"]?\s*[:=]\s*['\"]?)"
                     r"(?:(bearer|basic|token)\s+)?[^\s'\",;}]+")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
# Settings whose whole value is a secret, by the names secrets go by: key, token, secret, password
# and credentials alone or as the last word (hf_token, openai_api_key, aws_secret_access_key,
# X-Api-Key), a password or secret anywhere in the name, and authorization headers.
_SECRET_KEY = re.compile(r"(?i)(?:^|[_.-])(?:key|apikey|token|secret|passwd|pwd|credentials?|authorization|auth)$"
                         r"|password|secret|passphrase|private[_-]?key")


def _header(m: re.Match) -> str:
    return f"{m.group(1)}{m.group(2)}{m.group(3) + ' ' if m.group(3) else ''}{MASK}"


def redact(value: Any) -> Any:
    """Text with URL credentials and authorization values masked; dicts and lists are redacted
    value by value (a copy), anything else is returned as it is."""
    if isinstance(value, str):
        text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", value)
        text = _HEADER.sub(_header, text)
        return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and _SECRET_KEY.search(k) and v else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


def error_text(exc: BaseException) -> str:
    """An exception as a record's `error` field: 'Type: message', credentials masked."""
    return redact(f"{type(exc).__name__}: {exc}")
