"""RFC 5280 name constraints (section 4.2.1.10) of a CA certificate, checked against the names below it.

A CA certificate that carries ``nameConstraints`` may vouch only for names
inside its permitted subtrees and outside its excluded subtrees. Each name
form is constrained on its own: a CA whose constraints name only DNS
subtrees says nothing about URIs. Excluded beats permitted.

Checked forms:

* URI: only the host counts (for a SPIFFE ID, the trust domain). A
  constraint ``example.org`` is that host exactly. ``.example.org`` means
  any host below it, but not ``example.org`` itself. A URI with no host, or
  with an IP address as its host, cannot be checked and is refused.
* DNS: ``example.org`` is the domain and everything below it;
  ``.example.org`` is only what is below it. Case does not matter. A
  wildcard name (``*.example.org``) is excluded if any name it covers is
  excluded.
* IP: the address must lie in the network.

Everything else fails closed. If a CA constrains a form we do not check
(directoryName, rfc822Name, otherName, registeredID) and a certificate below
it has a name of that form, the path is refused. The subject counts as a
directoryName, and its emailAddress attributes count as rfc822Names. The path
is also refused when a constraint is empty or malformed, such as a URI
constraint written as ``spiffe://example.org/ns/prod``, since RFC 5280 URI
constraints name hosts, not paths. A subtree with a ``minimum`` or
``maximum`` is refused as well. ``cryptography`` drops those fields when it
parses, so we find them by re-encoding the extension and comparing it with
the certificate's own bytes.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["Constraints", "constraints_of"]

# Name x constraint comparisons per CA certificate; a hostile chain cannot make us loop.
MAX_COMPARISONS = 4096
_NAME_CONSTRAINTS_DER = bytes.fromhex("551d1e")  # OID 2.5.29.30

_LABEL = re.compile(r"[a-z0-9_-]+")
_FORMS: dict[type, str] = {
    x509.UniformResourceIdentifier: "URI",
    x509.DNSName: "DNS",
    x509.IPAddress: "IP",
    x509.RFC822Name: "rfc822Name",
    x509.DirectoryName: "directoryName",
    x509.OtherName: "otherName",
    x509.RegisteredID: "registeredID",
}
_CHECKED = ("URI", "DNS", "IP")

Named = tuple[str, x509.Certificate]  # ("the leaf", cert): how messages name a certificate


@dataclass(frozen=True)
class Constraints:
    """The name constraints of one CA certificate, grouped by form (``"URI"``, ``"DNS"``, ...)."""

    permitted: dict[str, tuple[object, ...]]
    excluded: dict[str, tuple[object, ...]]
    malformed: str | None = None

    def problem(self, below: Sequence[Named]) -> str | None:
        """Why a name of a certificate in ``below`` breaks these constraints, or None if none does.

        The answer is a phrase to follow the CA's name, such as ``"does not
        permit URI ... of the leaf: ..."``.
        """
        if self.malformed:
            return self.malformed
        work = [
            (label, form, names)
            for label, cert in below
            for form, names in _names(cert)
            if form in self.permitted or form in self.excluded
        ]
        comparisons = sum(
            len(names) * (len(self.permitted.get(form, ())) + len(self.excluded.get(form, ())))
            for _, form, names in work
        )
        if comparisons > MAX_COMPARISONS:
            return (
                f"has more name constraints than trustmesh checks for these names "
                f"({comparisons} comparisons; the limit is {MAX_COMPARISONS})"
            )
        for label, form, names in work:
            if form not in _CHECKED:
                listed = _listed(self.permitted.get(form, ()) + self.excluded.get(form, ()))
                return (
                    f"has {form} name constraints ({listed}), which trustmesh does not check, "
                    f"and {label} has a name of that form ({_show(names[0])!r}); refusing"
                )
            for name in names:
                found = self._name_problem(form, name, label)
                if found:
                    return found
        return None

    def _name_problem(self, form: str, name: object, label: str) -> str | None:
        shown = f"DNS name {name!r}" if form == "DNS" else f"{form} {_show(name)!r}"
        try:
            subject = _subject_of(form, name)
        except ValueError as err:
            return f"cannot check {shown} of {label} against its name constraints: {err}"
        if form == "URI":
            shown += f" (host {'.'.join(subject)!r})"  # type: ignore[arg-type]
        for excluded in self.excluded.get(form, ()):
            if _matches(form, subject, excluded, excluded=True):
                return f"excludes {shown} of {label} (excluded {form} subtree {_show(excluded)!r})"
        permitted = self.permitted.get(form)
        if permitted is None or any(_matches(form, subject, p, excluded=False) for p in permitted):
            return None
        return (
            f"does not permit {shown} of {label}: it is in none of the permitted "
            f"{form} subtrees ({_listed(permitted)})"
        )


@functools.lru_cache(maxsize=256)
def constraints_of(cert: x509.Certificate) -> Constraints | None:
    """The name constraints ``cert`` carries, or None. Cached: CA certificates recur on every handshake."""
    try:
        extension = cert.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        return None
    value = extension.value
    permitted = _by_form(value.permitted_subtrees)
    excluded = _by_form(value.excluded_subtrees)
    malformed = _encoding_problem(cert, value)
    for kind, groups in (("permitted", permitted), ("excluded", excluded)):
        for form, items in groups.items():
            for item in items:
                problem = _constraint_problem(form, item)
                if malformed is None and problem:
                    malformed = f"has a malformed {kind} {form} name constraint {_show(item)!r}: {problem}"
    return Constraints(permitted, excluded, malformed)


# -- names ---------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _names(cert: x509.Certificate) -> tuple[tuple[str, tuple[object, ...]], ...]:
    """Every name of ``cert`` that name constraints apply to, as (form, names) pairs.

    Cached: a peer presents the same leaf on every connection until it renews.
    """
    names: dict[str, list[object]] = {}
    if len(cert.subject):
        names["directoryName"] = [cert.subject]
    emails = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    if emails:
        names["rfc822Name"] = list(emails)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    for general in sans:
        names.setdefault(_FORMS[type(general)], []).append(general.value)
    return tuple((form, tuple(values)) for form, values in names.items())


@functools.lru_cache(maxsize=1024)
def _subject_of(form: str, name: object) -> object:
    """What a constraint of ``form`` is matched against: a host's labels, a DNS name's labels, an IP.

    Cached, since parsing a URI and ruling out an IP address costs more than the matching.
    """
    if form == "IP":
        return name
    if form == "DNS":
        return _labels(str(name), wildcard=True)
    try:
        host = urlsplit(str(name)).hostname
    except ValueError as err:
        raise ValueError(f"its authority cannot be parsed ({err})") from None
    if not host:
        raise ValueError("it has no host, which RFC 5280 requires for URI name constraints")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _labels(host, wildcard=False)
    raise ValueError("its host is an IP address, which RFC 5280 forbids under URI name constraints")


def _labels(domain: str, *, wildcard: bool) -> tuple[str, ...]:
    labels = tuple(domain.lower().split("."))
    for index, label in enumerate(labels):
        if wildcard and index == 0 and label == "*" and len(labels) > 1:
            continue
        if not _LABEL.fullmatch(label):
            raise ValueError(f"{domain!r} is not a domain name")
    return labels


# -- constraints ---------------------------------------------------------------


def _by_form(subtrees: Sequence[x509.GeneralName] | None) -> dict[str, tuple[object, ...]]:
    grouped: dict[str, list[object]] = {}
    for general in subtrees or ():
        grouped.setdefault(_FORMS[type(general)], []).append(general.value)
    return {form: tuple(values) for form, values in grouped.items()}


def _constraint_problem(form: str, value: object) -> str | None:
    if form not in ("URI", "DNS"):
        return None
    text = str(value)
    if not text:
        return "an empty constraint has no meaning in RFC 5280"
    if form == "URI" and any(c in text for c in ":/@[]"):
        return "a URI name constraint names a host or a domain, never a scheme, path or port (RFC 5280 4.2.1.10)"
    try:
        _labels(text.removeprefix("."), wildcard=False)
    except ValueError as err:
        return str(err)
    return None


def _matches(form: str, subject: object, constraint: object, *, excluded: bool) -> bool:
    """Whether ``subject`` (from :func:`_subject_of`) lies in the subtree ``constraint``."""
    if isinstance(subject, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return isinstance(constraint, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and (
            subject.version == constraint.version and subject in constraint
        )
    assert isinstance(subject, tuple)
    text = str(constraint).lower()
    below_only = text.startswith(".")
    wanted = tuple(text.removeprefix(".").split("."))
    if form == "URI" and not below_only:
        return subject == wanted  # without a leading dot, a URI constraint is one host
    if len(subject) < len(wanted) or (below_only and len(subject) == len(wanted)):
        return False
    tail = subject[len(subject) - len(wanted) :]
    # Asking whether a wildcard name is excluded, "*" stands for any label.
    return all(mine == theirs or (excluded and mine == "*") for mine, theirs in zip(tail, wanted))


def _listed(values: Sequence[object]) -> str:
    return ", ".join(repr(_show(v)) for v in values)


def _show(value: object) -> str:
    if isinstance(value, x509.Name):
        return value.rfc4514_string()
    if isinstance(value, x509.ObjectIdentifier):
        return value.dotted_string
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


# -- encoding ------------------------------------------------------------------


def _encoding_problem(cert: x509.Certificate, value: x509.NameConstraints) -> str | None:
    """Whether the extension holds anything ``cryptography`` dropped (minimum, maximum, non-DER)."""
    try:
        raw = _raw_extension(cert.tbs_certificate_bytes, _NAME_CONSTRAINTS_DER)
    except ValueError as err:
        return f"has a name constraints extension that cannot be read: {err}"
    if raw != value.public_bytes():
        return (
            "has name constraints with a minimum or maximum (RFC 5280 requires minimum 0 and no "
            "maximum), or not in DER; trustmesh does not check those"
        )
    return None


def _raw_extension(tbs: bytes, oid_der: bytes) -> bytes | None:
    """The extnValue bytes of the extension whose OID encodes as ``oid_der``, in a DER TBSCertificate."""
    tag, position, end = _tlv(tbs, 0)
    if tag != 0x30:
        raise ValueError("the TBSCertificate is not a SEQUENCE")
    while position < end:
        tag, start, field_end = _tlv(tbs, position)
        position = field_end
        if tag != 0xA3:  # [3] EXPLICIT Extensions
            continue
        _, position, extensions_end = _tlv(tbs, start)
        while position < extensions_end:
            _, item, position = _tlv(tbs, position)
            tag, oid_start, oid_end = _tlv(tbs, item)
            if tag != 0x06:
                raise ValueError("an extension does not start with an OID")
            tag, value_start, value_end = _tlv(tbs, oid_end)
            if tag == 0x01:  # critical
                tag, value_start, value_end = _tlv(tbs, value_end)
            if tag != 0x04:
                raise ValueError("an extension value is not an OCTET STRING")
            if tbs[oid_start:oid_end] == oid_der:
                return tbs[value_start:value_end]
    return None


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``offset``."""
    if offset + 2 > len(data):
        raise ValueError(f"truncated DER at byte {offset}")
    tag, first = data[offset], data[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise ValueError(f"bad DER length at byte {offset}")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    if start + length > len(data):
        raise ValueError(f"truncated DER at byte {offset}")
    return tag, start, start + length
