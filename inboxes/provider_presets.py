"""Server settings for the common mail providers, by the domain of an address.

The connect forms pre-fill IMAP and SMTP from here when someone types an
address; the user can still change every field before testing. This is the one
table of such settings: add a provider here, nowhere else. Domains not in the
table may be looked up with Thunderbird-style autoconfig (inboxes/autoconfig.py)
where the operator allows it (``MAIL_AUTOCONFIG_LOOKUP``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from inboxes.models import Security

# How a provider wants the user name: the whole address, or the part before the @.
WHOLE_ADDRESS = "address"
LOCAL_PART = "local"


@dataclass(frozen=True)
class ServerPreset:
    host: str
    port: int
    security: str
    username: str = WHOLE_ADDRESS  # WHOLE_ADDRESS or LOCAL_PART

    def username_for(self, address: str) -> str:
        if self.username == LOCAL_PART:
            return address.rpartition("@")[0]
        return address


@dataclass(frozen=True)
class ProviderPreset:
    label: str
    imap: ServerPreset
    smtp: ServerPreset
    domains: tuple[str, ...]
    note: str = ""

    def as_dict(self, address: str, *, source: str = "preset") -> dict:
        """What the pre-fill endpoint answers (and the no-JS fill uses)."""
        return {
            "found": True,
            "source": source,
            "label": self.label,
            "note": self.note,
            **{
                server: {**asdict(preset), "username": preset.username_for(address)}
                for server, preset in (("imap", self.imap), ("smtp", self.smtp))
            },
        }


SSL, STARTTLS = Security.SSL.value, Security.STARTTLS.value

PRESETS: tuple[ProviderPreset, ...] = (
    ProviderPreset(
        "Gmail",
        imap=ServerPreset("imap.gmail.com", 993, SSL),
        smtp=ServerPreset("smtp.gmail.com", 587, STARTTLS),
        domains=("gmail.com", "googlemail.com"),
        note="Gmail needs an app password here (Connect Gmail, where available, needs none).",
    ),
    ProviderPreset(
        "Outlook.com and Microsoft 365",
        imap=ServerPreset("outlook.office365.com", 993, SSL),
        smtp=ServerPreset("smtp.office365.com", 587, STARTTLS),
        domains=(
            "outlook.com",
            "hotmail.com",
            "live.com",
            "msn.com",
            "outlook.be",
            "outlook.de",
            "outlook.fr",
            "outlook.nl",
            "hotmail.co.uk",
            "hotmail.de",
            "hotmail.fr",
            "hotmail.nl",
            "live.co.uk",
            "live.nl",
        ),
    ),
    ProviderPreset(
        "iCloud Mail",
        imap=ServerPreset("imap.mail.me.com", 993, SSL, username=LOCAL_PART),
        smtp=ServerPreset("smtp.mail.me.com", 587, STARTTLS),
        domains=("icloud.com", "me.com", "mac.com"),
        note="iCloud needs an app-specific password.",
    ),
    ProviderPreset(
        "Yahoo Mail",
        imap=ServerPreset("imap.mail.yahoo.com", 993, SSL),
        smtp=ServerPreset("smtp.mail.yahoo.com", 465, SSL),
        domains=(
            "yahoo.com",
            "ymail.com",
            "rocketmail.com",
            "yahoo.co.uk",
            "yahoo.de",
            "yahoo.fr",
            "yahoo.nl",
        ),
        note="Yahoo needs an app password.",
    ),
    ProviderPreset(
        "Fastmail",
        imap=ServerPreset("imap.fastmail.com", 993, SSL),
        smtp=ServerPreset("smtp.fastmail.com", 465, SSL),
        domains=("fastmail.com", "fastmail.fm"),
        note="Fastmail needs an app password.",
    ),
    ProviderPreset(
        "Zoho Mail",
        imap=ServerPreset("imap.zoho.com", 993, SSL),
        smtp=ServerPreset("smtp.zoho.com", 465, SSL),
        domains=("zoho.com", "zohomail.com"),
    ),
    ProviderPreset(
        "GMX",
        imap=ServerPreset("imap.gmx.net", 993, SSL),
        smtp=ServerPreset("mail.gmx.net", 587, STARTTLS),
        domains=("gmx.net", "gmx.de", "gmx.at", "gmx.ch"),
    ),
    ProviderPreset(
        "GMX",
        imap=ServerPreset("imap.gmx.com", 993, SSL),
        smtp=ServerPreset("mail.gmx.com", 587, STARTTLS),
        domains=("gmx.com", "gmx.us", "gmx.co.uk"),
    ),
    ProviderPreset(
        "WEB.DE",
        imap=ServerPreset("imap.web.de", 993, SSL),
        smtp=ServerPreset("smtp.web.de", 587, STARTTLS),
        domains=("web.de",),
    ),
    ProviderPreset(
        "Proton Mail Bridge",
        imap=ServerPreset("127.0.0.1", 1143, STARTTLS),
        smtp=ServerPreset("127.0.0.1", 1025, STARTTLS),
        domains=("proton.me", "protonmail.com", "protonmail.ch", "pm.me"),
        note="Proton Mail works through Proton Mail Bridge running beside Postkamer, with the "
        "password the Bridge shows (the operator must allow private mail hosts and these ports).",
    ),
)

_BY_DOMAIN: dict[str, ProviderPreset] = {
    domain: preset for preset in PRESETS for domain in preset.domains
}


def address_domain(address: str) -> str:
    """The lower-cased domain of a typed address ('' when there is none)."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        return ""
    return domain.strip().rstrip(".").lower()


def preset_for(address: str) -> ProviderPreset | None:
    """The bundled settings for the address's domain, if it is a provider we know."""
    return _BY_DOMAIN.get(address_domain(address))
