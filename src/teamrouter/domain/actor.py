"""Who is acting, and in which context. Every service verb takes one, keyword-only."""

from __future__ import annotations

from dataclasses import dataclass, field

from teamrouter.domain.roles import PERSONAL_SCOPES, ROLE_SCOPES, Role, Scope
from teamrouter.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: str
    is_staff: bool = False
    email_verified: bool = False
    organization_id: str | None = None  # None: personal context
    role: Role | None = None  # the role in organization_id
    session_id: str | None = None  # set when acting through a dashboard session
    key_id: str | None = None  # set when acting through a management key
    extra_scopes: frozenset[Scope] = field(default_factory=frozenset)

    @property
    def is_personal(self) -> bool:
        return self.organization_id is None

    @property
    def scopes(self) -> frozenset[Scope]:
        if self.organization_id is None:
            base = PERSONAL_SCOPES
        elif self.role is None:
            base = frozenset()
        else:
            base = ROLE_SCOPES[self.role]
        return base | self.extra_scopes

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes

    def require(self, scope: Scope, message: str | None = None) -> None:
        if scope not in self.scopes:
            raise Forbidden(message or f"Your role does not allow this ({scope.value})", code="missing_scope")
