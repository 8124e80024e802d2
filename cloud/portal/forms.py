"""Form handling shared by the portal's pages: validate a form with the API's own schema,
carry out an action, and send the browser back with a message (post/redirect/get).

A form is checked by the same pydantic model the API uses for the same action, so the
portal accepts exactly what the API accepts. A refusal (a rule, a role, a bad value) goes
back to the page as a message; only "not found" becomes an error page, so the portal
never tells a visitor more than the API would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from cloud.errors import CloudError, InvalidInput, NotFound
from cloud.portal.session import flash

log = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)


def go(target: str, message: str | None = None, level: str = "info") -> RedirectResponse:
    """303 to `target`, showing `message` there once."""
    response = RedirectResponse(target, status_code=303)
    if message:
        flash(response, message, level)
    return response


def act(back: str, action: Callable[[], str | tuple[str, str]]) -> RedirectResponse:
    """Run `action`; go to `back` with its message (or to the (url, message) it returns).

    A `CloudError` other than `NotFound` goes back with its detail as an error message.
    """
    try:
        outcome = action()
    except NotFound:
        raise
    except CloudError as refused:
        log.info("portal action refused (%s): %s", type(refused).__name__, refused.detail)
        return go(back, refused.detail, "error")
    if isinstance(outcome, tuple):
        return go(outcome[0], outcome[1])
    return go(back, outcome)


def parse(model: type[Model], data: Mapping[str, Any]) -> Model:
    """`data` checked by `model`; `InvalidInput` naming the first bad field otherwise."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or "form"
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise InvalidInput(f"{field.replace('_', ' ')}: {message}", field=field) from None


def text(form: FormData, name: str, default: str = "") -> str:
    """A text field of `form`, stripped; `default` if absent."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else default


def optional(form: FormData, name: str) -> str | None:
    """A text field, or None when it is absent or blank (for optional numbers)."""
    value = text(form, name)
    return value or None
