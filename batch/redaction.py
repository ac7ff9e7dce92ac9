"""Credentials out of everything topx prints or stores, found by parsing URLs, not by pattern.

A database URL's password may hold any character, unencoded: ``/ : # ?`` (SQLAlchemy and libpq
take them), a space, even ``@``; it may come as ``?password=…`` in the query; and a mistyped URL
(``postgresql//u:secret@h/db``) does not parse at all. So a value that is a URL is parsed
(:func:`sqlalchemy.engine.make_url`, else by its structure: what precedes the last ``@`` after
``//`` is the user info) and rebuilt with ``***`` for the password and for every query value
whose key names a secret. In free text (log lines, error messages) each token holding ``//`` or
``@`` is treated the same way, and the passwords of the URLs topx was given
(:func:`remember`) are masked wherever they occur, spaces and all.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

MASK = "***"
# Key names whose values are secrets (in a URL's query, a JSON document). Not any "secret": the
# ARN of the database secret is no secret.
SECRET_KEY = re.compile(r"(?i)password|passwd|token|access_key|secret_key|client_secret")
_SECRET_PAIR = re.compile(
    r"(?i)(?P<key>[\"']?[a-z_]*(?:password|passwd|secret|token|access_key)[a-z_]*[\"']?\s*[=:]\s*)"
    r"(?P<q>[\"']?)(?P<val>[^\s\"',;&]+)"
)
_PUNCTUATION = "\"'()<>[]{},;"
_MIN_REMEMBERED = 3  # shorter remembered passwords would mask ordinary words everywhere

_remembered: set[str] = set()


def url_secrets(value: str) -> list[str]:
    """The secret parts of a URL-like string: its password and secret-named query values."""
    found = []
    before, at, _ = value.rpartition("@")
    if at:
        userinfo = before.split("//", 1)[1] if "//" in before else before.partition(":")[2]
        _, colon, password = userinfo.partition(":")
        if colon and password:
            found.append(password)
    for key, secret in _query(value):
        if SECRET_KEY.search(key) and secret:
            found.append(secret)
    return found


def remember(url: str | None) -> None:
    """Mask this URL's secrets in every text redacted from now on (as given and decoded)."""
    from urllib.parse import unquote

    for secret in url_secrets(url or ""):
        for form in (secret, unquote(secret)):
            if len(form) >= _MIN_REMEMBERED:
                _remembered.add(form)


def redact_url(value: str) -> str:
    """``value`` (a URL, well-formed or not) with its password and secret query values masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError, TypeError):
        return _redact_structure(value)
    odd_host = bool(url.host and "@" in url.host)
    if not (url.password or odd_host or any(SECRET_KEY.search(k) for k in url.query)):
        return value
    if odd_host:  # an unencoded '@' in the password: the rest of it landed in the host
        url = url.set(host=url.host.rpartition("@")[2], password=MASK)
    query = {k: (MASK if SECRET_KEY.search(k) else v) for k, v in url.query.items()}
    url = url.set(query=query, password=MASK if url.password else None)
    return url.render_as_string(hide_password=True).replace("%2A%2A%2A", MASK)


def _redact_structure(value: str) -> str:
    """A string that is no URL SQLAlchemy parses: mask the user info (between ``//`` and the
    last ``@``, or all before the ``@`` without ``//``) and secret query values."""
    before, at, after = value.rpartition("@")
    if at:
        prefix, slashes, userinfo = before.partition("//")
        if not slashes:
            prefix, userinfo = "", before
        user, colon, _ = userinfo.partition(":")
        before = f"{prefix}{slashes}{user if colon and '/' not in user else ''}{':' if colon else ''}{MASK}"
    tail = after if at else value
    base, question, query = tail.partition("?")
    if question and query:
        masked = [(k, MASK if SECRET_KEY.search(k) else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        tail = f"{base}?{urlencode(masked, safe='*')}"
    return f"{before}@{tail}" if at else tail


def _query(value: str) -> list[tuple[str, str]]:
    _, question, query = value.rpartition("@")[2].partition("?")
    return parse_qsl(query, keep_blank_values=True) if question else []


def redact(text: str) -> str:
    """Free text with every credential hidden: remembered passwords, URL-like tokens' secrets,
    and ``key=value`` / ``"key": "value"`` pairs whose key names a secret."""
    for secret in sorted(_remembered, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _mask_userinfo(text)
    parts = re.split(r"(\s+)", text)
    text = "".join(_redact_token(p) if ("//" in p or "@" in p) and not p.isspace() else p for p in parts)
    return _SECRET_PAIR.sub(lambda m: f"{m['key']}{m['q']}{MASK}", text)


def _mask_userinfo(text: str) -> str:
    """After each ``://``, a ``user:password@`` on the same line, the password possibly holding
    spaces: masked up to the line's last ``@`` before the next URL."""
    out, pos = [], 0
    while (start := text.find("://", pos)) >= 0:
        start += 3
        end = min(x for x in (text.find("\n", start), text.find("://", start), len(text)) if x >= 0)
        at = text.rfind("@", start, end)
        colon = text.find(":", start, at) if at >= 0 else -1
        if colon >= 0:
            out.append(text[pos:colon + 1] + MASK)
            pos = at
        else:
            out.append(text[pos:start])
            pos = start
    return "".join(out) + text[pos:]


def _redact_token(token: str) -> str:
    core = token.strip(_PUNCTUATION)
    if not core or ("://" not in core and "//" not in core and ":" not in core.rpartition("@")[0]
                    and "?" not in core):
        return token  # an e-mail address or a path, not credentials
    start = token.index(core)
    return token[:start] + redact_url(core) + token[start + len(core):]


def redact_value(value: str) -> str:
    """A stored string: a whole URL is parsed as one (a space in its password included)."""
    if "//" in value or "@" in value:
        value = redact_url(value) if _looks_like_url(value) else value
    return redact(value)


def _looks_like_url(value: str) -> bool:
    head = value.split("//", 1)[0] if "//" in value else ""
    return bool(head) and head.rstrip(":").replace("+", "").replace(".", "").replace("-", "").isalnum()


def redact_tree(value: Any) -> Any:
    """A copy of a JSON-like tree with secret-named keys' values and URL credentials hidden."""
    if isinstance(value, dict):
        return {k: MASK if SECRET_KEY.search(str(k)) and value[k] is not None else redact_tree(value[k])
                for k in value}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    if isinstance(value, str):
        return redact_value(value)
    return value
