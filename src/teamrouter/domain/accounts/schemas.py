"""Request and response shapes for accounts; unknown fields on writes are refused."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, TypeAdapter

from teamrouter.clock import iso_utc as _iso
from teamrouter.domain.accounts.models import User

# What sign-up accepts as an address; `create_user` (the CLI) checks with the same type.
Email = Annotated[EmailStr, Field(max_length=320)]
EMAIL = TypeAdapter(Email)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class SignUp(Strict):
    email: Email
    password: str = Field(min_length=1, max_length=1024)
    name: str = Field(default="", max_length=200)


class VerifyEmail(Strict):
    token: str = Field(min_length=1, max_length=200)


class LogIn(Strict):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class ResendVerification(Strict):
    email: Email


class SetContext(Strict):
    organization_id: str | None = Field(max_length=40)


def user_public(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "email_verified": user.email_verified_at is not None,
        "is_staff": user.is_staff,
        "created_at": _iso(user.created_at),
    }
