"""Secret detectors: API keys, tokens, private keys and passwords (on by default).

Token formats come from the issuers' documentation:

=====================  ==============================================================
type                   format
=====================  ==============================================================
``PRIVATE_KEY``        PEM block ``-----BEGIN … PRIVATE KEY-----`` … ``-----END …``
                       (RFC 7468), or from BEGIN to the end of the base64 text
``JWT``                ``header.payload.signature``, base64url, header decoding to a
                       JSON object with ``alg`` (RFC 7519 / RFC 7515 compact form)
``URL_CREDENTIALS``    ``scheme://user:password@host`` (RFC 3986 userinfo): the
                       ``user:password`` part
``AWS_ACCESS_KEY``     ``AKIA``/``ASIA``/``ABIA``/``ACCA`` + 16 base32 characters
``GITHUB_TOKEN``       ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` + 36+, or
                       ``github_pat_`` + 22 + ``_`` + 59 (GitHub token formats, 2021)
``ANTHROPIC_API_KEY``  ``sk-ant-api03-…``, ``sk-ant-admin01-…`` (80+ characters)
``OPENAI_API_KEY``     ``sk-…T3BlbkFJ…`` or ``sk-proj-``/``sk-svcacct-``/``sk-admin-`` +
                       40+ characters
``GOOGLE_API_KEY``     ``AIza`` + 35 characters
``SLACK_TOKEN``        ``xoxb-``/``xoxp-``/``xoxa-``/``xoxo-``/``xoxs-``/``xoxr-``/``xoxe-``,
                       ``xapp-``, and ``hooks.slack.com`` webhook URLs
``STRIPE_KEY``         ``sk_live_``/``sk_test_``/``rk_live_``/``rk_test_`` secret and
                       restricted keys, ``whsec_`` webhook secrets
``BEARER_TOKEN``       the credential after ``Bearer`` (RFC 6750) when it looks random
``SECRET``             the value after ``password=``, ``api_key:``, ``"secret": "…"``…,
                       or under such a JSON key / form field, when it passes
                       :func:`looks_secret` (an entropy check)
=====================  ==============================================================
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import Counter
from collections.abc import Iterator

from .base import Detection

__all__ = [
    "PEM_MAX_CHARS",
    "SECRET",
    "SECRET_ENTITY_TYPES",
    "TOKEN_MAX_CHARS",
    "TOKEN_SECRET_TYPES",
    "GenericSecretDetector",
    "TokenDetector",
    "looks_secret",
    "make",
    "open_pem_start",
    "shannon_entropy",
]

PRIVATE_KEY = "PRIVATE_KEY"
JWT = "JWT"
URL_CREDENTIALS = "URL_CREDENTIALS"
AWS_ACCESS_KEY = "AWS_ACCESS_KEY"
GITHUB_TOKEN = "GITHUB_TOKEN"
ANTHROPIC_API_KEY = "ANTHROPIC_API_KEY"
OPENAI_API_KEY = "OPENAI_API_KEY"
GOOGLE_API_KEY = "GOOGLE_API_KEY"
SLACK_TOKEN = "SLACK_TOKEN"
STRIPE_KEY = "STRIPE_KEY"
BEARER_TOKEN = "BEARER_TOKEN"
SECRET = "SECRET"

#: Token-shaped secrets, highest priority first.
TOKEN_SECRET_TYPES: tuple[str, ...] = (
    PRIVATE_KEY,
    JWT,
    URL_CREDENTIALS,
    AWS_ACCESS_KEY,
    GITHUB_TOKEN,
    ANTHROPIC_API_KEY,
    OPENAI_API_KEY,
    GOOGLE_API_KEY,
    SLACK_TOKEN,
    STRIPE_KEY,
    BEARER_TOKEN,
)
#: Every secret type.
SECRET_ENTITY_TYPES: tuple[str, ...] = (*TOKEN_SECRET_TYPES, SECRET)

#: Longest PEM private key block detected (characters; an RSA-4096 key in
#: PKCS#8 PEM is about 3,300).
PEM_MAX_CHARS = 4096
#: Longest single token (JWT, bearer token, API key) detected, characters.
TOKEN_MAX_CHARS = 4096


def shannon_entropy(value: str) -> float:
    """Shannon entropy of the character distribution of ``value``, in bits
    per character (0 for empty or one repeated character)."""
    n = len(value)
    if n == 0:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


_PLACEHOLDER_RE = re.compile(
    r"(?:null|none|nil|true|false|undefined|redacted|changeme|password|secret|example|"
    r"your[_\-]?\w*|x+|\*+|\.+|<[^>]*>|\[[^\]]*\]|\{\{.*\}\}|\$\{.*\}|\$\w+|%\w|%\(\w+\)s)",
    re.IGNORECASE,
)


def looks_secret(value: str, *, password: bool) -> bool:
    """The entropy check of the generic secret detector.

    Args:
        value: the candidate value (no surrounding quotes).
        password: True for password-like keys (``password``, ``pwd``,
            ``passphrase``), False for keys, tokens and secrets.

    Returns:
        False for placeholders (``null``, ``changeme``, ``***``, ``<token>``,
        ``${VAR}``, ``%s``, ``your_api_key``…); otherwise, for passwords, at
        least 6 characters and 2.0 bits/character; for keys and tokens, at
        least 12 characters and 3.0 bits/character.
    """
    v = value.strip()
    if not v or _PLACEHOLDER_RE.fullmatch(v):
        return False
    if password:
        return len(v) >= 6 and shannon_entropy(v) >= 2.0
    return len(v) >= 12 and shannon_entropy(v) >= 3.0


class TokenDetector:
    """A secret recognised by its format (see the module table).

    Args:
        entity_type: reported type.
        pattern: the candidate regex; group ``secret`` (or the whole match)
            is the masked span.
        gate: prefilter (see :mod:`.base`).
        check: optional validation of the masked text.
        max_span: longest detection with context, characters.
    """

    uses_hint = False

    def __init__(
        self,
        entity_type: str,
        pattern: str,
        gate: str,
        *,
        check=None,
        max_span: int = 512,
        flags: int = 0,
    ) -> None:
        self.entity_type = entity_type
        self.pattern = re.compile(pattern, flags)
        self.gate: str | None = gate
        self.max_span: int | None = max_span
        self._check = check
        self._group = "secret" if "secret" in self.pattern.groupindex else 0

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield detections in ``text`` (``hint`` is ignored)."""
        for m in self.pattern.finditer(text):
            s, e = m.span(self._group)
            if e <= s:
                continue
            value = text[s:e]
            if self._check is not None and not self._check(value):
                continue
            yield Detection(s, e, self.entity_type, value)


