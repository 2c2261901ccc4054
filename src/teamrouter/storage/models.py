"""Every table, imported in one place so metadata (and Alembic) sees the whole schema."""

from teamrouter.domain.accounts.models import EmailToken, LoginFailure, User, WebSession
from teamrouter.domain.activity.models import Generation, UsageRollup
from teamrouter.domain.audit.models import AuditEvent
from teamrouter.domain.credits.models import CreditAccount, Hold, LedgerEntry, Payment
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.mail.models import OutgoingMail
from teamrouter.domain.orgs.models import Invitation, Membership, Organization
from teamrouter.storage.base import Base

metadata = Base.metadata

__all__ = [
    "ApiKey",
    "AuditEvent",
    "CreditAccount",
    "EmailToken",
    "Generation",
    "Hold",
    "Invitation",
    "LedgerEntry",
    "LoginFailure",
    "Membership",
    "Organization",
    "OutgoingMail",
    "Payment",
    "UsageRollup",
    "User",
    "WebSession",
    "metadata",
]
