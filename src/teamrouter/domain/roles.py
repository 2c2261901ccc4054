"""Roles are data: each maps to a set of scopes, and code checks scopes, never role names."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    ORG_READ = "org:read"  # see the org, its members and settings
    ORG_MANAGE = "org:manage"  # rename, change provider/privacy/visibility settings
    MEMBERS_MANAGE = "members:manage"  # invite, change roles, remove members
    BILLING_READ = "billing:read"  # billing settings, ledger, purchases
    BILLING_MANAGE = "billing:manage"  # buy credits, edit billing and invoicing settings
    KEYS_CREATE = "keys:create"
    KEYS_MANAGE_OWN = "keys:manage_own"  # see, edit, delete keys one created
    KEYS_MANAGE_ALL = "keys:manage_all"  # every key of the context
    KEYS_CREATE_MANAGEMENT = "keys:create_management"
    ACTIVITY_READ_OWN = "activity:read_own"
    ACTIVITY_READ_ALL = "activity:read_all"  # members get it too when the org allows (activity_visibility=all)


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"

    @property
    def openrouter_name(self) -> str:
        return f"org:{self.value}"


MEMBER_SCOPES = frozenset({Scope.ORG_READ, Scope.KEYS_CREATE, Scope.KEYS_MANAGE_OWN, Scope.ACTIVITY_READ_OWN})

ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.ADMIN: frozenset(Scope),
    Role.MEMBER: MEMBER_SCOPES,
}

# In personal context a person owns everything in it: keys, credits, activity.
PERSONAL_SCOPES: frozenset[Scope] = frozenset(
    {
        Scope.BILLING_READ,
        Scope.BILLING_MANAGE,
        Scope.KEYS_CREATE,
        Scope.KEYS_MANAGE_OWN,
        Scope.KEYS_MANAGE_ALL,
        Scope.KEYS_CREATE_MANAGEMENT,
        Scope.ACTIVITY_READ_OWN,
        Scope.ACTIVITY_READ_ALL,
    }
)
