"""The console's forms (Flask-WTF): each carries the session's CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import IntegerField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from services.client_keys import check_rate_limit


def _rate_limit(form, field) -> None:
    try:
        check_rate_limit(field.data or None)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class SignInForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class LimitsForm(FlaskForm):
    rate_limit = StringField(
        "Rate limit", validators=[Optional(), Length(max=100), _rate_limit], filters=[lambda v: v.strip() if v else v]
    )
    daily_tokens = IntegerField("Daily tokens", validators=[Optional(), NumberRange(min=1)])


class CreateKeyForm(LimitsForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)], filters=[lambda v: v.strip() if v else v])


class ActionForm(FlaskForm):
    """A button's form: nothing but the CSRF token (revoke, sign out)."""
