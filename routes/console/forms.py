"""The console's forms (Flask-WTF): each carries the session's CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import IntegerField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from services.client_keys import check_rate_limit
from services.prices import parse_usd


def _rate_limit(form, field) -> None:
    try:
        check_rate_limit(field.data or None)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _usd(form, field) -> None:
    try:
        parse_usd(field.data)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _usd_field(label: str) -> StringField:
    """An amount of USD as `flask keys create --daily-usd` takes it (empty: no budget)."""
    return StringField(label, validators=[Optional(), Length(max=32), _usd], filters=[lambda v: v.strip() if v else v])


class SignInForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class LimitsForm(FlaskForm):
    rate_limit = StringField(
        "Rate limit", validators=[Optional(), Length(max=100), _rate_limit], filters=[lambda v: v.strip() if v else v]
    )
    daily_tokens = IntegerField("Daily tokens", validators=[Optional(), NumberRange(min=1)])
    daily_usd = _usd_field("Daily USD")
    monthly_usd = _usd_field("Monthly USD")

    def money_budgets(self) -> tuple[int | None, int | None]:
        """The daily and monthly USD budgets, in micro-dollars (None: no budget)."""
        return parse_usd(self.daily_usd.data), parse_usd(self.monthly_usd.data)


class CreateKeyForm(LimitsForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)], filters=[lambda v: v.strip() if v else v])


class ActionForm(FlaskForm):
    """A button's form: nothing but the CSRF token (revoke, sign out)."""
