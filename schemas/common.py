"""What every request schema shares: the one base model, the bounds on what one request may
carry, and the small types more than one API's schemas use."""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from typing import Annotated, Any, Union
from urllib.parse import unquote, urlsplit

from flask import current_app, has_app_context
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag

USER_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
# The ids of the Responses and Conversations APIs (responses, conversations) and of their items.
Identifier = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
# chat completions' rule for function names, which the upstream enforces
FUNCTION_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
FunctionName = Annotated[str, StringConstraints(pattern=FUNCTION_NAME_PATTERN)]

# Bounds on what one request may carry (each breach is a 400 naming the field).
MAX_MESSAGES = 256
MAX_PARTS = 64
MAX_MESSAGE_CHARS = 100_000
MessageText = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]

# OpenAI's own limit: 16 metadata pairs, keys up to 64 characters, values up to 512.
MAX_METADATA_PAIRS = 16
MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_PAIRS)]


# -- image URLs: what an upstream that fetches images (vLLM, say) may be asked to fetch --------

IMAGE_URL_SCHEMES = ("http", "https", "data")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}):")
# Never in a URL as RFC 3986 writes one, and read differently by different parsers (WHATWG
# drops tabs and newlines, and takes "\\" for "/"): a host check could be fooled by them.
_UNSAFE_IN_URL = re.compile(r"[\x00-\x20\x7f\\]")


def _address_literal(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address `name` is written as, or None for a host name. IPv4 is read as
    inet_aton (and so getaddrinfo, and any fetcher) reads it: 127.1, 0x7f.1 and 2130706433
    are 127.0.0.1 too."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except (OSError, UnicodeError, ValueError):
        return None


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address; an IPv6 address that carries an IPv4
    one (mapped, compatible, 6to4, Teredo) is judged by that one."""
    if isinstance(address, ipaddress.IPv6Address):
        teredo = address.teredo
        embedded = address.ipv4_mapped or address.sixtofour or (teredo[1] if teredo else None)
        if embedded is None and int(address) >> 32 == 0 and int(address) > 1:
            embedded = ipaddress.IPv4Address(int(address))  # ::a.b.c.d, IPv4-compatible
        if embedded is not None and not _public(embedded):
            return False
    return address.is_global and not address.is_multicast


def names_local_host(host: str) -> bool:
    """True when `host` (a URL's host) is a loopback, private, link-local or otherwise
    non-public address literal in any notation a fetcher accepts, or localhost. Other host
    names are not resolved (see README, IMAGE_URLS_PUBLIC_ONLY)."""
    # As a URL parser (WHATWG's UTS 46 step) reads a host: percent-decoded, full-width
    # digits and dots made ASCII, one trailing dot dropped.
    name = unicodedata.normalize("NFKC", unquote(host)).replace("\u3002", ".").lower()
    name = name[:-1] if name.endswith(".") else name
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = _address_literal(name.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) names no other host
    return address is not None and not _public(address)


def image_urls_public_only() -> bool:
    """IMAGE_URLS_PUBLIC_ONLY of the app serving the request (False outside one)."""
    return has_app_context() and bool(current_app.config.get("IMAGE_URLS_PUBLIC_ONLY"))


def check_image_url(url: str) -> str:
    """`url` when an upstream may be asked to fetch it: an http, https or data URL (never
    file:, gopher: and the like, which an upstream that fetches images would read on its
    own host); with IMAGE_URLS_PUBLIC_ONLY, not naming a private or loopback address
    either. ValueError, naming what is wrong (never echoing the URL), otherwise."""
    scheme = _SCHEME.match(url)
    name = scheme.group(1).lower() if scheme else None
    if name not in IMAGE_URL_SCHEMES:
        said = f"; got a '{name}:' URL" if name else ""
        raise ValueError(f"Image URL must be an http, https or data URL{said}")
    if name == "data":
        return url
    if _UNSAFE_IN_URL.search(url):
        raise ValueError("Image URL must not contain spaces, control characters or backslashes")
    try:
        host = urlsplit(url).hostname if url[len(name) + 1 :].startswith("//") else None
    except ValueError:  # a malformed [IPv6] host
        host = None
    if not host:
        raise ValueError(f"Image URL must name a host ({name}://host/...)")
    if image_urls_public_only() and names_local_host(host):
        raise ValueError("Image URL must not name a private, loopback or link-local address (IMAGE_URLS_PUBLIC_ONLY)")
    return url


# What check_image_url takes (IMAGE_URLS_PUBLIC_ONLY aside), for the OpenAPI document: any
# data URL, or an http(s) URL with a host of ASCII name characters, no spaces, controls or
# backslashes. (The check also takes [IPv6] hosts; the document need not say everything.)
_URL_TEXT = r"[^\x00-\x20\x7f\\]"
_NAME = r"[A-Za-z0-9._~%!$&'()*+,;=-]"
IMAGE_URL_PATTERN = (
    rf"^(?:[Hh][Tt][Tt][Pp][Ss]?://(?:(?:{_NAME}|:)*@)?{_NAME}+(?::[0-9]*)?(?:[/?#]{_URL_TEXT}*)?"
    r"|[Dd][Aa][Tt][Aa]:[\s\S]*)$"
)
# An image URL as a request names one (see check_image_url).
ImageUrlText = Annotated[
    str,
    StringConstraints(min_length=1),
    AfterValidator(check_image_url),
    Field(json_schema_extra={"pattern": IMAGE_URL_PATTERN}),
]


def whole_number(value: Any) -> Any:
    """`value`, with a float that is a whole number (800.0) as that int: JSON has one number
    type, so 800.0 is the integer 800 to JSON Schema, and so to us."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def string_or_list(value: Any) -> str | None:
    """The tag of a string-or-list union: "string", "list", or None for anything else."""
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else None


def text_or_parts(parts: Any, what: str) -> Any:
    """A string, or 1 to MAX_PARTS parts: the shape of message content and of tool output.
    Anything else is refused as "`what` must be a string or a list of content parts"."""
    return Annotated[
        Annotated[MessageText, Tag("string")]
        | Annotated[list[parts], Field(min_length=1, max_length=MAX_PARTS), Tag("list")],
        Discriminator(
            string_or_list,
            custom_error_type="content_type",
            custom_error_message=f"{what} must be a string or a list of content parts",
        ),
    ]


def kind_of(value: Any) -> Any:
    """The "type" of `value`, a JSON object or a model (None when it has none)."""
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


def tagged_union(models: dict[str, type[BaseModel]], error_type: str, message: str) -> Any:
    """A union picked by the "type" field; tags end in "_kind" so they never pass for a field name."""

    def kind(value: Any) -> str | None:
        tag = kind_of(value)
        return f"{tag}_kind" if isinstance(tag, str) and tag in models else None

    members = tuple(Annotated[model, Tag(f"{name}_kind")] for name, model in models.items())
    return Annotated[
        Union[members],  # noqa: UP007 - a runtime-built union needs the subscript form
        Discriminator(kind, custom_error_type=error_type, custom_error_message=message),
    ]


class RequestModel(BaseModel):
    """What a client sends, or a part of it.

    Strict: "0.7" is not a number and 1 is not a string. Unknown fields are ignored so that
    clients sending OpenAI's extra fields keep working.
    """

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class Parameters(RequestModel):
    """A request's path, query or header parameters. They arrive as text, so they are read
    leniently ("20" is the limit 20) where a JSON body is strict."""

    model_config = ConfigDict(strict=False)