# --------------------------------------------------------------------------- formats

_PEM_BEGIN_RE = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?)-----")
_PEM_BODY_RE = re.compile(r"(?:[A-Za-z0-9+/=\s:,\-]|\\[nr])*")


class PemPrivateKeyDetector:
    """PEM private key blocks (RFC 7468): from ``-----BEGIN … PRIVATE
    KEY-----`` to the matching ``-----END …-----``, or, when the END line
    is missing (a truncated key), to the end of the base64 text that follows.
    At most :data:`PEM_MAX_CHARS` characters."""

    entity_type = PRIVATE_KEY
    gate: str | None = "-----BEGIN "
    max_span: int | None = PEM_MAX_CHARS
    uses_hint = False

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield PEM detections in ``text`` (``hint`` is ignored)."""
        pos = 0
        while True:
            m = _PEM_BEGIN_RE.search(text, pos)
            if m is None:
                return
            end_marker = f"-----END {m.group(1)}-----"
            e = text.find(end_marker, m.end(), m.start() + PEM_MAX_CHARS)
            if e >= 0:
                end = e + len(end_marker)
            else:
                body = _PEM_BODY_RE.match(text, m.end(), m.start() + PEM_MAX_CHARS)
                end = body.end() if body else m.end()
                while end > m.end() and text[end - 1].isspace():
                    end -= 1
            yield Detection(m.start(), end, PRIVATE_KEY, text[m.start() : end])
            pos = end


def open_pem_start(text: str) -> int | None:
    """Start of a PEM private key block in ``text`` that has no END line
    yet (for stream hold-back), or ``None``."""
    i = text.rfind("-----BEGIN ")
    if i < 0:
        return None
    m = _PEM_BEGIN_RE.match(text, i)
    if m is None:
        # "-----BEGIN " may be the start of a header still arriving
        return i if len(text) - i < 48 else None
    if f"-----END {m.group(1)}-----" in text[m.end() :]:
        return None
    return i


def _b64_json(part: str) -> object:
    try:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def _jwt_ok(value: str) -> bool:
    """Header and payload are base64url JSON objects, the header names an ``alg``."""
    head, _, rest = value.partition(".")
    payload = rest.partition(".")[0]
    header = _b64_json(head)
    return isinstance(header, dict) and "alg" in header and isinstance(_b64_json(payload), dict)


def _bearer_ok(value: str) -> bool:
    if len(value) < 16 or shannon_entropy(value) < 3.0:
        return False
    return any(c.isdigit() for c in value) or not value.isalpha()


def _openai_ok(value: str) -> bool:
    if value.startswith("sk-ant-"):
        return False
    if "T3BlbkFJ" in value:
        return True
    return value.startswith(("sk-proj-", "sk-svcacct-", "sk-admin-")) and len(value) >= 48


_B = r"(?<![A-Za-z0-9_\-])"  # token start
_E = r"(?![A-Za-z0-9_\-])"  # token end


def make(entity_type: str):
    """A new detector for one of :data:`SECRET_ENTITY_TYPES`."""
    if entity_type == PRIVATE_KEY:
        return PemPrivateKeyDetector()
    if entity_type == JWT:
        return TokenDetector(
            JWT,
            _B + r"eyJ[A-Za-z0-9_\-]{8,2048}\.[A-Za-z0-9_\-]{2,4096}\.[A-Za-z0-9_\-]{0,2048}" + _E,
            r"eyJ[A-Za-z0-9_\-]{8}",
            check=_jwt_ok,
            max_span=TOKEN_MAX_CHARS,
        )
    if entity_type == URL_CREDENTIALS:
        return TokenDetector(
            URL_CREDENTIALS,
            r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://"
            r"(?P<secret>[^\s/?#@:\"'<>]{1,256}:[^\s/?#@\"'<>]{1,256})@",
            r"://[^\s/?#@\"'<>]{1,256}@",
            max_span=560,
        )
    if entity_type == AWS_ACCESS_KEY:
        return TokenDetector(
            AWS_ACCESS_KEY,
            r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?![A-Z0-9])",
            r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}",
            max_span=24,
        )
    if entity_type == GITHUB_TOKEN:
        return TokenDetector(
            GITHUB_TOKEN,
            _B
            + r"(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})"
            + _E,
            r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_",
            max_span=260,
        )
    if entity_type == ANTHROPIC_API_KEY:
        return TokenDetector(
            ANTHROPIC_API_KEY,
            _B + r"sk-ant-(?:api|admin|sid|oat)[0-9]{2}-[A-Za-z0-9_\-]{80,200}" + _E,
            r"sk-ant-[a-z]{3}",
            max_span=220,
        )
    if entity_type == OPENAI_API_KEY:
        return TokenDetector(
            OPENAI_API_KEY,
            _B + r"sk-[A-Za-z0-9_\-]{20,300}" + _E,
            r"sk-[A-Za-z0-9_\-]{20}",
            check=_openai_ok,
            max_span=320,
        )
    if entity_type == GOOGLE_API_KEY:
        return TokenDetector(
            GOOGLE_API_KEY,
            _B + r"AIza[0-9A-Za-z_\-]{35}" + _E,
            r"AIza[0-9A-Za-z_\-]{35}",
            max_span=48,
        )
    if entity_type == SLACK_TOKEN:
        return TokenDetector(
            SLACK_TOKEN,
            _B
            + r"(?:xox[abposre]|xapp)-[0-9A-Za-z\-]{10,250}"
            + _E
            + r"|hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]{20,200}",
            r"xox[abposre]-|xapp-|hooks\.slack\.com/",
            max_span=280,
        )
    if entity_type == STRIPE_KEY:
        return TokenDetector(
            STRIPE_KEY,
            _B + r"(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,247}|whsec_[A-Za-z0-9]{24,128})" + _E,
            r"[rs]k_(?:live|test)_|whsec_",
            max_span=270,
        )
    if entity_type == BEARER_TOKEN:
        return TokenDetector(
            BEARER_TOKEN,
            r"(?<![A-Za-z])[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+"
            r"(?P<secret>[A-Za-z0-9\-._~+/]{16,4096}=*)(?![A-Za-z0-9\-._~+/=])",
            r"(?i:bearer)[ \t]+[A-Za-z0-9\-._~+/]{8}",
            check=_bearer_ok,
            max_span=TOKEN_MAX_CHARS + 16,
        )
    if entity_type == SECRET:
        return GenericSecretDetector()
    raise KeyError(entity_type)


# --------------------------------------------------------------------------- generic

_PW = r"passw(?:or)?d|passwd|pwd|passphrase"
_KEYWORDS = (
    _PW + r"|secret|client[_\-]?secret|api[_\-]?key|apikey|access[_\-]?key|secret[_\-]?key"
    r"|private[_\-]?key|(?:access|refresh|id|auth|api|session|bearer|secret|private)[_\-]?token"
    r"|token"
)
_TEXT_RE = re.compile(
    r"(?<![A-Za-z0-9])(?P<key>[A-Za-z0-9_.\-]{0,40}?(?:" + _KEYWORDS + r"))"
    r"[\"']?[ \t]*[:=][ \t]*(?P<q>[\"']?)(?P<value>[^\s\"'&,;<>]{1,512})",
    re.IGNORECASE,
)
_HINT_RE = re.compile(r"(?:.{0,40}[_\-.])?(?:" + _KEYWORDS + r")", re.IGNORECASE | re.DOTALL)
_PW_RE = re.compile(_PW, re.IGNORECASE)


class GenericSecretDetector:
    """Values of password-, secret-, key- and token-named settings.

    In text: ``password=…``, ``api_key: …``, ``"client_secret": "…"``,
    ``X_API_KEY='…'`` (key names ending in ``password``, ``passwd``, ``pwd``,
    ``passphrase``, ``secret``, ``api_key``, ``access_key``, ``secret_key``,
    ``private_key``, ``access_token``, ``refresh_token``, ``id_token``,
    ``auth_token``… or ``token``), the value up to whitespace, a quote or
    ``&,;<>``. Under such a JSON key or form/query field (``hint``), the
    whole string value. Either way the value must pass :func:`looks_secret`.
    ``normalised`` is the value.
    """

    entity_type = SECRET
    gate: str | None = (
        r"(?i:passw|pwd|passphrase|secret|api[_\-]?key|apikey|access[_\-]?key|"
        r"private[_\-]?key|token\b)"
    )
    max_span: int | None = 600
    uses_hint = True
    #: Keys whose whole value is checked (also used by the engine to decide
    #: that a JSON value must be scanned although no prefilter matched).
    hint_re = _HINT_RE

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield secret values in ``text``; ``hint`` is the field name."""
        if hint and _HINT_RE.fullmatch(hint):
            v = text.strip()
            if v and len(v) <= 4096 and looks_secret(v, password=bool(_PW_RE.search(hint))):
                s = text.find(v)
                yield Detection(s, s + len(v), SECRET, v)
                return
        for m in _TEXT_RE.finditer(text):
            value = m.group("value")
            if m.group("q") and value.endswith(m.group("q")):
                value = value[:-1]
            if looks_secret(value, password=bool(_PW_RE.search(m.group("key")))):
                s = m.start("value")
                yield Detection(s, s + len(value), SECRET, value)
