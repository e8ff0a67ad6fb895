"""Redaction of text that the operator copies from pods into status, events and logs. Pure.

A serving pod's termination message is the model server's load failure reason. The server
redacts the URLs it fetches, but the text may still hold secrets: a URI in an error it did not
write itself, an S3 error body (access key id, string to sign), a presigned URL's query string,
or whatever a custom serving image writes. Nothing secret may reach status or events, so every
message taken from a pod goes through `redact` first.
"""

from __future__ import annotations

import re
import urllib.parse

REDACTED = "<redacted>"

# scheme://[userinfo@]host[:port][/path][?query][#fragment], up to white space or a quote.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# key=value pairs whose key names a credential: presigned URLs (X-Amz-Signature,
# X-Amz-Credential, X-Amz-Security-Token), Azure SAS (sig), GCS (X-Goog-Signature), CloudFront
# (Signature, Policy, Key-Pair-Id), env vars (AWS_SECRET_ACCESS_KEY=...), generic tokens.
_SECRET_KEY = (
    r"[\w.-]*(?:signature|credential|security-token|securitytoken|token|password|passwd|pwd"
    r"|secret|api[_-]?key|access[_-]?key(?:[_-]?id)?|private[_-]?key|session|sig|policy"
    r"|key-pair-id|authorization|auth)"
)
_KEY_VALUE = re.compile(
    rf"(?i)\b({_SECRET_KEY})(\s*=\s*)(\"[^\"]*\"|'[^']*'|[^\s&,;\"'<>]+)",
)
# XML elements of S3-style error bodies that carry credentials or signing material.
_XML_SECRET = re.compile(
    r"(?i)<((?:AWSAccessKeyId|AccessKeyId|SignatureProvided|StringToSign(?:Bytes)?"
    r"|CanonicalRequest(?:Bytes)?|HostId|SecurityToken|Token))>[^<]*"
)
# "Authorization: Bearer abc", "Bearer abc", "Basic abc=".
_AUTH = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
# AWS access key ids on their own (AKIA..., ASIA... for temporary credentials).
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


def _redact_url(match: re.Match[str]) -> str:
    url = match.group(0)
    # Punctuation after a URL ends the sentence, not the URL ("cannot fetch <url>: HTTP 403").
    stripped = url.rstrip(".,;:!?)]}")
    return _redact_one_url(stripped) + url[len(stripped) :]


def _redact_one_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: keep only the scheme
        return url.split("://", 1)[0] + "://" + REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = REDACTED if parts.query else ""
    fragment = REDACTED if parts.fragment else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact(text: str) -> str:
    """`text` without credentials: URLs lose their userinfo, query string and fragment;
    credential-like key=value pairs, S3 error elements, bearer/basic tokens and AWS access
    key ids are replaced by `<redacted>`."""
    text = _URL.sub(_redact_url, text)
    text = _XML_SECRET.sub(lambda m: f"<{m.group(1)}>{REDACTED}", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _AUTH.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _AWS_KEY_ID.sub(REDACTED, text)


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, with an ellipsis when cut."""
    text = text.strip()
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"
